"""Kernel capability probes, cached per process and thread-safe.

Every answer is a :class:`Support` carrying the evidence (which operation,
which errno), so "unsupported" is always explainable. Probes build their
programs and maps in Python; nothing here needs clang or libbpf.
"""

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
