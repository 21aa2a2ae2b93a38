"""Kernel capability probes, cached per process and thread-safe.

Every answer is a :class:`Support` carrying the evidence (which operation,
which errno), so "unsupported" is always explainable. Probes build their
programs and maps in Python; nothing here needs clang or libbpf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._probes import attach, kernel
    from dynbpf._probes.btf_kinds import btf_kind
    from dynbpf._probes.maps import map_type
    from dynbpf._probes.programs import helper, prog_type
    from dynbpf._probes.report import Report, collect
    from dynbpf._probes.result import Support, clear_cache

__all__ = [
    "Report",
    "Support",
    "attach",
    "btf_kind",
    "clear_cache",
    "collect",
    "helper",
    "kernel",
    "map_type",
    "prog_type",
]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._probes.btf_kinds": ("btf_kind",),
            "dynbpf._probes.maps": ("map_type",),
            "dynbpf._probes.programs": ("helper", "prog_type"),
            "dynbpf._probes.report": ("Report", "collect"),
            "dynbpf._probes.result": ("Support", "clear_cache"),
        },
        submodules=("attach", "kernel"),
    )
