"""dynbpf._maps.Map against real kernel maps: every dict operation, batches, per-CPU values, maps of maps."""

from __future__ import annotations

import ctypes
import errno
import mmap
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dynbpf._asm.insn import (
    R1,
    R2,
    R3,
    R4,
    R10,
    Insn,
    call,
    ld_map_fd,
    ld_map_value,
    mov64_imm,
    mov64_reg,
    return_imm,
    st_mem,
    stx_mem,
)
from dynbpf._asm.opcodes import AluOp, Class, Size, Source
from dynbpf._btf import Spec
from dynbpf._btf.types import Array, Enum, EnumValue, Int, IntEncoding, Member, Struct, Type, Typedef
from dynbpf._elf import ObjectSpec
from dynbpf._maps import CodecError, Map, MapTypeError, Variables, codec_for, possible_cpus
from dynbpf._maps import map as map_module
from dynbpf._sys import commands
from dynbpf._sys.attrs import MapCreateAttr
from dynbpf._sys.constants import MapFlags, MapType, ProgType, UpdateFlags
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, StateError, SyscallError
from tests.helpers import load_ok, section_vars

pytestmark = pytest.mark.kernel

BPF_FUNC_MAP_UPDATE_ELEM = 2
CPUS = possible_cpus()

# BTF shared by the tests: ids 1.. in this order
TYPES: list[Type] = [
    Int("unsigned int", 4, IntEncoding.NONE, 0, 32),  # 1
    Typedef("__u32", 1),  # 2
    Int("unsigned long long", 8, IntEncoding.NONE, 0, 64),  # 3
    Int("char", 1, IntEncoding.SIGNED, 0, 8),  # 4
    Array(4, 1, 8),  # 5: char[8]
    Enum("level", 4, False, (EnumValue("LOW", 0), EnumValue("HIGH", 17), EnumValue("MAX", 31))),  # 6
    Int("unsigned short", 2, IntEncoding.NONE, 0, 16),  # 7
    # 8: struct conn { u32 pid; u16 port; u8 flags:3; enum level level:5; char comm[8]; u64 bytes; }
    Struct(
        "conn",
        24,
        (
            Member("pid", 2, 0),
            Member("port", 7, 32),
            Member("flags", 1, 48, 3),
            Member("level", 6, 51, 5),
            Member("comm", 5, 64),
            Member("bytes", 3, 128),
        ),
    ),
]
BTF = Spec.from_types(TYPES)
U32, U64, CONN = 2, 3, 8


@contextmanager
def kernel_map(
    map_type: MapType,
    key: int,
    value: int,
    entries: int,
    *,
    key_type: int = 0,
    value_type: int = 0,
    inner: Fd | None = None,
    flags: int = 0,
) -> Iterator[Fd]:
    """A map created straight with BPF_MAP_CREATE, with our BTF if type ids are given."""
    btf = commands.btf_load(BTF.encode()) if key_type or value_type else None
    try:
        attr = MapCreateAttr(
            map_type=map_type,
            key_size=key,
            value_size=value,
            max_entries=entries,
            map_flags=flags,
            map_name=b"dynbpf_test",
            inner_map_fd=inner.raw if inner is not None else 0,
            btf_fd=btf.raw if btf is not None else 0,
            btf_key_type_id=key_type,
            btf_value_type_id=value_type,
        )
        with commands.map_create(attr) as fd:
            yield fd
    finally:
        if btf is not None:
            btf.close()


def conn(pid: int, **kw: object) -> dict[str, object]:
    return {"pid": pid, "port": 80, "flags": 5, "level": "HIGH", "comm": b"curl", "bytes": 1 << 40, **kw}


