"""Records a running BPF program writes, decoded through types only the object's DWARF has.

tests/bpf/dwarf_records.bpf.c is a tool as tools are written: ``struct event`` and ``struct
blob`` are local variables or pointers into a map declared by size, so clang leaves them out
of BTF. raw_tp producers run with BPF_PROG_TEST_RUN; on_getppid runs on a real tracepoint.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import dynbpf
from dynbpf._maps.codec import find_record_type, record_decoder
from dynbpf._sys import commands
from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

PROGRAMS = ("emit_event", "emit_blob", "emit_rich", "on_getppid")
GREETING = b"hello from the kernel"


@pytest.fixture
def coll() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("dwarf_records"), constants={"target_tgid": os.getpid()}) as c:
        assert not c.load(list(PROGRAMS))
        yield c


def run(c: dynbpf.Collection, program: str, arg: int = 0) -> None:
    commands.prog_test_run(c.programs[program].fd, ctx_in=struct.pack("<Q", arg), repeat=0)


def comm() -> bytes:
    with open("/proc/thread-self/comm", "rb") as f:
        return f.read().rstrip(b"\n")


@pytest.mark.usefixtures("no_fd_leak")
def test_an_event_the_kernel_wrote_decodes_through_dwarf(coll: dynbpf.Collection) -> None:
    assert coll.spec.btf is not None
    assert find_record_type(coll.spec.btf, "struct event") is None  # only DWARF has it
    with coll.ring_buffer("events", record="struct event") as events:
        run(coll, "emit_event", 41)
        (event,) = events.read(timeout=1)
    assert type(event).__name__ == "event"
    assert (event.seq, event.pid, event.op, event.op.name) == (41, os.getpid(), 2, "ROP_CLOSE")
    assert event.comm == comm().ljust(16, b"\0")  # bytes unless strings=True
    assert (event.where.line, event.where.file) == (42, b"a.c\0\0\0")
    assert (event.first, event.count) == (1, 99)
    assert event.args == [[1, 2], [3, 4]]
    assert (event.sign, event.sign.name) == (-2, "S_NEG")  # DWARF knows the enum is signed
    assert (event.wide, event.wide.name) == (0x123456789A, "W_HUGE")  # ... and 64 bits wide
    with coll.ring_buffer("events", record="event", strings=True) as events:
        run(coll, "emit_event", 42)
        (event,) = events.read(timeout=1)
    assert (event.seq, event.comm, event.where.file) == (42, comm().decode(), "a.c")


@pytest.mark.usefixtures("no_fd_leak")
def test_the_kernel_s_rich_record_decodes_alike_from_btf_and_dwarf(coll: dynbpf.Collection) -> None:
    assert coll.spec.dwarf is not None
    dwarf = coll.spec.dwarf.spec()
    with coll.ring_buffer("riches") as riches:
        run(coll, "emit_rich")
        (raw,) = riches.read(timeout=1)
    from_btf = coll.record_decoder("struct rich")(raw)  # the BTF has it: that is what is used
    from_dwarf = record_decoder(dwarf, "struct rich")(raw)
    assert from_dwarf == from_btf
    for name, value in from_btf._items():
        assert from_dwarf[name] == value, name
    assert (from_dwarf.ts, from_dwarf.pid, from_dwarf.op.name) == (0x1122334455667788, 4321, "ROP_FAIL")
    assert (from_dwarf.comm, from_dwarf.where.line, from_dwarf.where.file) == (b"rich" + bytes(12), 7, b"b.c\0\0\0")
    assert (from_dwarf.value.half.lo, from_dwarf.value.half.hi, from_dwarf.value.text) == (
        0x61626364,
        0x65666768,
        b"dcbahgfe",
    )
    assert (from_dwarf.grid, from_dwarf.names) == ([[1, 2, 3], [4, 5, 6]], [b"ab\0\0", b"cde\0"])
    assert (from_dwarf.flag, from_dwarf.level, from_dwarf.delta, from_dwarf.small_op.name) == (1, 5, -9, "ROP_CLOSE")
    assert (from_dwarf.as_u32, from_dwarf.as_bytes, from_dwarf.x, from_dwarf.y) == (0x04030201, b"\1\2\3\4", -1, 2)
    assert (from_dwarf.ptr, from_dwarf.name, from_dwarf.callback) == (0xDEADBEEF, 0x1000, 0)
    assert (from_dwarf.ok, from_dwarf.negative, from_dwarf.mac) == (True, -1234567890123, b"\0\1\2\xfd\xfe\xff")
    texts = record_decoder(dwarf, "struct rich", strings=True)(raw)
    assert (texts.comm, texts.names, texts.value.text, texts.mac) == ("rich", ["ab", "cde"], "dcbahgfe", from_dwarf.mac)


@pytest.mark.usefixtures("no_fd_leak")
def test_variable_length_records_come_back_as_long_as_what_was_submitted(coll: dynbpf.Collection) -> None:
    with coll.ring_buffer("blobs", record="struct blob") as blobs:
        for length in (0, 5, 21, 100, 4095, 4096):
            run(coll, "emit_blob", length)
        got = blobs.read(timeout=1)
    assert [b.len for b in got] == [0, 5, 21, 100, 4095, 4096]
    assert {b.op.name for b in got} == {"ROP_OPEN"}
    assert [len(b.data) for b in got] == [0, 5, 21, 100, 4095, 4096]  # the full record too
    assert got[1].data == b"hello"
    assert got[3].data == GREETING + bytes(100 - len(GREETING))
    with coll.ring_buffer("blobs", record="struct blob", strings=True) as blobs:
        for length in (3, 100):
            run(coll, "emit_blob", length)
        assert [b.data for b in blobs.read(timeout=1)] == ["hel", GREETING.decode()]


@pytest.mark.usefixtures("no_fd_leak")
def test_a_tracepoint_tool_reads_its_dwarf_records(coll: dynbpf.Collection) -> None:
    with (
        coll.ring_buffer("events", record="struct event", strings=True) as events,
        coll.ring_buffer("blobs", record="struct blob", strings=True) as blobs,
    ):
        link = coll.programs["on_getppid"].attach()
        try:
            for _ in range(3):
                os.getppid()
        finally:
            link.detach()
        assert [(e.seq, e.pid, e.comm) for e in events.read(timeout=1)] == [
            (i, os.getpid(), comm().decode()) for i in range(3)
        ]
        assert [(b.len, b.data) for b in blobs.read(timeout=1)] == [(5, "hello")] * 3


def test_unknown_types_and_strings_without_a_record_are_refused(coll: dynbpf.Collection) -> None:
    with pytest.raises(dynbpf.CodecError, match="object 'dwarf_records' has no type 'struct nope', neither in its BTF"):
        coll.ring_buffer("events", record="struct nope")
    with pytest.raises(dynbpf.OptionError, match=r"strings=True: map 'events' has no record= type"):
        coll.ring_buffer("events", strings=True)


@pytest.mark.needs_llvm_objcopy
def test_an_object_stripped_of_its_dwarf_says_so(tmp_path: Path) -> None:
    stripped = tmp_path / "dwarf_records.bpf.o"
    subprocess.run(["llvm-objcopy", "--strip-debug", str(build("dwarf_records")), str(stripped)], check=True)
    with dynbpf.open(stripped) as c:
        with pytest.raises(dynbpf.CodecError, match=r"no type 'struct event' in its BTF, and no DWARF \(.debug_info\)"):
            c.ring_buffer("events", record="struct event")
        assert c.record_decoder("struct rich")(bytes(200)).ts == 0
