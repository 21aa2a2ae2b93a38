"""Ring buffer and perf buffer readers against records BPF programs really write.

Programs of tests/bpf/events.bpf.c write records from BPF_PROG_TEST_RUN
(raw_tp programs run synchronously in the calling thread, or on a chosen
CPU) and from a getppid tracepoint filtered on this process. Every record
carries a global sequence number, so order and loss are exact.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dynbpf
from dynbpf._maps import CodecError
from dynbpf._maps.codec import record_decoder
from dynbpf._maps.errors import MapTypeError
from dynbpf._maps.events import EventLoop
from dynbpf._maps.perfbuf import PerfBuffer
from dynbpf._maps.ringbuf import RingBuffer
from dynbpf._runtime.collection import Collection
from dynbpf._sys import commands
from dynbpf.errors import StateError
from tests.bpfbuild import build
from tests.helpers import on_tracepoint

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

BPF_F_TEST_RUN_ON_CPU = 1 << 0
EVENT_SIZE = 40
RECORD_SPAN = 48  # header + event, 8-aligned
EVENTS_RING = 4096
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ#\0"
PROGRAMS = ("emit_reserved", "emit_output", "emit_sized", "emit_held", "emit_perf", "on_getppid")


@pytest.fixture
def coll() -> Iterator[Collection]:
    with dynbpf.open(build("events"), constants={"target_tgid": os.getpid()}) as c:
        assert not c.load(list(PROGRAMS))
        yield c


def run(c: Collection, program: str, count: int, value: int = 0, flag: int = 0, *, cpu: int | None = None) -> None:
    """One test run of a raw_tp producer: ``count`` records, values from ``value``."""
    ctx = struct.pack("<3Q", count, value, flag)
    on_cpu = {} if cpu is None else {"flags": BPF_F_TEST_RUN_ON_CPU, "cpu": cpu}
    commands.prog_test_run(c.programs[program].fd, ctx_in=ctx, repeat=0, **on_cpu)


def decoder(c: Collection) -> Callable[[bytes], Any]:
    assert c.spec.btf is not None
    return record_decoder(c.spec.btf, "struct event")


def thread_comm() -> bytes:
    with open("/proc/thread-self/comm", "rb") as f:
        return f.read().rstrip(b"\n")


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``target`` in a thread; the list receives its result or exception."""
    out: list[object] = []

    def body() -> None:
        try:
            out.append(target())
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


# --- ring buffers ------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_fd_leak")
def test_reserved_records_arrive_in_order_with_decoded_fields(coll: Collection) -> None:
    got: list[Any] = []
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll), callback=got.append) as rb:
        assert (rb.name, rb.size) == ("events", EVENTS_RING)
        assert rb.poll(0) == 0
        run(coll, "emit_reserved", 5, 100)
        assert rb.pending == 5 * RECORD_SPAN
        assert rb.poll(1) == 5
        assert rb.pending == 0
    assert [(e.seq, e.value) for e in got] == [(i, 100 + i) for i in range(5)]
    for e in got:
        assert e.pid == os.getpid()
        assert e.kind.name == "EV_RESERVED"
        assert e.comm.rstrip(b"\0") == thread_comm()
    assert type(got[0]).__name__ == "event"


@pytest.mark.usefixtures("no_fd_leak")
def test_discarded_records_are_skipped_but_consumed(coll: Collection) -> None:
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll)) as rb:
        run(coll, "emit_reserved", 9, 0, 1)
        assert rb.pending == 9 * RECORD_SPAN  # discarded records still take their space until read past
        assert [e.seq for e in rb.read(1)] == [0, 2, 4, 6, 8]
        assert rb.pending == 0
        run(coll, "emit_reserved", 2, 0, 1)  # seq 9 discarded, 10 kept
        assert [e.seq for e in rb.read(1)] == [10]
    assert coll.bss.dropped == 0


