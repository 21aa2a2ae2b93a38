"""File descriptors of kernel module BTF, opened by module name when a program needs one.

An instruction that names a type or kfunc in a module's BTF must carry an
fd of that BTF object (in ``imm`` of a ``BTF_ID`` ldimm64, or through
``fd_array`` for a kfunc call); so must a program attaching to a module
function. The kernel knows BTF objects by id, not by name: the name comes
from ``BPF_OBJ_GET_INFO_BY_FD``. :class:`ModuleBtf` does that search once
per name and keeps the fd open for as long as prepared programs may be
loaded, because the numbers are baked into their instructions.
"""

from __future__ import annotations

import ctypes
import errno
import threading

from dynbpf._btf.errors import NameNotFound
from dynbpf._sys import commands
from dynbpf._sys.attrs import BtfInfo
from dynbpf._sys.closing import Closing
from dynbpf._sys.commands import ObjKind
from dynbpf._sys.fd import Fd
from dynbpf.errors import StateError, SyscallError

_NAME_LEN = 64  # MODULE_NAME_LEN; "vmlinux" for the kernel's own BTF


class ModuleBtf(Closing):
    """Kernel BTF fds by module name (``"vmlinux"`` for the kernel's own), opened on demand and owned.

    Thread-safe. :meth:`close` closes every fd opened; after it,
    :meth:`fd` raises :class:`~dynbpf.errors.StateError`.
    """

    def __init__(self) -> None:
        self._fds: dict[str, Fd] = {}
        self._lock = threading.Lock()
        self._closed = False

    def fd(self, name: str) -> int:
        """The fd of module ``name``'s BTF.

        Raises :class:`~dynbpf._btf.errors.NameNotFound` if no loaded module has BTF by that name.
        """
        with self._lock:
            if self._closed:
                raise StateError("module BTF fds were closed; prepare the object again")
            held = self._fds.get(name)
            if held is None:
                held = self._fds[name] = _open(name)
            return held.raw

    @property
    def names(self) -> tuple[str, ...]:
        """Modules whose BTF fd is held, in the order they were first asked for."""
        with self._lock:
            return tuple(self._fds)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            fd.close()


def _open(name: str) -> Fd:
    """Walk the kernel's BTF objects by id until one is kernel BTF called ``name``."""
    start = 0
    while (btf_id := commands.next_id(ObjKind.BTF, start)) is not None:
        start = btf_id
        try:
            fd = commands.fd_by_id(ObjKind.BTF, btf_id)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                continue  # freed between GET_NEXT_ID and GET_FD_BY_ID
            raise
        try:
            found, kernel_btf = _name(fd)
        except BaseException:
            fd.close()
            raise
        if kernel_btf and found == name:
            return fd
        fd.close()
    raise NameNotFound(f"no kernel BTF object is named {name!r} (is the module loaded, and built with BTF?)")


def _name(fd: Fd) -> tuple[str, bool]:
    buf = ctypes.create_string_buffer(_NAME_LEN)
    info = commands.obj_info(fd.raw, BtfInfo(name=ctypes.addressof(buf), name_len=_NAME_LEN))
    return buf.value.decode(errors="replace"), bool(info.kernel_btf)


__all__ = ["ModuleBtf"]
