"""Kernel capability probes, cached per process and thread-safe.

Every answer is a :class:`Support` carrying the evidence (which operation,
which errno), so "unsupported" is always explainable. Probes build their
programs and maps in Python; nothing here needs clang or libbpf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf.features import attach, kernel
    from dynbpf.features.btf_kinds import btf_kind
    from dynbpf.features.maps import map_type
    from dynbpf.features.programs import helper, prog_type
    from dynbpf.features.report import Report, collect
    from dynbpf.features.result import Support, clear_cache

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
            "dynbpf.features.btf_kinds": ("btf_kind",),
            "dynbpf.features.maps": ("map_type",),
            "dynbpf.features.programs": ("helper", "prog_type"),
            "dynbpf.features.report": ("Report", "collect"),
            "dynbpf.features.result": ("Support", "clear_cache"),
        },
        submodules=("attach", "kernel"),
    )