@pytest.mark.usefixtures("no_fd_leak")
def test_a_record_still_being_written_holds_back_the_committed_ones_after_it(coll: Collection) -> None:
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll)) as rb:
        coll.bss.release_held = 0
        # the first record stays busy until we release it (or ~5 s at most), however fast the machine
        producer, result = in_thread(lambda: run(coll, "emit_held", 8000))
        deadline = time.monotonic() + 5
        while rb.pending < 2 * RECORD_SPAN and time.monotonic() < deadline:
            pass
        assert rb.read(0) == []  # the first is busy: the second, committed, must wait behind it
        assert rb.pending == 2 * RECORD_SPAN
        coll.bss.release_held = 1
        start = time.monotonic()
        records = rb.read(5)  # both, in order, once the first is committed
        assert time.monotonic() - start < 5
        producer.join(5)
        assert result == [None]
    assert [(e.seq, e.value) for e in records] == [(0, 1), (1, 2)]


@pytest.mark.usefixtures("no_fd_leak")
def test_records_of_every_length_are_read_exactly(coll: Collection) -> None:
    with RingBuffer(coll.map_fd_number("events")) as rb:
        run(coll, "emit_sized", 64, 0)
        records = rb.read(1)
    assert records == [PATTERN[:n] for n in range(64)]  # 0..63 bytes, most not multiples of 8
    assert coll.bss.dropped == 0


@pytest.mark.usefixtures("no_fd_leak")
def test_records_across_the_ring_end_when_consumed_between_batches(coll: Collection) -> None:
    capacity = EVENTS_RING // RECORD_SPAN
    seen: list[Any] = []
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll), callback=seen.append) as rb:
        for batch in range(60):
            run(coll, "emit_reserved", capacity, batch * 1000)
            assert rb.poll(1) == capacity
    total = 60 * capacity
    assert coll.bss.dropped == 0
    assert [e.seq for e in seen] == list(range(total))
    assert [e.value for e in seen] == [b * 1000 + i for b in range(60) for i in range(capacity)]
    # 4096 is not a multiple of 48: records straddle the end of the data area again and again
    straddling = [k for k in range(total) if (k * RECORD_SPAN) % EVENTS_RING + RECORD_SPAN > EVENTS_RING]
    assert len(straddling) > 10


@pytest.mark.usefixtures("no_fd_leak")
def test_records_consumed_by_a_polling_thread_while_producing(coll: Collection) -> None:
    capacity = EVENTS_RING // RECORD_SPAN
    seen: list[int] = []
    batches, size = 150, 30
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll), callback=lambda e: seen.append(e.seq)) as rb:

        def consume() -> int:
            """Poll until the ring is closed: a poll blocked then returns 0; one begun after close raises."""
            consumed = 0
            while True:
                try:
                    got = rb.poll(None)
                except StateError:
                    return consumed
                if got == 0:
                    return consumed
                consumed += got

        consumer, result = in_thread(consume)
        for batch in range(batches):
            # never more than the ring holds in flight: every record must get through, woken by the kernel
            deadline = time.monotonic() + 5
            while len(seen) < batch * size - (capacity - size) and time.monotonic() < deadline:
                time.sleep(0.0005)
            run(coll, "emit_reserved", size, 0)
        deadline = time.monotonic() + 5
        while len(seen) < batches * size and time.monotonic() < deadline:
            time.sleep(0.001)
        rb.close()
        consumer.join(5)
    assert result == [batches * size]
    assert coll.bss.dropped == 0
    assert seen == list(range(batches * size))  # 4500 records through a ring holding 85


@pytest.mark.usefixtures("no_fd_leak")
def test_a_flooded_ring_drops_whole_records_and_delivers_the_rest_once(coll: Collection) -> None:
    seen: list[int] = []
    produced = 20 * 200
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll), callback=lambda e: seen.append(e.seq)) as rb:

        def produce() -> None:
            for _ in range(200):
                run(coll, "emit_reserved", 20, 0)

        producer, errors = in_thread(produce)
        while producer.is_alive() or rb.pending:
            rb.poll(0.05)
        producer.join()
        assert errors == [None]
    assert len(seen) + coll.bss.dropped == produced
    assert len(seen) >= EVENTS_RING // RECORD_SPAN
    assert seen == sorted(set(seen))


