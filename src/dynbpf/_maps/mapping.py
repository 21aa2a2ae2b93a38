"""The memory mapping of a ``BPF_F_MMAPABLE`` array map, as libbpf skeletons use for global data.

Reading or writing a variable through the mapping is a memory access: no
syscall, and a program's concurrent write to another variable of the same
section is never undone (a lookup/update round trip could). The mapping
holds a reference on the map, so it must end when the map's owner lets the
map go: :meth:`ArrayMapping.close` unmaps it, and every access after that
raises :class:`~dynbpf.errors.StateError` instead of touching memory the
mapping no longer owns. Accesses and the close are serialised by one lock,
held only for the copy in or out.
"""

from __future__ import annotations

import errno
import mmap
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dynbpf._sys.closing import Closing
from dynbpf.errors import StateError, SyscallError


def mapped_size(value_size: int, max_entries: int) -> int:
    """Bytes to map: array values 8-byte aligned, on whole pages (libbpf's ``array_map_mmap_sz``)."""
    size = ((value_size + 7) // 8 * 8) * max_entries
    return max(mmap.PAGESIZE, (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)


class ArrayMapping(Closing):
    """A shared mapping of an mmap-able array map's values (``size`` bytes of value 0 onwards).

    ``writable=False`` maps read-only, as a frozen map (``.rodata``) allows;
    writes then raise ``StateError`` saying ``read_only`` (what to do
    instead). ``name`` appears in errors.
    """

    def __init__(
        self,
        fd: int,
        value_size: int,
        max_entries: int = 1,
        *,
        writable: bool = True,
        name: str = "",
        read_only: str = "",
    ) -> None:
        self.name = name
        self._read_only = read_only
        self.size = value_size
        self.writable = writable
        self._lock = threading.Lock()
        self._stale = ""
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            self._mm: mmap.mmap | None = mmap.mmap(fd, mapped_size(value_size, max_entries), mmap.MAP_SHARED, prot)
        except OSError as e:
            hint = "the map is not BPF_F_MMAPABLE, or frozen and mapped writable" if e.errno == errno.EPERM else ""
            raise SyscallError("mmap", e.errno or 0, hint, detail=f"map {name!r}") from None

    @property
    def closed(self) -> bool:
        return self._mm is None

    @contextmanager
    def view(self, *, write: bool = False) -> Iterator[memoryview]:
        """The mapped bytes, valid only inside the ``with`` block (the mapping cannot end meanwhile)."""
        with self._lock:
            mm = self._mm
            if mm is None:
                raise StateError(self._stale or f"the mapping of map {self.name!r} is closed")
            if write and not self.writable:
                why = f"; {self._read_only}" if self._read_only else ""
                raise StateError(f"map {self.name!r} is frozen (read-only since it was created){why}")
            with memoryview(mm) as whole, whole[: self.size] as part:
                yield part

    def close(self, why: str = "") -> None:
        """Unmap; later accesses raise ``StateError`` with ``why`` (what happened to the map)."""
        with self._lock:
            mm, self._mm = self._mm, None
            if mm is not None:
                self._stale = why or f"map {self.name!r} is no longer mapped"
                mm.close()

    def __repr__(self) -> str:
        return f"<ArrayMapping {self.name!r} {self.size} bytes{' (closed)' if self._mm is None else ''}>"