def test_hash_map_dict_operations(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 24, 64, key_type=U32, value_type=CONN) as fd:
        m = Map.with_btf(fd, BTF, U32, CONN)
        assert (m.type, m.name, m.key_size, m.value_size, m.max_entries) == (MapType.HASH, "dynbpf_test", 4, 24, 64)
        assert m.id == commands.map_info(fd.raw).id
        assert repr(m) == f"<Map hash 'dynbpf_test' id={m.id} fd={fd.raw}>"
        assert list(m) == []
        m[1] = conn(1)
        got = m[1]
        assert got.pid == 1
        assert got.level.name == "HIGH"
        assert got.comm == b"curl\0\0\0\0"
        assert got.flags == 5
        assert got.bytes == 1 << 40
        assert m.get(1) == got
        assert m.get(2) is None
        assert m.get(2, "absent") == "absent"
        with pytest.raises(KeyError) as exc:
            m[2]
        assert exc.value.args == (2,)
        assert 1 in m
        assert 2 not in m

        m.set(2, conn(2), flags=UpdateFlags.NOEXIST)
        with pytest.raises(SyscallError) as e:
            m.set(2, conn(2), flags=UpdateFlags.NOEXIST)
        assert e.value.errno == errno.EEXIST
        with pytest.raises(SyscallError) as e:
            m.set(3, conn(3), flags=UpdateFlags.EXIST)
        assert e.value.errno == errno.ENOENT
        m[2] = got._replace(pid=2, comm="wget")  # a decoded record goes back in as it is
        assert m[2].comm.rstrip(b"\0") == b"wget"

        m.update({10 + i: conn(10 + i) for i in range(5)})
        m.update([(20, conn(20))])
        assert sorted(m.keys()) == [1, 2, 10, 11, 12, 13, 14, 20]
        assert {k: v.pid for k, v in m.items()} == {k: k for k in [1, 2, 10, 11, 12, 13, 14, 20]}
        assert sorted(v.pid for v in m.values()) == [1, 2, 10, 11, 12, 13, 14, 20]

        del m[1]
        assert 1 not in m
        with pytest.raises(KeyError):
            del m[1]
        assert m.delete(2)
        assert not m.delete(2)
        m.clear()
        assert list(m.items()) == []


def test_encoding_errors_name_key_and_field_and_leave_the_map_alone(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 24, 4, key_type=U32, value_type=CONN) as fd:
        m = Map.with_btf(fd, BTF, U32, CONN)
        with pytest.raises(CodecError, match=r"^value\.flags: 8 does not fit a 3-bit field"):
            m[1] = conn(1, flags=8)
        with pytest.raises(CodecError, match=r"^value\.level: enum level has no enumerator 'MID'"):
            m[1] = conn(1, level="MID")
        with pytest.raises(CodecError, match=r"^key: -1 does not fit unsigned int"):
            m[-1] = conn(1)
        with pytest.raises(CodecError, match=r"^key: expected an integer"):
            _ = "1" in m
        assert list(m) == []


def test_a_strings_view_reads_char_arrays_up_to_their_nul(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 24, 8, key_type=U32, value_type=CONN) as fd:
        m = Map.with_btf(fd, BTF, U32, CONN)
        m[1] = conn(1)
        text = m.with_strings()
        assert (text.fd, text.name, text.value.name) == (m.fd, m.name, m.value.name)
        assert text[1].comm == "curl"
        assert m[1].comm == b"curl\0\0\0\0"  # the first view is unchanged
        text[2] = conn(2, comm="init")
        assert m[2].comm == b"init\0\0\0\0"
        assert text.with_strings()[2].comm == "init"
    with kernel_map(MapType.HASH, 4, 8, 8) as fd, pytest.raises(CodecError, match="without BTF types"):
        Map(fd).with_strings()


def test_codecs_must_match_the_map_sizes(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 8, 4) as fd:
        with pytest.raises(CodecError, match=r"^value: map 'dynbpf_test' has 8-byte values, but the codec is"):
            Map(fd, value=codec_for(BTF, CONN))
        with pytest.raises(CodecError, match=r"is 24 bytes, but 8 were expected"):
            Map.with_btf(fd, BTF, U32, CONN)


