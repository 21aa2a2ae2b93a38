"""How many values a per-CPU map holds per key.

The kernel copies one value per *possible* CPU (not online: CPUs can be
hot-plugged while a map exists), in CPU order, each rounded up to 8 bytes.
The possible set comes from ``/sys/devices/system/cpu/possible``, a list of
ranges like ``0-3,8-11``; it never changes while the system runs, so it is
read once per process.
"""

from __future__ import annotations

import errno
import functools

from dynbpf.errors import KernelDataError, SyscallError

POSSIBLE = "/sys/devices/system/cpu/possible"
#: the kernel's NR_CPUS ceiling is far below this; a larger number is a garbled file
_MAX_CPUS = 1 << 16


def parse_cpu_list(text: str) -> list[int]:
    """The CPU numbers of a kernel cpu list (``0-3,8,10-11``), sorted."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high if sep else low)
        except ValueError:
            raise KernelDataError(f"malformed CPU list {text.strip()!r}") from None
        if not 0 <= first <= last < _MAX_CPUS:
            raise KernelDataError(f"malformed CPU list {text.strip()!r}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


@functools.cache
def possible_cpus() -> int:
    """The number of possible CPUs: how many values a per-CPU map has per key."""
    try:
        with open(POSSIBLE) as f:
            text = f.read()
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, "needed to size per-CPU values", POSSIBLE) from None
    return len(parse_cpu_list(text))