@pytest.mark.usefixtures("no_fd_leak")
def test_iterating_yields_records_until_another_thread_closes(coll: Collection) -> None:
    rb = RingBuffer(coll.map_fd_number("events"), decode=decoder(coll))
    got: list[int] = []
    first_ten = threading.Event()

    def iterate() -> str:
        for e in rb:
            got.append(e.value)
            if len(got) == 10:
                first_ten.set()
        return "ended"

    reader, result = in_thread(iterate)
    run(coll, "emit_reserved", 4, 0)
    run(coll, "emit_reserved", 6, 4)
    assert first_ten.wait(5)
    rb.close()
    reader.join(5)
    assert not reader.is_alive()
    assert result == ["ended"]
    assert got == list(range(10))


@pytest.mark.usefixtures("no_fd_leak")
def test_timeouts(coll: Collection) -> None:
    with RingBuffer(coll.map_fd_number("events"), callback=lambda r: None) as rb:
        start = time.monotonic()
        assert rb.poll(0) == 0
        assert rb.consume() == 0
        assert rb.read(0) == []
        assert time.monotonic() - start < 0.1
        start = time.monotonic()
        assert rb.poll(0.2) == 0
        assert 0.2 <= time.monotonic() - start < 1.0
        start = time.monotonic()
        assert rb.read(0.1) == []
        assert 0.1 <= time.monotonic() - start < 1.0

        def late() -> None:
            time.sleep(0.2)
            run(coll, "emit_sized", 3, 8)

        producer, _ = in_thread(late)
        start = time.monotonic()
        got = rb.poll(10)  # woken by the kernel at the first record, long before the timeout
        assert got >= 1
        while got < 3 and time.monotonic() - start < 5:  # the others may be submitted after the wake-up
            got += rb.poll(1)
        assert got == 3
        assert time.monotonic() - start < 5
        producer.join()


@pytest.mark.usefixtures("no_fd_leak")
def test_close_while_a_thread_waits_without_timeout(coll: Collection) -> None:
    rb = RingBuffer(coll.map_fd_number("events"), callback=lambda r: None)
    poller, result = in_thread(lambda: rb.poll(None))
    time.sleep(0.2)
    assert poller.is_alive()
    start = time.monotonic()
    rb.close()
    poller.join(5)
    assert time.monotonic() - start < 2
    assert result == [0]
    assert rb.closed
    rb.close()  # again: nothing happens
    with pytest.raises(StateError, match="closed"):
        rb.poll(0)
    with pytest.raises(StateError, match="closed"):
        _ = rb.pending
    assert list(rb) == []  # iterating a closed reader ends at once


@pytest.mark.usefixtures("no_fd_leak")
@pytest.mark.parametrize("kind", ["ring", "perf", "loop"])
def test_closing_while_another_thread_drains_a_flood(coll: Collection, kind: str) -> None:
    got: list[object] = []

    def slow(*record: object) -> None:
        got.append(record)
        time.sleep(0.0002)

    rb = RingBuffer(coll.map_fd_number("events"), callback=slow)
    pb = PerfBuffer(coll.map_fd_number("samples"), cpus=[0], callback=slow)
    target: RingBuffer | PerfBuffer | EventLoop = {"ring": rb, "perf": pb}.get(kind) or EventLoop([rb, pb])
    stop = threading.Event()

    def poll_until_closed() -> int:
        polls = 0
        while True:
            try:
                target.poll(0.01)
            except StateError:
                return polls
            polls += 1

    def produce() -> None:
        while not stop.is_set():
            run(coll, "emit_reserved", 20, 0)
            run(coll, "emit_perf", 20, 0, cpu=0)

    producer, produced = in_thread(produce)
    poller, polled = in_thread(poll_until_closed)
    deadline = time.monotonic() + 5
    while len(got) < 100 and time.monotonic() < deadline:
        time.sleep(0.001)
    target.close()  # the poller is in the middle of a drain, or about to be
    poller.join(5)
    stop.set()
    producer.join(5)
    assert not poller.is_alive()
    assert produced == [None]
    assert len(polled) == 1
    assert isinstance(polled[0], int)
    assert target.closed
    rb.close()
    pb.close()
    assert len(got) >= 100


