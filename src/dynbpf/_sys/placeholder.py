"""Reserved fd numbers: a map's fd number exists before (and after) the map does.

Prepared instructions embed map fd numbers. Reserving each number up front
with a placeholder (an empty memfd) and ``dup3``-ing the real map onto it
when created — and a fresh placeholder back when destroyed — keeps every
prepared instruction valid for the whole life of a collection, whatever maps
come and go (libbpf does the same; see the reference notes on placeholders).
"""

from __future__ import annotations

import errno
import os
import threading
import warnings

from dynbpf._sys.closing import Closing
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import good_fd
from dynbpf.errors import StateError, SyscallError

MFD_NOEXEC_SEAL = 0x8  # 6.3+; older kernels refuse the flag with EINVAL


def _placeholder(name: str) -> int:
    try:
        return good_fd(os.memfd_create(name, os.MFD_CLOEXEC | MFD_NOEXEC_SEAL))
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel without MFD_NOEXEC_SEAL
            raise SyscallError("memfd_create", e.errno or 0, detail=name) from None
    try:
        return good_fd(os.memfd_create(name, os.MFD_CLOEXEC))
    except OSError as e:
        raise SyscallError("memfd_create", e.errno or 0, detail=name) from None


class FdSlot(Closing):
    """One reserved fd number; holds either a placeholder or an installed object.

    The slot owns the number: only :meth:`install`, :meth:`vacate` and
    :meth:`close` touch it, under one lock, so no other thread's ``close`` or
    ``open`` can race the ``dup3`` onto it.
    """

    def __init__(self, name: str = "dynbpf-placeholder") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._number: int | None = _placeholder(name)
        self._installed = False
        self._generation = 0  # changes whenever what the number names changes

    def view(self) -> SlotView:
        """The number of the object installed now, valid only while that object is: what map views hold."""
        with self._lock:
            number = self.number
            if not self._installed:
                raise StateError(f"fd slot {self.name!r} holds no object")
            return SlotView(self, self._generation, number)

    def _current(self, generation: int) -> int | None:
        number = self._number
        return number if self._installed and self._generation == generation else None

    @property
    def number(self) -> int:
        """The reserved fd number (what prepared instructions hold)."""
        if self._number is None:
            raise StateError(f"fd slot {self.name!r} is closed")
        return self._number

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self, fd: Fd) -> None:
        """Put the object behind ``fd`` at this slot's number; ``fd`` itself is closed (refused, too: it is ours)."""
        with self._lock:
            if self._number is None or self._installed:
                fd.close()
            number = self.number
            if self._installed:
                raise StateError(f"fd slot {self.name!r} already holds an object; vacate it first")
            os.dup2(fd.raw, number, inheritable=False)  # dup3(..., O_CLOEXEC): atomic replacement
            fd.close()
            self._installed = True
            self._generation += 1

    def replace(self, fd: Fd) -> Fd:
        """Put the object behind ``fd`` at this slot's number in place of the one there; returns that one.

        The swap is one ``dup3``: the number never names nothing. The old
        object comes back as an ``Fd`` the caller owns (to keep or close).
        """
        with self._lock:
            number = self.number
            if not self._installed:
                fd.close()
                raise StateError(f"fd slot {self.name!r} holds no object to replace; install one")
            try:
                old = Fd(os.dup(number), self.name)
            except OSError as e:
                fd.close()
                raise SyscallError("dup", e.errno or errno.EMFILE, "cannot keep the object being replaced") from None
            try:
                os.dup2(fd.raw, number, inheritable=False)
            except BaseException:
                old.close()
                raise
            finally:
                fd.close()
            self._generation += 1  # views of the old object go stale
            return old

    def vacate(self) -> None:
        """Drop the installed object (the kernel frees it if nothing else holds it); keep the number."""
        with self._lock:
            number = self.number
            if not self._installed:
                return
            spare = _placeholder(self.name)
            self._installed = False  # views fail from here on, before the number names the placeholder
            self._generation += 1
            try:
                os.dup2(spare, number, inheritable=False)
            finally:
                os.close(spare)

    def close(self) -> None:
        """Release the number (and whatever it holds)."""
        with self._lock:
            if self._number is not None:
                self._installed = False
                self._generation += 1
                number, self._number = self._number, None
                os.close(number)

    def __del__(self) -> None:
        if getattr(self, "_number", None) is not None:
            warnings.warn(f"fd slot {self.name!r} ({self._number}) was not closed", ResourceWarning, stacklevel=2)
            self.close()


class SlotView:
    """A borrowed fd number that is valid only while the object it was taken for sits in its slot.

    A map view must never hold a bare number: once its map is freed (the
    collection closed, an on-demand map destroyed) the number can name a
    placeholder or, after close, another collection's map of another size,
    and the kernel would copy that map's values into a buffer sized for
    this one. So ``raw`` checks, on every use, that the slot still holds
    the object this view was made for, and raises ``StateError`` if not.
    """

    __slots__ = ("_generation", "_number", "_slot")

    def __init__(self, slot: FdSlot, generation: int, number: int) -> None:
        self._slot = slot
        self._generation = generation
        self._number = number

    @property
    def raw(self) -> int:
        number = self._slot._current(self._generation)
        if number is None:
            raise StateError(
                f"fd {self._number} ({self._slot.name!r}) no longer names the map this view was made for: its "
                "collection was closed or the map was freed (on demand); take a new view from the collection"
            )
        return number

    @property
    def closed(self) -> bool:
        return self._slot._current(self._generation) is None

    def __repr__(self) -> str:
        return f"<SlotView {self._slot.name!r} {'stale' if self.closed else self._number}>"