def test_without_btf_hash_keys_and_values_are_bytes(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 8, 4) as fd:
        m = Map(fd)
        m[b"abcd"] = b"12345678"
        assert m[b"abcd"] == b"12345678"
        assert list(m.items()) == [(b"abcd", b"12345678")]
        with pytest.raises(CodecError, match="expected 4 bytes, got 3"):
            m[b"abc"] = b"12345678"


def test_array_map_keys_are_indices(no_fd_leak: None) -> None:
    with kernel_map(MapType.ARRAY, 4, 8, 5) as fd:
        m = Map(fd, value=codec_for(BTF, U64))
        assert list(m) == [0, 1, 2, 3, 4]
        assert list(m.values()) == [0] * 5
        m[3] = 33
        assert dict(m.items()) == {0: 0, 1: 0, 2: 0, 3: 33, 4: 0}
        assert m.get(5) is None  # past the end: absent, as the kernel says
        with pytest.raises(KeyError):
            m[5]
        with pytest.raises(SyscallError) as e:
            m[5] = 1
        assert e.value.errno == errno.E2BIG
        with pytest.raises(SyscallError) as e:
            del m[3]
        assert e.value.errno == errno.EINVAL  # array elements always exist


def test_lru_hash_evicts_and_iterates(no_fd_leak: None) -> None:
    with kernel_map(MapType.LRU_HASH, 4, 8, 32, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64)
        for i in range(200):
            m[i] = i * 2
        items = dict(m.items())
        assert 0 < len(items) <= 200
        assert all(v == 2 * k for k, v in items.items())
        assert 199 in items  # the latest write survives eviction


@pytest.mark.parametrize(
    "map_type", [MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH], ids=lambda t: t.name
)
def test_per_cpu_values_are_lists_one_per_possible_cpu_8_byte_strided(map_type: MapType, no_fd_leak: None) -> None:
    with kernel_map(map_type, 4, 4, 8, key_type=U32, value_type=U32) as fd:
        m = Map.with_btf(fd, BTF, U32, U32)
        assert m.per_cpu
        assert m.cpus == CPUS
        m[1] = [100 + cpu for cpu in range(CPUS)]
        assert m[1] == [100 + cpu for cpu in range(CPUS)]
        raw = ctypes.create_string_buffer(8 * CPUS)
        assert commands.map_lookup_elem(fd.raw, struct.pack("<I", 1), raw)
        assert raw.raw == b"".join(struct.pack("<II", 100 + cpu, 0) for cpu in range(CPUS))
        with pytest.raises(CodecError, match=rf"one value per possible CPU \({CPUS}\), got {CPUS + 1}"):
            m[1] = [0] * (CPUS + 1)
        with pytest.raises(CodecError, match="takes a list"):
            m[1] = 5
        with pytest.raises(CodecError, match=r"^value\[0\]: -1 does not fit"):
            m[1] = [-1] * CPUS
        assert dict(m.items())[1] == [100 + cpu for cpu in range(CPUS)]


def test_possible_cpus_parsing() -> None:
    from dynbpf._sys.cpus import parse_cpu_list

    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("0") == [0]
    for bad in ("", "a-b", "3-1", "0-99999999"):
        with pytest.raises(DynbpfError, match="malformed CPU list"):
            parse_cpu_list(bad)
    with open("/sys/devices/system/cpu/possible") as f:
        assert len(parse_cpu_list(f.read())) == CPUS