@pytest.mark.usefixtures("no_fd_leak")
def test_close_from_a_callback_stops_after_that_record(coll: Collection) -> None:
    got: list[bytes] = []

    def take(record: bytes) -> None:
        got.append(record)
        if len(got) == 3:
            rb.close()

    rb = RingBuffer(coll.map_fd_number("events"), callback=take)
    run(coll, "emit_sized", 10, 1)
    assert rb.poll(1) == 3
    assert rb.closed
    assert got == [PATTERN[:1], PATTERN[:2], PATTERN[:3]]


@pytest.mark.usefixtures("no_fd_leak")
def test_callback_errors_propagate_and_the_rest_waits(coll: Collection) -> None:
    got: list[bytes] = []

    def take(record: bytes) -> None:
        if record == PATTERN[:2]:
            raise RuntimeError("refused")
        got.append(record)

    with RingBuffer(coll.map_fd_number("events"), callback=take) as rb:
        run(coll, "emit_sized", 4, 1)
        with pytest.raises(RuntimeError, match="refused"):
            rb.poll(1)
        assert got == [PATTERN[:1]]
        assert rb.poll(1) == 2  # the failing record was consumed, the others were not
        assert got == [PATTERN[:1], PATTERN[:3], PATTERN[:4]]


@pytest.mark.usefixtures("no_fd_leak")
def test_polling_needs_a_callback_and_refuses_reentry(coll: Collection) -> None:
    with RingBuffer(coll.map_fd_number("events")) as rb, pytest.raises(StateError, match="no callback"):
        rb.poll(0)

    def again(record: bytes) -> None:
        rb2.consume()

    with RingBuffer(coll.map_fd_number("events"), callback=again) as rb2:
        run(coll, "emit_sized", 1, 5)
        with pytest.raises(StateError, match="own callback"):
            rb2.poll(1)


@pytest.mark.usefixtures("no_fd_leak")
def test_wrong_map_types_are_refused(coll: Collection) -> None:
    with pytest.raises(MapTypeError, match=r"'samples' is a perf_event_array, not a ringbuf"):
        RingBuffer(coll.map_fd_number("samples"))
    with pytest.raises(MapTypeError, match=r"'events' is a ringbuf, not a perf_event_array"):
        PerfBuffer(coll.map_fd_number("events"))
    with pytest.raises(ValueError, match="power of two"):
        PerfBuffer(coll.map_fd_number("samples"), pages=3)
    with pytest.raises(ValueError, match="no slot"):
        PerfBuffer(coll.map_fd_number("samples"), cpus=[4096])


@pytest.mark.usefixtures("no_fd_leak")
def test_the_reader_owns_a_duplicate_of_the_map_fd(coll: Collection) -> None:
    with RingBuffer(coll.map_fd_number("events"), decode=decoder(coll)) as rb:
        coll.close()  # programs unload, the collection's map fd closes; the reader's mapping stays valid
        assert rb.read(0) == []
        assert rb.pending == 0


