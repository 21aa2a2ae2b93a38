"""Spec: header checks, the offset scan, lazy decoding, the name index and split BTF."""

from __future__ import annotations

import struct

import pytest

from dynbpf._btf import EncodingError, Kind, NameNotFound, Spec, TypeNotFound, member
from dynbpf._btf.types import Enum, EnumValue, Int, IntEncoding, Member, Ptr, Struct, Type, Typedef
from dynbpf._probes.maps import local_storage_btf, raw_btf
from dynbpf.errors import ObjectFormatError
from tests.helpers import at_once


def test_small_blob_types_and_names() -> None:
    spec = Spec.parse(local_storage_btf())
    assert len(spec) == 4  # void + int + 2 structs
    assert spec[0] is None
    assert spec[1] == Int("", 4, IntEncoding.SIGNED, 0, 32)
    assert spec.find("val", Kind.STRUCT) == [3]
    assert spec.find("val", Kind.UNION) == []
    assert spec.find("val") == [3]
    assert spec.kind(2) == Kind.STRUCT
    assert spec[3] == Struct("val", 8, (Member("cnt", 1, 0), Member("l", 2, 32)))
    assert spec[3] is spec[3]  # cached
    assert spec.encode() == local_storage_btf()


@pytest.mark.parametrize("bad", [-1, 4, 1 << 40])
def test_unknown_ids_raise_type_not_found(bad: int) -> None:
    spec = Spec.parse(local_storage_btf())
    with pytest.raises(TypeNotFound, match=f"no type \\[{bad}\\]"):
        spec[bad]
    with pytest.raises(LookupError):
        spec.kind(bad)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x9f\xeb", "shorter than its header"),
        (struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 0), "bad BTF magic"),
        (struct.pack(">HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1) + b"\0", "big-endian"),
        (struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 1) + b"\0", "version 2"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 1, 24, 0, 0, 0, 1) + b"\0", "header flags"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 99, 0, 0, 0, 1) + b"\0", "header length"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 1000, 0, 0), "past the end"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 2, 0, 0, 1) + b"\0\0\0", "aligned"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 4, 1) + bytes(13), "overlaps"),
        (raw_btf(b"", b""), "must start with an empty string"),
        (raw_btf(b"", b"\0a"), "not NUL-terminated"),
        (raw_btf(struct.pack("<III", 0, 31 << 24, 0), b"\0"), "unknown BTF kind 31"),
        (raw_btf(struct.pack("<III", 0, 0, 0), b"\0"), "unknown BTF kind 0"),
        (raw_btf(struct.pack("<III", 0, (4 << 24) | 5, 8), b"\0"), "runs past the end of the type section"),
        (raw_btf(struct.pack("<IIII", 0, 1 << 24, 4, 32)[:8], b"\0"), "truncated record header"),
    ],
)
def test_malformed_btf_is_an_object_format_error(blob: bytes, message: str) -> None:
    with pytest.raises(ObjectFormatError, match=message):
        Spec.parse(blob)


def test_errors_name_section_and_offset() -> None:
    blob = raw_btf(struct.pack("<IIII", 0, 1 << 24, 4, 32) + struct.pack("<III", 0, 31 << 24, 0), b"\0")
    with pytest.raises(ObjectFormatError) as e:
        Spec.parse(blob, section="obj.o:.BTF")
    assert e.value.section == "obj.o:.BTF"
    assert e.value.offset == 24 + 16  # the second record


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (struct.pack("<IIII", 99, 1 << 24, 4, 32), "string table"),
        (struct.pack("<IIII", 0, (1 << 24) | 1, 4, 32), "INT with vlen 1"),
        (struct.pack("<IIII", 0, (1 << 24) | (1 << 31), 4, 32), "INT with the kind flag"),
        (struct.pack("<IIII", 0, (1 << 24) | (1 << 16), 4, 32), "reserved info bits"),
        (struct.pack("<IIII", 0, 1 << 24, 4, 32 | (1 << 8)), "INT with reserved bits"),
        (struct.pack("<IIII", 0, 1 << 24, 4, (8 << 24) | 32), "unknown encoding"),
        (struct.pack("<III", 0, 12 << 24 | 3, 0), "unknown linkage 3"),
        (struct.pack("<IIII", 0, 14 << 24, 1, 7), "VAR with unknown linkage 7"),
        (struct.pack("<III", 0, 7 << 24, 5), "FWD with type 5"),
        (struct.pack("<IIIIII", 0, 3 << 24, 4, 1, 1, 1), "ARRAY with size 4"),
    ],
)
def test_malformed_records_fail_when_decoded(record: bytes, message: str) -> None:
    spec = Spec.parse(raw_btf(record, b"\0"))  # parse only indexes; decoding finds the fault
    with pytest.raises(ObjectFormatError, match=message) as e:
        spec[1]
    assert e.value.offset == 24