@pytest.mark.parametrize("outer_type", [MapType.HASH_OF_MAPS, MapType.ARRAY_OF_MAPS], ids=lambda t: t.name)
def test_maps_of_maps_take_fds_and_give_ids(outer_type: MapType, no_fd_leak: None) -> None:
    with (
        kernel_map(MapType.ARRAY, 4, 8, 1) as template,
        kernel_map(outer_type, 4, 4, 4, inner=template) as outer_fd,
        kernel_map(MapType.ARRAY, 4, 8, 1) as a,
        kernel_map(MapType.ARRAY, 4, 8, 1) as b,
    ):
        outer = Map(outer_fd, key=codec_for(BTF, U32))
        inner_b = Map(b, value=codec_for(BTF, U64))
        outer[0] = a  # an Fd
        outer[1] = inner_b  # a Map
        outer[2] = a.raw  # a plain fd number
        ids = {0: commands.map_info(a.raw).id, 1: inner_b.id, 2: commands.map_info(a.raw).id}
        assert dict(outer.items()) == ids
        assert outer[1] == inner_b.id
        del outer[2]
        assert 2 not in outer
        # the inner map through its id is the same map
        inner_b[0] = 99
        with commands.fd_by_id(commands.ObjKind.MAP, outer[1]) as again:
            assert Map(again, value=codec_for(BTF, U64))[0] == 99


def test_prog_array_takes_program_fds_and_gives_program_ids(no_fd_leak: None) -> None:
    with kernel_map(MapType.PROG_ARRAY, 4, 4, 2) as fd, load_ok(ProgType.SOCKET_FILTER, return_imm(0)) as prog:
        m = Map(fd)
        m[1] = prog
        assert m[1] == commands.prog_info(prog.raw).id
        assert 0 not in m
        assert list(m.items()) == [(1, commands.prog_info(prog.raw).id)]


def test_a_map_found_by_id_decodes_with_the_btf_the_kernel_holds(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 24, 8, key_type=U32, value_type=CONN) as fd:
        Map.with_btf(fd, BTF, U32, CONN)[3] = conn(3, comm="init")
        with commands.fd_by_id(commands.ObjKind.MAP, commands.map_info(fd.raw).id) as again:
            m = Map.with_kernel_btf(again)
            assert m.key.name == "unsigned int"
            assert m.value.name == "struct conn"
            assert m[3].comm.rstrip(b"\0") == b"init"
            assert m[3].level.name == "HIGH"
    with kernel_map(MapType.HASH, 4, 8, 8) as fd:
        assert Map.with_kernel_btf(fd).value.name == "8 raw bytes"


@pytest.mark.parametrize(
    "map_type", [MapType.QUEUE, MapType.STACK, MapType.RINGBUF, MapType.BLOOM_FILTER], ids=lambda t: t.name
)
def test_keyless_map_types_are_refused_clearly(map_type: MapType, no_fd_leak: None) -> None:
    key, value, entries = (0, 0, 4096) if map_type == MapType.RINGBUF else (0, 4, 4)
    with kernel_map(map_type, key, value, entries) as fd, pytest.raises(MapTypeError, match=map_type.name.lower()):
        Map(fd)