# --- perf buffers ------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_fd_leak")
def test_perf_samples_carry_their_cpu(coll: Collection) -> None:
    got: list[tuple[int, Any]] = []
    samples = coll.map_fd_number("samples")
    with PerfBuffer(samples, decode=decoder(coll), callback=lambda cpu, e: got.append((cpu, e))) as pb:
        assert pb.cpus == tuple(range(os.cpu_count() or 1))
        for cpu in pb.cpus:
            run(coll, "emit_perf", 3, 10 * cpu, cpu=cpu)
        assert pb.poll(1) == 3 * len(pb.cpus)
        assert pb.lost == 0
    by_cpu = {cpu: [e.value for c, e in got if c == cpu] for cpu in {c for c, _ in got}}
    assert by_cpu == {cpu: [10 * cpu, 10 * cpu + 1, 10 * cpu + 2] for cpu in range(len(by_cpu))}
    assert {e.kind.name for _, e in got} == {"EV_PERF"}
    assert coll.bss.perf_failed == 0


@pytest.mark.usefixtures("no_fd_leak")
def test_perf_raw_samples_are_padded_to_8_bytes(coll: Collection) -> None:
    with PerfBuffer(coll.map_fd_number("samples"), cpus=[0]) as pb:
        run(coll, "emit_perf", 1, 77, cpu=0)
        (raw,) = pb.read(1)
    assert len(raw) == 44  # u32 size + 40 bytes end 8-aligned: 4 bytes of padding belong to the sample
    assert struct.unpack_from("<Q", raw, 32)[0] == 77
    assert coll.spec.btf is not None
    exact = record_decoder(coll.spec.btf, "struct event", exact=True)
    with pytest.raises(CodecError, match="takes 40 bytes, the record has 44"):
        exact(raw)


@pytest.mark.usefixtures("no_fd_leak")
def test_perf_records_across_the_ring_end(coll: Collection) -> None:
    seen: list[int] = []
    with PerfBuffer(coll.map_fd_number("samples"), pages=1, cpus=[0], decode=decoder(coll)) as pb:
        for batch in range(40):
            run(coll, "emit_perf", 25, batch * 25, cpu=0)  # 25 x 56 bytes fit one 4096-byte page
            seen += [e.value for e in pb.read(1)]
        assert pb.lost == 0
    assert seen == list(range(1000))
    assert coll.bss.perf_failed == 0


@pytest.mark.usefixtures("no_fd_leak")
def test_perf_lost_samples_are_counted_when_the_ring_overflows(coll: Collection) -> None:
    lost: list[tuple[int, int]] = []
    values: list[int] = []
    with PerfBuffer(
        coll.map_fd_number("samples"),
        pages=1,
        cpus=[1 if (os.cpu_count() or 1) > 1 else 0],
        decode=decoder(coll),
        callback=lambda cpu, e: values.append(e.value),
        lost_callback=lambda cpu, n: lost.append((cpu, n)),
    ) as pb:
        cpu = pb.cpus[0]
        run(coll, "emit_perf", 300, 0, cpu=cpu)
        first = pb.poll(1)
        failed = coll.bss.perf_failed
        assert 0 < first < 300
        assert first + failed == 300
        assert pb.lost == 0  # the kernel reports the loss with the next sample that fits
        run(coll, "emit_perf", 1, 1000, cpu=cpu)
        assert pb.poll(1) == 1
        assert lost == [(cpu, failed)]
        assert (pb.lost, pb.lost_by_cpu) == (failed, {cpu: failed})
    assert values == [*range(first), 1000]


@pytest.mark.usefixtures("no_fd_leak")
def test_closing_a_perf_buffer_clears_its_map_slots(coll: Collection) -> None:
    with PerfBuffer(coll.map_fd_number("samples"), cpus=[0]) as pb:
        run(coll, "emit_perf", 2, 0, cpu=0)
        assert len(pb.read(1)) == 2
    assert coll.bss.perf_failed == 0
    run(coll, "emit_perf", 2, 0, cpu=0)
    assert coll.bss.perf_failed == 2  # no event in the slot any more: the program's output fails


