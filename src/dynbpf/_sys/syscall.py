"""The bpf(2) entry point.

ctypes calls through ``CDLL`` drop the GIL for the duration of the foreign
call, so a thread sitting in the verifier does not stop other threads: this is
what makes parallel program loading possible from Python.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
from typing import Any

from dynbpf._sys.constants import ENOTSUPP, Cmd
from dynbpf.errors import SyscallError

_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "s390x": 351, "ppc64le": 361}
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "armv7l": 364, "riscv64": 241, "s390x": 331, "ppc64le": 319}

_machine = platform.machine()
try:
    NR_BPF = _NR_BPF[_machine]
    NR_PERF_EVENT_OPEN = _NR_PERF_EVENT_OPEN[_machine]
except KeyError:  # pragma: no cover - only on architectures we have not mapped
    raise ImportError(f"dynbpf does not know the bpf(2) syscall number on {_machine!r}") from None

libc = ctypes.CDLL(None, use_errno=True)
_syscall = libc.syscall
_syscall.restype = ctypes.c_long


def raw_syscall(nr: int, *args: Any) -> tuple[int, int]:
    """Invoke syscall ``nr``; return ``(result, errno)`` without raising."""
    ctypes.set_errno(0)
    ret = _syscall(ctypes.c_long(nr), *args)
    return int(ret), (ctypes.get_errno() if ret < 0 else 0)


def bpf_raw(cmd: int, attr: ctypes.Structure | ctypes.Array[Any] | None, size: int | None = None) -> tuple[int, int]:
    """One bpf(2) call; returns ``(result, errno)`` so probes can inspect failures cheaply."""
    if attr is None:
        ptr, length = None, 0
    else:
        ptr, length = ctypes.byref(attr), ctypes.sizeof(attr) if size is None else size
    return raw_syscall(NR_BPF, ctypes.c_int(cmd), ptr, ctypes.c_uint(length))


def bpf(cmd: Cmd, attr: ctypes.Structure, *, detail: str = "", retry_eagain: int = 0) -> int:
    """bpf(2) that raises :class:`SyscallError` with a hint on failure."""
    while True:
        ret, err = bpf_raw(cmd, attr)
        if ret >= 0:
            return ret
        if err == errno.EAGAIN and retry_eagain > 0:
            retry_eagain -= 1
            continue
        raise error_for(cmd, err, detail)


def error_for(cmd: Cmd, err: int, detail: str = "") -> SyscallError:
    return SyscallError(f"BPF_{cmd.name}", err, hint(cmd, err), detail)


def good_fd(fd: int) -> int:
    """Move an fd off 0-2 so closed stdio can never alias a BPF object (as libbpf does)."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _eperm_hint(cmd: Cmd) -> str:
    if os.geteuid() != 0:
        unpriv = _read("/proc/sys/kernel/unprivileged_bpf_disabled")
        return (
            "this process is not root: it needs CAP_BPF (plus CAP_PERFMON for tracing, CAP_NET_ADMIN for "
            f"networking programs); kernel.unprivileged_bpf_disabled={unpriv}"
        )
    lockdown = _read("/sys/kernel/security/lockdown") or ""
    if "[integrity]" in lockdown or "[confidentiality]" in lockdown:
        return f"kernel lockdown is active ({lockdown}); it forbids some BPF operations even for root"
    if cmd is Cmd.PROG_LOAD:
        return (
            "running as root, so the kernel refused this program kind by policy or configuration "
            "(e.g. trampoline programs fentry/fexit/lsm disabled, BPF LSM not enabled, or a security module)"
        )
    if cmd in (Cmd.MAP_CREATE, Cmd.BTF_LOAD):
        return "running as root: RLIMIT_MEMLOCK may be too low on kernels that charge locked memory (before 5.11)"
    return "running as root: the kernel refused the operation by policy"


_HINTS: dict[int, str] = {
    errno.E2BIG: (
        "the request carries a non-zero field this kernel does not know: the kernel is older than the "
        "feature (or, for a program, it is too large)"
    ),
    errno.EINVAL: (
        "the kernel rejected the request; if the command or an attribute is newer than this kernel "
        "(see `dynbpf probe`), the kernel is older than the feature"
    ),
    errno.EBADF: "a file descriptor in the request is not open or not of the expected kind",
    errno.ENOENT: "no such object (id, path, or element)",
    errno.EEXIST: "the object or element already exists",
    errno.EBUSY: "the hook or object is busy (already attached or in use)",
    errno.ENOSPC: "no space left: the log buffer is too small or the map is full",
    errno.ENOMEM: "the kernel could not allocate memory (check RLIMIT_MEMLOCK on kernels before 5.11)",
    errno.EOPNOTSUPP: "the operation is not supported for this object on this kernel",
    errno.EACCES: "the verifier or the kernel denied access (see the verifier log)",
    errno.EFAULT: "the kernel could not read or write a buffer passed in the request",
    errno.ESRCH: "the target (process, symbol, or attach point) does not exist",
    errno.ENODEV: "the device or attach target does not exist",
    errno.ENXIO: "no such device or address",
    ENOTSUPP: "the kernel supports the command but not this variant of it (kernel-internal ENOTSUPP)",
}


#: Where an errno means something else for one command than in general (the general hints mislead there).
_COMMAND_HINTS: dict[tuple[Cmd, int], str] = {
    (Cmd.MAP_UPDATE_ELEM, errno.E2BIG): "the map is full (max_entries) or the index is past an array's end",
    (Cmd.MAP_UPDATE_ELEM, errno.EINVAL): "the key or value is not the map's size, or the flags do not suit it",
    (Cmd.OBJ_GET, errno.EACCES): "the pin's permissions do not allow this process to open it",
    (Cmd.OBJ_PIN, errno.EACCES): "this process may not create a pin there (directory permissions)",
    (Cmd.PROG_LOAD, errno.EBADF): "a map, BTF or program fd the program refers to is not open (closed or freed)",
    (Cmd.PROG_LOAD, errno.EMFILE): "this process has too many open files (raise RLIMIT_NOFILE)",
}


def hint(cmd: Cmd, err: int) -> str:
    """Plain-language meaning of ``err`` for ``cmd``."""
    if err == errno.EPERM:
        return _eperm_hint(cmd)
    return _COMMAND_HINTS.get((cmd, err)) or _HINTS.get(err, "")