# --- batches ------------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["batch", "per-element"])
def batch(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_batch_update_lookup_delete(batch: bool, no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 24, 512, key_type=U32, value_type=CONN) as fd:
        m = Map.with_btf(fd, BTF, U32, CONN, batch=batch)
        assert m.update_batch({i: conn(i) for i in range(300)}) == 300
        for chunk in (1, 7, 256, 1000):  # chunk 1 makes hash buckets overflow: ENOSPC, then a bigger chunk
            got = dict(m.lookup_batch(chunk=chunk))
            assert sorted(got) == list(range(300))
            assert all(v.pid == k for k, v in got.items())
        assert m.delete_batch(range(0, 300, 2)) == 150
        assert sorted(m) == list(range(1, 300, 2))
        with pytest.raises(KeyError) as e:
            m.delete_batch([1, 3, 4, 5])
        assert e.value.args == (4,)
        assert 1 not in m
        assert 3 not in m
        assert 5 in m  # stopped at the missing key, as the kernel's batch delete does
        drained = dict(m.lookup_and_delete_batch(chunk=16))
        assert sorted(drained) == list(range(5, 300, 2))
        assert list(m) == []
        with pytest.raises(CodecError, match=r"^key #1: expected an integer"):
            m.update_batch([(1, conn(1)), ("x", conn(2))])
        assert list(m) == []  # nothing written when any element fails to encode


def test_batch_on_per_cpu_and_array_maps(batch: bool, no_fd_leak: None) -> None:
    with kernel_map(MapType.PERCPU_HASH, 4, 8, 64, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64, batch=batch)
        m.update_batch((i, [i * 10 + cpu for cpu in range(CPUS)]) for i in range(20))
        assert dict(m.lookup_batch(chunk=4)) == {i: [i * 10 + cpu for cpu in range(CPUS)] for i in range(20)}
    with kernel_map(MapType.ARRAY, 4, 8, 10, key_type=U32, value_type=U64) as fd:
        arr = Map(fd, value=codec_for(BTF, U64), batch=batch)
        assert arr.update_batch({i: i * i for i in range(10)}) == 10
        assert dict(arr.lookup_batch(chunk=3)) == {i: i * i for i in range(10)}
        # arrays have no delete, batched or not
        with pytest.raises(SyscallError) as e:
            arr.delete_batch([1])
        assert e.value.errno in (errno.EINVAL, 524, errno.EOPNOTSUPP)


def test_batch_mode_really_batches(no_fd_leak: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With batch=True, items() reads 1000 elements without a single per-element lookup."""
    calls = {"lookup": 0}
    real = commands.map_lookup_elem

    def counting(*args: object, **kw: object) -> bool:
        calls["lookup"] += 1
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(map_module.commands, "map_lookup_elem", counting)
    with kernel_map(MapType.HASH, 4, 8, 1024, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64, batch=True)
        m.update({i: i for i in range(1000)})
        assert len(dict(m.items())) == 1000
        assert calls["lookup"] == 0
        slow = Map.with_btf(fd, BTF, U32, U64, batch=False)
        assert len(dict(slow.items())) == 1000
        assert calls["lookup"] == 1000


# --- iteration under change ----------------------------------------------------------------------------


def test_deleting_each_key_while_iterating(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 8, 256, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64)
        m.update({i: i for i in range(200)})
        seen = []
        for k in m:
            seen.append(k)
            del m[k]
        assert sorted(seen) == list(range(200))
        assert list(m) == []


def test_deleting_other_keys_while_iterating_never_repeats_or_loops(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 8, 256, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64)
        m.update({i: i for i in range(200)})
        seen: list[int] = []
        deleted: set[int] = set()
        for k in m:
            seen.append(k)
            # delete keys the walk has not reached (and may be about to continue from)
            for victim in (k + 1, k + 7, (k * 13) % 200):
                if victim not in seen and m.delete(victim):
                    deleted.add(victim)
        assert len(seen) == len(set(seen))
        survivors = set(range(200)) - deleted
        assert survivors <= set(seen)
        assert set(m) == survivors


def test_inserting_while_iterating_ends(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 8, 128, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64)
        m[0] = 0
        seen = []
        for k in m:
            seen.append(k)
            if k + 1 < 100:
                m[k + 1] = k + 1
        assert len(seen) == len(set(seen))
        assert set(seen) <= set(range(100))


def test_a_map_churning_faster_than_the_walk_is_a_state_error(no_fd_leak: None) -> None:
    """Keys replaced as fast as they are walked (and the next key deleted): the walk is bounded."""
    with kernel_map(MapType.HASH, 4, 8, 8, key_type=U32, value_type=U64) as fd:
        m = Map.with_btf(fd, BTF, U32, U64)
        m.update({i: i for i in range(8)})
        fresh = iter(range(100, 1_000_000))

        def churn() -> None:
            for k in m:
                m.delete(k)  # may be gone already: the walk fetched it before it was deleted
                for other in list(m)[:1]:
                    m.delete(other)  # likely the prefetched next key: the walk restarts
                while len(list(m)) < 8:
                    m[next(fresh)] = 0  # and the map never empties

        with pytest.raises(StateError, match="changed too much to iterate"):
            churn()


# --- the kernel writes, Map reads -------------------------------------------------------------------------


def test_program_written_struct_with_bitfields_reads_back_decoded(no_fd_leak: None) -> None:
    """A hand-assembled program stores a struct conn field by field into an array map with BTF."""
    flags_level = 6 | (31 << 3)  # flags:3 = 6, level:5 = MAX
    comm = int.from_bytes(b"bpf\0", "little")
    prog = [
        ld_map_value(R1, 0, 0),  # fd patched below
        st_mem(Size.W, R1, 0, 4242),  # pid
        st_mem(Size.H, R1, 4, 8080),  # port
        st_mem(Size.B, R1, 6, flags_level),
        st_mem(Size.W, R1, 8, comm),  # comm[0:4]
        st_mem(Size.DW, R1, 16, -1),  # bytes: the imm is sign-extended to 64 bits
        *return_imm(0),
    ]
    with kernel_map(MapType.ARRAY, 4, 24, 1, key_type=U32, value_type=CONN) as fd:
        prog[0] = ld_map_value(R1, fd.raw, 0)
        m = Map.with_btf(fd, BTF, U32, CONN)
        assert m[0]._asdict() == {"pid": 0, "port": 0, "flags": 0, "level": 0, "comm": bytes(8), "bytes": 0}
        with load_ok(ProgType.SOCKET_FILTER, prog) as p:
            commands.prog_test_run(p.raw, data_in=bytes(64))
        got = m[0]
        assert got._asdict() == {
            "pid": 4242,
            "port": 8080,
            "flags": 6,
            "level": 31,
            "comm": b"bpf\0\0\0\0\0",
            "bytes": (1 << 64) - 1,
        }
        assert got.level.name == "MAX"


def test_program_update_of_a_per_cpu_hash_lands_on_one_cpu(no_fd_leak: None) -> None:
    """bpf_map_update_elem(&map, &key, &value, 0) from a program: one CPU's slot holds the value."""
    with kernel_map(MapType.PERCPU_HASH, 4, 8, 4, key_type=U32, value_type=U64) as fd:
        prog = [
            st_mem(Size.W, R10, -4, 7),  # key
            st_mem(Size.DW, R10, -16, 0x5EED),  # value
            ld_map_fd(R1, fd.raw),
            mov64_reg(R2, R10),
            Insn(Class.ALU64 | AluOp.ADD | Source.K, R2, 0, 0, -4),
            mov64_reg(R3, R10),
            Insn(Class.ALU64 | AluOp.ADD | Source.K, R3, 0, 0, -16),
            mov64_imm(R4, 0),
            call(BPF_FUNC_MAP_UPDATE_ELEM),
            *return_imm(0),
        ]
        m = Map.with_btf(fd, BTF, U32, U64)
        with load_ok(ProgType.SOCKET_FILTER, prog) as p:
            commands.prog_test_run(p.raw, data_in=bytes(64))
        values = m[7]
        assert len(values) == CPUS
        assert sorted(values) == [0] * (CPUS - 1) + [0x5EED]


# --- threads -------------------------------------------------------------------------------------------------


def test_threads_share_one_map_without_sharing_buffers(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 24, 1024, key_type=U32, value_type=CONN) as fd:
        m = Map.with_btf(fd, BTF, U32, CONN)
        errors: list[BaseException] = []

        def worker(base: int) -> None:
            try:
                for i in range(base, base + 100):
                    m[i] = conn(i, comm=f"t{base}", port=i % 65536)
                    got = m[i]
                    assert (got.pid, got.port, got.comm.rstrip(b"\0")) == (i, i % 65536, f"t{base}".encode())
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t * 1000,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(list(m)) == 800


def test_a_closed_fd_is_a_state_error(no_fd_leak: None) -> None:
    with kernel_map(MapType.HASH, 4, 8, 4) as fd:
        dup = fd.dup()
        m = Map(dup)
        m[b"abcd"] = b"12345678"
        dup.close()
        with pytest.raises(StateError, match="closed"):
            m[b"abcd"]
        assert "closed" in repr(m)


# --- global variables over a live map ------------------------------------------------------------------------


@contextmanager
def data_section(obj: ObjectSpec, section: str, flags: int = 0) -> Iterator[tuple[Fd, Variables]]:
    """The section as libbpf would create it: a 1-element array holding the initial bytes."""
    assert obj.btf is not None
    spec = obj.maps[section]
    with kernel_map(MapType.ARRAY, 4, spec.value_size, 1, flags=flags) as fd:
        if spec.data:
            commands.map_update_elem(fd.raw, bytes(4), spec.data)
        yield fd, Variables.of_map(fd, obj.btf, section_vars(obj, section))


@pytest.mark.needs_clang
def test_variables_of_a_live_data_section_seen_by_a_program(globals_obj: ObjectSpec, no_fd_leak: None) -> None:
    with data_section(globals_obj, ".data") as (fd, view):
        assert (view.seq, view.ports, view.bias) == (1, [22, 80, 443, 8080], -7)
        assert view.live.port == 53
        view.seq = 41
        view.live = view.live._replace(port=5353)
        seq = globals_obj.variables["seq"]
        prog = [ld_map_value(R1, fd.raw, seq.offset), mov64_imm(R2, 42), stx_mem(Size.DW, R1, R2, 0), *return_imm(0)]
        with load_ok(ProgType.SOCKET_FILTER, prog) as p:
            commands.prog_test_run(p.raw, data_in=bytes(64))
        assert view.seq == 42
        assert view.live.port == 5353  # our earlier write survived the program's
        assert view._asdict()["ports"] == [22, 80, 443, 8080]


@pytest.mark.needs_clang
def test_variables_over_an_mmap_of_the_map(globals_obj: ObjectSpec, no_fd_leak: None) -> None:
    assert globals_obj.btf is not None
    bss = section_vars(globals_obj, ".bss")
    size = globals_obj.maps[".bss"].value_size
    with data_section(globals_obj, ".bss", flags=MapFlags.MMAPABLE) as (fd, _):
        mm = mmap.mmap(fd.raw, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            view = Variables.of_buffer(mm, globals_obj.btf, bss)
            view.hits = 5
            view.stats = {"total": 9, "dropped": 1}
            # the kernel sees the writes without a syscall from us
            raw = ctypes.create_string_buffer(size)
            assert commands.map_lookup_elem(fd.raw, bytes(4), raw)
            hits = globals_obj.variables["hits"]
            assert raw.raw[hits.offset : hits.offset + 8] == (5).to_bytes(8, "little")
            # and we see the kernel's
            commands.map_update_elem(fd.raw, bytes(4), bytes(size))
            assert view.hits == 0
            assert view.stats.total == 0
        finally:
            mm.close()  # raises BufferError if a view of it were left behind


@pytest.mark.needs_clang
def test_frozen_rodata_refuses_writes(globals_obj: ObjectSpec, no_fd_leak: None) -> None:
    with data_section(globals_obj, ".rodata") as (fd, view):
        view.target_tgid = 7  # before the freeze: fine
        commands.map_freeze(fd.raw)
        with pytest.raises(SyscallError) as e:
            view.target_tgid = 8
        assert e.value.errno == errno.EPERM
        assert view.target_tgid == 7


def test_variables_of_a_map_that_is_no_data_section(no_fd_leak: None) -> None:
    with kernel_map(MapType.ARRAY, 4, 8, 2) as fd, pytest.raises(DynbpfError, match="is not a data section"):
        Variables.of_map(fd, BTF, [])
