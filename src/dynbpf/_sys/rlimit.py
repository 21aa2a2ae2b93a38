"""RLIMIT_MEMLOCK handling.

Kernels before 5.11 charge BPF maps and programs against RLIMIT_MEMLOCK and
fail with EPERM once it is exhausted; newer kernels charge the memory cgroup
instead. Whether the running kernel still charges memlock is a feature probe
(``dynbpf._probes``); this module only changes the limit.
"""

from __future__ import annotations

import resource

from dynbpf.errors import SyscallError


def memlock_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_MEMLOCK)


def raise_memlock_limit() -> tuple[int, int]:
    """Lift RLIMIT_MEMLOCK as far as allowed: to infinity (as libbpf does), else to the hard limit.

    Returns the new ``(soft, hard)`` limits.
    """
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        _, hard = memlock_limit()
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
        except (OSError, ValueError) as e:
            raise SyscallError(
                "setrlimit(RLIMIT_MEMLOCK)",
                getattr(e, "errno", 0) or 1,
                "raising the locked-memory limit needs CAP_SYS_RESOURCE; BPF objects may fail with EPERM "
                "on this kernel",
            ) from None
    return memlock_limit()
