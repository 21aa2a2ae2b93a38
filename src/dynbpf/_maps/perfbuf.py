"""Reading the samples BPF programs write with ``bpf_perf_event_output``.

A ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` holds, per CPU, a perf event the program
writes into. :class:`PerfBuffer` opens one event per CPU (software event
``PERF_COUNT_SW_BPF_OUTPUT``, raw samples, a wake-up for every sample),
maps its ring, enables it and stores its fd in the map at index *cpu*.

Ring layout (``include/uapi/linux/perf_event.h``): the first page is
``struct perf_event_mmap_page``, whose ``data_head`` (offset 1024) the kernel
advances after writing and ``data_tail`` (1032) user space advances after
reading; because the mapping is writable the kernel never overwrites unread
data and instead counts what it could not write. The data area follows
(``data_offset``/``data_size`` at 1040/1048), a power-of-two number of
pages. Records start with ``struct perf_event_header`` (``u32 type``,
``u16 misc``, ``u16 size``) and may wrap the end of the ring; they are
copied out in one or two pieces. ``PERF_RECORD_SAMPLE`` with
``PERF_SAMPLE_RAW`` carries a ``u32`` size and that many bytes, padded by the
kernel so that size field plus data end 8-byte aligned (the padding is part
of the sample: a 40-byte struct arrives as 44 bytes). ``PERF_RECORD_LOST``
carries an id and the number of samples dropped while the ring was full; it
is written before the next sample that fits.

Ordering as in :mod:`dynbpf._maps.ringbuf`: on x86-64, reading ``data_head``
before the data and storing ``data_tail`` after it, in program order, gives
the read barrier and full barrier the uapi header asks for.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import select
import struct
from collections.abc import Callable, Iterable
from typing import Any

from dynbpf._maps.errors import MapTypeError
from dynbpf._maps.reader import Decode, EventReader, Sink
from dynbpf._sys import commands, perf
from dynbpf._sys.constants import MapType, type_name
from dynbpf._sys.cpus import parse_cpu_list
from dynbpf._sys.fd import Fd, FdSource, raw_fd
from dynbpf.errors import KernelDataError, SyscallError

PAGE_SIZE = mmap.PAGESIZE
ONLINE = "/sys/devices/system/cpu/online"
POSSIBLE = "/sys/devices/system/cpu/possible"

# u64 slots of struct perf_event_mmap_page
_HEAD = 1024 // 8
_TAIL = 1032 // 8
_DATA_OFFSET = 1040 // 8
_DATA_SIZE = 1048 // 8

_HEADER = struct.Struct("<IHH")
_U32 = struct.Struct("<I")
_LOST = struct.Struct("<QQ")


def usable_cpus(max_entries: int) -> list[int]:
    """CPUs a perf buffer opens an event on: possible, online (offline CPUs refuse events), below the map's size."""
    cpus: set[int] | None = None
    for path in (POSSIBLE, ONLINE):
        try:
            with open(path) as f:
                listed = set(parse_cpu_list(f.read()))
        except OSError as e:
            raise SyscallError("open", e.errno or errno.EIO, "needed to choose the perf buffer's CPUs", path) from None
        cpus = listed if cpus is None else cpus & listed
    return sorted(cpu for cpu in cpus or () if cpu < max_entries)


class _CpuRing:
    """One CPU's perf event, its mapping and the views onto it."""

    __slots__ = ("cpu", "data", "event", "installed", "mapping", "mask", "meta", "size")

    def __init__(self, cpu: int, pages: int) -> None:
        self.cpu = cpu
        self.installed = False
        self.mapping: mmap.mmap | None = None
        self.meta: memoryview | None = None
        self.data: memoryview | None = None
        self.event = perf.perf_event_open(perf.bpf_output_attr(), pid=-1, cpu=cpu, what=f"BPF output on CPU {cpu}")
        try:
            try:
                self.mapping = mmap.mmap(
                    self.event.raw, (pages + 1) * PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
                )
            except OSError as e:  # pages beyond the perf mlock limit, or memory: the kernel's refusal, said so
                raise SyscallError("mmap", e.errno or 0, detail=f"perf ring of {pages} pages on CPU {cpu}") from None
            whole = memoryview(self.mapping)
            self.meta = whole[:PAGE_SIZE].cast("Q")
            offset = self.meta[_DATA_OFFSET] or PAGE_SIZE  # kernels before 4.1 leave them zero
            self.size = self.meta[_DATA_SIZE] or pages * PAGE_SIZE
            self.data = whole[offset : offset + self.size]
            whole.release()
            self.mask = self.size - 1
        except BaseException:
            self.close()
            raise

    def copy(self, start: int, length: int) -> bytes:
        """``length`` bytes from ring offset ``start`` (masked), joined across the end of the ring."""
        assert self.data is not None
        end = start + length
        if end <= self.size:
            return bytes(self.data[start:end])
        return bytes(self.data[start:]) + bytes(self.data[: end - self.size])

    def close(self) -> None:
        for view in (self.data, self.meta):
            if view is not None:
                view.release()
        self.data = self.meta = None
        if self.mapping is not None:
            self.mapping.close()
            self.mapping = None
        self.event.close()