def test_bad_name_offset_fails_the_name_index() -> None:
    spec = Spec.parse(raw_btf(struct.pack("<IIII", 42, 1 << 24, 4, 32), b"\0"))
    with pytest.raises(ObjectFormatError, match="name offset 42") as e:
        spec.find("x")
    assert e.value.offset == 24


def test_from_types_round_trips_and_appends_strings() -> None:
    types = [Int("int", 4, IntEncoding.SIGNED, 0, 32), Ptr(1), Typedef("intp", 2)]
    spec = Spec.from_types(types)
    assert [t for _, t in spec.types()] == types
    assert spec.string(1) == "int"
    assert Spec.parse(spec.encode()).encode() == spec.encode()


def test_split_spec_continues_ids_and_strings() -> None:
    base = Spec.from_types([Int("int", 4, IntEncoding.SIGNED, 0, 32)])
    split = Spec.from_types([Ptr(1), Typedef("int", 2), Typedef("myptr", 2)], base=base)
    assert split.first_id == 2
    assert len(split) == 5
    assert split[1] is base[1]
    assert split[2] == Ptr(1)
    # "int" is reused from the base's table; "myptr" is the split table's first string
    assert split.strings.find("int") == 1
    assert split.strings.find("myptr") == base.strings.end_offset
    assert split.find("int") == [1, 3]
    assert split.find("int", Kind.TYPEDEF) == [3]
    assert [i for i, _ in split.types()] == [2, 3, 4]
    assert Spec.parse(split.encode(), base=base).encode() == split.encode()


def test_name_index_is_built_once_under_concurrency() -> None:
    spec = Spec.parse(local_storage_btf())
    assert at_once(lambda: spec.find("val"), threads=8) == [[3]] * 8


def test_string_lookup_errors() -> None:
    spec = Spec.parse(local_storage_btf())
    assert spec.string(1) == "bpf_spin_lock"
    with pytest.raises(ObjectFormatError, match="past the string table"):
        spec.string(10_000)
    with pytest.raises(NameNotFound, match="no member 'nope'"):
        member(spec, 3, "nope")


@pytest.mark.parametrize(
    "bad",
    [
        Int("int", 4, IntEncoding.SIGNED, 0, 300),
        Int("int", -4, IntEncoding.SIGNED, 0, 32),
        Struct("s", 4, (Member("b", 1, 1 << 24, 1),)),
        Struct("s", 4, tuple(Member("", 1, 0) for _ in range(0x10000))),
        Enum("e", 4, False, (EnumValue("X", 1 << 32),)),
        Enum("e", 4, True, (EnumValue("X", -(1 << 31) - 1),)),
        Ptr(1 << 32),
        "not a type",
    ],
)
def test_unencodable_types_raise_encoding_error(bad: Type) -> None:
    with pytest.raises(EncodingError):
        Spec.from_types([Int("int", 4, IntEncoding.SIGNED, 0, 32), bad])


def test_any_bytes_in_a_name_survive_a_round_trip() -> None:
    strings = b"\0caf\xc3\xa9\0\xff\xfe\0"
    blob = raw_btf(struct.pack("<IIII", 1, 1 << 24, 4, 32) + struct.pack("<IIII", 7, 1 << 24, 4, 32), strings)
    spec = Spec.parse(blob)
    assert getattr(spec[1], "name", None) == "café"
    assert spec.find("café") == [1]
    assert spec.encode() == blob
    assert Spec.from_types([t for _, t in spec.types()]).strings.own_bytes() == strings


def test_parse_accepts_any_buffer_and_streams_types_without_caching() -> None:
    blob = local_storage_btf()
    spec = Spec.parse(memoryview(bytearray(blob)))
    assert [i for i, _ in spec.types()] == [1, 2, 3]
    assert spec._cache is None  # types() decoded without pinning
    assert spec.find("") == []
