"""The kernel interface: bpf(2) and the few other syscalls BPF needs.

Everything above this package talks to the kernel through it. It depends on
nothing but the standard library (and ``dynbpf.errors``), so it can be used
and tested on its own.
"""

from dynbpf.sys import attrs, commands, constants, fs, perf, rlimit
from dynbpf.sys.constants import AttachType, Cmd, LinkType, MapType, ProgType
from dynbpf.sys.fd import Fd
from dynbpf.sys.syscall import bpf, bpf_raw

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