class PerfBuffer(EventReader):
    """Samples of one perf event array, per CPU in the order each CPU wrote them.

    ``callback(cpu, record)`` receives each sample for :meth:`poll`/:meth:`consume`,
    ``lost_callback(cpu, count)`` each report of dropped samples (also summed
    in :attr:`lost`, whichever way records are read). ``pages`` is the size
    of each CPU's ring, a power of two. ``cpus`` restricts which CPUs get an
    event (default: every online possible CPU the map has a slot for). The
    map fd is duplicated; closing the buffer clears the slots it filled.
    """

    def __init__(
        self,
        map_fd: FdSource | int,
        *,
        pages: int = 8,
        decode: Decode | None = None,
        callback: Callable[[int, Any], object] | None = None,
        lost_callback: Callable[[int, int], object] | None = None,
        cpus: Iterable[int] | None = None,
    ) -> None:
        if pages < 1 or pages & (pages - 1):
            raise ValueError(f"pages must be a power of two, got {pages}")
        raw = raw_fd(map_fd)
        info = commands.map_info(raw)
        self.name = info.name.decode(errors="replace")
        self.id = int(info.id)
        if info.type != MapType.PERF_EVENT_ARRAY:
            raise MapTypeError(f"map {self.name!r} is a {type_name(MapType, info.type)}, not a perf_event_array")
        self.pages = pages
        #: samples the kernel reported dropped because a ring was full, per CPU and in total
        self.lost_by_cpu: dict[int, int] = {}
        self.lost = 0
        self._callback = callback
        self._lost_callback = lost_callback
        self._rings: list[_CpuRing] = []
        self._map: Fd | None = None
        chosen = usable_cpus(int(info.max_entries)) if cpus is None else sorted(set(cpus))
        if not chosen:
            raise ValueError(f"perf buffer {self.name!r} would read no CPU (cpus={cpus!r}): give at least one")
        for cpu in chosen:
            if not 0 <= cpu < info.max_entries:
                raise ValueError(f"CPU {cpu} has no slot in perf event array {self.name!r} ({info.max_entries} slots)")
        super().__init__(f"perf buffer {self.name!r}", decode)
        try:
            self._map = Fd(fcntl.fcntl(raw, fcntl.F_DUPFD_CLOEXEC, 3), "perf event array")
            for cpu in chosen:
                ring = _CpuRing(cpu, pages)
                self._rings.append(ring)
                perf.ioctl(ring.event.raw, perf.PERF_EVENT_IOC_ENABLE)
                commands.map_update_elem(self._map.raw, _U32.pack(cpu), _U32.pack(ring.event.raw))
                ring.installed = True
                self._waiter.epoll.register(ring.event.raw, select.EPOLLIN)
        except BaseException:
            self._init_failed()
            raise
        #: the CPUs with an event in the map
        self.cpus = tuple(chosen)

    def _has_callback(self) -> bool:
        return self._callback is not None

    def _deliver(self, cpu: int, value: Any) -> None:
        assert self._callback is not None
        self._callback(cpu, value)

    def _drain(self, sink: Sink) -> tuple[int, bool]:
        count = 0
        life = self._life
        for ring in self._rings:
            meta = ring.meta
            assert meta is not None
            tail = meta[_TAIL]
            head = meta[_HEAD]
            while tail < head and not life.closing:
                kind, _misc, size = _HEADER.unpack(ring.copy(tail & ring.mask, _HEADER.size))
                if size < _HEADER.size or size > head - tail:
                    raise KernelDataError(
                        f"perf buffer {self.name!r}, CPU {ring.cpu}: record at {tail} claims {size} bytes "
                        f"({head - tail} written)"
                    )
                body = ring.copy((tail + _HEADER.size) & ring.mask, size - _HEADER.size)
                tail += size
                meta[_TAIL] = tail
                if kind == perf.PERF_RECORD_SAMPLE and len(body) >= _U32.size:
                    (raw_size,) = _U32.unpack_from(body)
                    count += 1
                    sink(ring.cpu, body[_U32.size : _U32.size + raw_size])
                elif kind == perf.PERF_RECORD_LOST and len(body) >= _LOST.size:
                    _id, lost = _LOST.unpack_from(body)
                    self._count_lost(ring.cpu, lost)
        return count, False

    def _count_lost(self, cpu: int, lost: int) -> None:
        self.lost += lost
        self.lost_by_cpu[cpu] = self.lost_by_cpu.get(cpu, 0) + lost
        if self._lost_callback is not None:
            self._lost_callback(cpu, lost)

    def _release(self) -> None:
        for ring in self._rings:
            if ring.installed and self._map is not None:
                with contextlib.suppress(SyscallError):  # the slot may have been replaced or cleared meanwhile
                    commands.map_delete_elem(self._map.raw, _U32.pack(ring.cpu))
            ring.close()
        self._rings.clear()
        if self._map is not None:
            self._map.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._rings)} CPUs x {self.pages} pages"
        return f"<PerfBuffer {self.name!r} {state}>"