# --- several readers ------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_fd_leak")
def test_event_loop_two_ring_buffers_and_a_perf_buffer_from_a_tracepoint(coll: Collection) -> None:
    decode = decoder(coll)
    events: list[Any] = []
    audit: list[Any] = []
    samples: list[Any] = []
    rb_events = RingBuffer(coll.map_fd_number("events"), decode=decode, callback=events.append)
    rb_audit = RingBuffer(coll.map_fd_number("audit"), decode=decode, callback=audit.append)
    pb = PerfBuffer(coll.map_fd_number("samples"), decode=decode, callback=lambda cpu, e: samples.append(e))
    calls = 30
    with EventLoop([rb_events, rb_audit]) as loop:
        loop.add(pb)
        assert loop.readers == (rb_events, rb_audit, pb)
        assert loop.poll(0) == 0
        with on_tracepoint(coll.programs["on_getppid"].fd, "syscalls", "sys_enter_getppid"):
            for _ in range(calls):
                os.getppid()
        deadline = time.monotonic() + 5
        while len(events) + len(audit) + len(samples) < 3 * calls and time.monotonic() < deadline:
            loop.poll(1)
        assert loop.poll(0.05) == 0
    assert [r.closed for r in (rb_events, rb_audit, pb)] == [True] * 3  # the loop owned them
    assert [e.seq for e in events] == list(range(calls))
    assert audit == events  # the same record copied with bpf_ringbuf_output
    assert sorted(samples, key=lambda e: e.seq) == events
    assert {e.kind.name for e in events} == {"EV_SYSCALL"}
    assert {e.pid for e in events} == {os.getpid()}
    assert (coll.bss.dropped, coll.bss.perf_failed) == (0, 0)


@pytest.mark.usefixtures("no_fd_leak")
def test_event_loop_close_wakes_a_blocked_poll_and_closes_readers(coll: Collection) -> None:
    rb = RingBuffer(coll.map_fd_number("events"), callback=lambda r: None)
    loop = EventLoop([rb])
    poller, result = in_thread(lambda: loop.poll(None))
    time.sleep(0.2)
    assert poller.is_alive()
    loop.close()
    poller.join(5)
    assert result == [0]
    assert loop.closed
    assert rb.closed
    with pytest.raises(StateError, match="event loop is closed"):
        loop.poll(0)


@pytest.mark.usefixtures("no_fd_leak")
def test_event_loop_drops_a_reader_closed_on_its_own(coll: Collection) -> None:
    got: list[bytes] = []
    rb_a = RingBuffer(coll.map_fd_number("events"), callback=got.append)
    rb_b = RingBuffer(coll.map_fd_number("audit"), callback=got.append)
    with EventLoop([rb_a, rb_b]) as loop:
        rb_a.close()
        run(coll, "emit_output", 2, 0)
        assert loop.poll(1) == 2
        assert loop.readers == (rb_b,)
        loop.remove(rb_b)
        assert loop.readers == ()
        with RingBuffer(coll.map_fd_number("events")) as silent, pytest.raises(StateError, match="no callback"):
            loop.add(silent)
    assert not rb_b.closed  # removed before the loop closed: the caller's again
    rb_b.close()
    assert len(got) == 2


def test_readers_leave_no_fd_or_mapping_behind(coll: Collection) -> None:
    def mappings() -> int:
        with open("/proc/self/maps") as f:
            return sum(1 for line in f if "anon_inode" in line or "bpf" in line)

    before_fds = set(os.listdir("/proc/self/fd"))
    before_maps = mappings()
    for _ in range(20):
        with EventLoop([RingBuffer(coll.map_fd_number("events"), callback=lambda r: None)]) as loop:
            loop.add(PerfBuffer(coll.map_fd_number("samples"), pages=2, callback=lambda c, r: None))
            run(coll, "emit_sized", 3, 1)
            assert loop.poll(1) == 3
    assert set(os.listdir("/proc/self/fd")) - before_fds <= {str(n) for n in range(3)}
    assert mappings() == before_maps
