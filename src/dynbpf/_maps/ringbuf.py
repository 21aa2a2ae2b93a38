"""Reading a BPF ring buffer (``BPF_MAP_TYPE_RINGBUF``) from user space.

The kernel lets the map fd be mapped in two parts (``kernel/bpf/ringbuf.c``):

- offset 0, one page, read-write: the consumer page; its first 8 bytes are
  ``consumer_pos``, the only thing user space writes;
- offset one page, read-only: the producer page (``producer_pos`` in its first
  8 bytes) followed by the data area, whose ``max_entries`` bytes are mapped
  *twice* back to back, so that a record wrapping the end of the ring reads
  as one contiguous run.

Positions only grow; ``pos & (size - 1)`` is the offset in the data area.
Each record starts 8-byte aligned with an 8-byte header: a ``u32`` length
whose top bit (``BPF_RINGBUF_BUSY_BIT``) says the producer has not committed
it yet and whose next bit (``BPF_RINGBUF_DISCARD_BIT``) says it was
discarded, then a ``u32`` the kernel uses to find its page. The record takes
``round_up(length + 8, 8)`` bytes. The reader stops at a busy record (later
ones may be complete, but records are handed out in order), skips discarded
ones, and moves ``consumer_pos`` past each record as soon as it copied it out,
giving the space back to producers right away.

Ordering: the producer publishes with release stores (``producer_pos`` on
reserve, the header on commit) and the consumer must read ``producer_pos``
then the header with acquire loads, and copy a record before its
``consumer_pos`` store becomes visible. On x86-64, which dynbpf targets,
loads are not reordered with later loads or stores, so plain 8-byte aligned
loads and stores done in program order (each a single ``mov`` through a
``memoryview`` cast to ``Q``/``I``) are the acquire loads and release store
the protocol needs.

Wake-ups: by default the kernel wakes the reader only when a committed record
is the first one the consumer has not read yet ("adaptive notification"), and
the epoll readiness of the map fd is "unread data exists". A record seen busy
may therefore be committed without a wake-up, so while one is pending the
reader never blocks more than :data:`~dynbpf._maps.reader.BUSY_RETRY`.
"""

from __future__ import annotations

import fcntl
import mmap
import select
from collections.abc import Callable
from typing import Any

from dynbpf._maps.errors import MapTypeError
from dynbpf._maps.reader import Decode, EventReader, Sink
from dynbpf._sys import commands
from dynbpf._sys.constants import MapType, type_name
from dynbpf._sys.fd import Fd, FdSource, raw_fd
from dynbpf.errors import KernelDataError, SyscallError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE


def record_span(header: int) -> int:
    """Bytes a record takes in the ring, from its header word: header plus data, 8-byte aligned."""
    length = header & ~(BUSY_BIT | DISCARD_BIT)
    return (length + HEADER_SIZE + 7) & ~7


class RingBuffer(EventReader):
    """Records of one ring buffer map, in the order they were reserved.

    ``callback(record)`` receives each record for :meth:`poll`/:meth:`consume`;
    ``decode`` turns its bytes into the record (see
    :func:`~dynbpf._maps.codec.record_decoder`). The map fd is duplicated: the
    caller keeps ownership of its own and may close it at any time.
    """

    def __init__(
        self,
        map_fd: FdSource | int,
        *,
        decode: Decode | None = None,
        callback: Callable[[Any], object] | None = None,
    ) -> None:
        raw = raw_fd(map_fd)
        info = commands.map_info(raw)
        self.name = info.name.decode(errors="replace")
        self.id = int(info.id)
        if info.type != MapType.RINGBUF:
            raise MapTypeError(f"map {self.name!r} is a {type_name(MapType, info.type)}, not a ringbuf")
        #: bytes in the data area (the map's max_entries, a power of two)
        self.size = int(info.max_entries)
        self._callback = callback
        self._mask = self.size - 1
        self._map: Fd | None = None
        self._consumer_map: mmap.mmap | None = None
        self._producer_map: mmap.mmap | None = None
        self._views: list[memoryview] = []
        super().__init__(f"ring buffer {self.name!r}", decode)
        try:
            self._map = Fd(fcntl.fcntl(raw, fcntl.F_DUPFD_CLOEXEC, 3), "ring buffer map")
            try:
                self._consumer_map = mmap.mmap(
                    self._map.raw, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
                )
                self._producer_map = mmap.mmap(
                    self._map.raw, PAGE_SIZE + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE_SIZE
                )
            except OSError as e:
                raise SyscallError("mmap", e.errno or 0, detail=f"ring buffer {self.name!r}") from None
            keep = self._keep
            self._consumer_pos = keep(keep(memoryview(self._consumer_map)).cast("Q"))
            producer = keep(memoryview(self._producer_map))
            self._producer_pos = keep(producer.cast("Q"))
            self._data = keep(producer[PAGE_SIZE:])
            self._headers = keep(self._data.cast("I"))
            self._waiter.epoll.register(self._map.raw, select.EPOLLIN)
        except BaseException:
            self._init_failed()
            raise

    def _keep(self, view: memoryview) -> memoryview:
        """Remember a view of the mappings: each must be released before its mapping can close."""
        self._views.append(view)
        return view

    @property
    def pending(self) -> int:
        """Bytes written (or reserved) by producers and not consumed yet, headers and discarded records included."""
        with self._life.use():
            return int(self._producer_pos[0] - self._consumer_pos[0])

    def _has_callback(self) -> bool:
        return self._callback is not None

    def _deliver(self, cpu: int, value: Any) -> None:
        assert self._callback is not None
        self._callback(value)

    def _drain(self, sink: Sink) -> tuple[int, bool]:
        consumer, producer = self._consumer_pos, self._producer_pos
        data, headers, mask, life = self._data, self._headers, self._mask, self._life
        position = consumer[0]
        end = producer[0]  # what was reserved when the drain began; later records wait for the next one
        count = 0
        while position < end and not life.closing:
            offset = position & mask
            header = headers[offset >> 2]
            if header & BUSY_BIT:
                return count, True
            length = header & ~(BUSY_BIT | DISCARD_BIT)
            if length > self.size - HEADER_SIZE:
                raise KernelDataError(
                    f"ring buffer {self.name!r}: record at position {position} claims {length} bytes "
                    f"but the ring holds {self.size}"
                )
            record = None
            if not header & DISCARD_BIT:
                start = offset + HEADER_SIZE
                record = bytes(data[start : start + length])
            position += record_span(header)
            consumer[0] = position
            if record is not None:
                count += 1
                sink(0, record)
        return count, False

    def _release(self) -> None:
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        for mapping in (self._producer_map, self._consumer_map):
            if mapping is not None:
                mapping.close()
        self._producer_map = self._consumer_map = None
        if self._map is not None:
            self._map.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"<RingBuffer {self.name!r} {state}>"
