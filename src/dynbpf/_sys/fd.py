"""Explicit ownership of kernel object file descriptors.

A BPF object lives as long as something references it: an fd, a pin, a link,
or a program using a map. Leaking an fd therefore leaks kernel memory, and
closing one twice may close somebody else's fd that reused the number. ``Fd``
makes ownership explicit: exactly one owner closes it, exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import warnings
from typing import Protocol

from dynbpf._sys.closing import Closing
from dynbpf.errors import StateError


class FdSource(Protocol):
    """An fd number for as long as it is valid: ``raw`` raises ``StateError`` once it is not.

    :class:`Fd` (owned) and :class:`~dynbpf._sys.placeholder.SlotView`
    (borrowed from a collection's map slot) are both; a raw ``int`` is
    trusted as given.
    """

    @property
    def raw(self) -> int: ...

    @property
    def closed(self) -> bool: ...


def object_kind(fd: int) -> str:
    """``link``, ``prog``, ``map``... from the anon inode behind ``fd`` (OBJ_GET_INFO would answer for any of them)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "object of unknown kind"
    return target.removeprefix("anon_inode:").removeprefix("bpf-")


def raw_fd(fd: FdSource | int) -> int:
    """The number behind ``fd`` now (raising ``StateError`` if it is no longer valid)."""
    return fd if isinstance(fd, int) else fd.raw


class Fd(Closing):
    """An owned file descriptor.

    Close it with :meth:`close` or a ``with`` block. If the owner forgets, the
    finaliser closes it and emits a ``ResourceWarning`` naming what leaked,
    because relying on garbage collection makes kernel object lifetimes
    unpredictable.
    """

    __slots__ = ("__weakref__", "_lock", "_raw", "kind")

    def __init__(self, raw: int, kind: str = "fd") -> None:
        if raw < 0:
            raise ValueError(f"invalid file descriptor {raw}")
        self._raw = raw
        self._lock = threading.Lock()
        self.kind = kind

    @property
    def raw(self) -> int:
        raw = self._raw
        if raw < 0:
            raise StateError(f"{self.kind} is closed")
        return raw

    def fileno(self) -> int:
        return self.raw

    def __index__(self) -> int:
        return self.raw

    @property
    def closed(self) -> bool:
        return self._raw < 0

    def close(self) -> None:
        """Close the fd; later calls are no-ops."""
        with self._lock:
            raw, self._raw = self._raw, -1
        if raw >= 0:
            os.close(raw)

    def release(self) -> int:
        """Give up ownership and return the raw number; the caller must close it."""
        with self._lock:
            raw, self._raw = self._raw, -1
        if raw < 0:
            raise StateError(f"{self.kind} is closed")
        return raw

    def dup(self) -> Fd:
        """A new owned fd (close-on-exec, >= 3) for the same kernel object."""
        return Fd(fcntl.fcntl(self.raw, fcntl.F_DUPFD_CLOEXEC, 3), self.kind)

    def __repr__(self) -> str:
        return f"<Fd {self.kind} {'closed' if self._raw < 0 else self._raw}>"

    def __del__(self) -> None:
        raw = getattr(self, "_raw", -1)
        if raw >= 0:
            self._raw = -1
            with contextlib.suppress(OSError):
                os.close(raw)  # first: a warning turned into an error must not keep the fd open
            warnings.warn(f"unclosed {self.kind} fd {raw} was garbage-collected", ResourceWarning, stacklevel=2)
