"""The kernel interface: bpf(2) and the few other syscalls BPF needs.

Everything above this package talks to the kernel through it. It depends on
nothing but the standard library (and ``dynbpf.errors``), so it can be used
and tested on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._sys import attrs, commands, constants, fs, perf, rlimit
    from dynbpf._sys.constants import AttachType, Cmd, LinkType, MapType, ProgType
    from dynbpf._sys.fd import Fd
    from dynbpf._sys.syscall import bpf, bpf_raw

__all__ = [
    "AttachType",
    "Cmd",
    "Fd",
    "LinkType",
    "MapType",
    "ProgType",
    "attrs",
    "bpf",
    "bpf_raw",
    "commands",
    "constants",
    "fs",
    "perf",
    "rlimit",
]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._sys.constants": ("AttachType", "Cmd", "LinkType", "MapType", "ProgType"),
            "dynbpf._sys.fd": ("Fd",),
            "dynbpf._sys.syscall": ("bpf", "bpf_raw"),
        },
        submodules=("attrs", "commands", "constants", "fs", "perf", "rlimit"),
    )
