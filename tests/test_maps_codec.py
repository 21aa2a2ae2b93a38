"""BTF-driven codecs: hand-built BTF for every kind and error, clang's own layouts as the oracle."""

from __future__ import annotations

import enum
import math
import pickle
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynbpf import _elf as elf
from dynbpf._btf import Spec
from dynbpf._btf.types import (
    Array,
    Const,
    Datasec,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Member,
    Ptr,
    Struct,
    Type,
    Typedef,
    Union,
    Var,
    VarLinkage,
    VarSecinfo,
    Volatile,
)
from dynbpf._maps import Codec, CodecError, RawCodec, Record, codec_for
from dynbpf._maps.codec import ArrayCodec, BytesCodec, EnumCodec, StructCodec
from dynbpf.errors import DynbpfError, ObjectFormatError
from tests import bpfbuild
from tests.helpers import section_vars

S = IntEncoding.SIGNED
U = IntEncoding.NONE


def spec_of(*types: Type) -> Spec:
    return Spec.from_types(types)


def codec(*types: Type, type_id: int | None = None) -> Codec:
    """Codec for the last type (or ``type_id``) of a blob made of ``types`` (ids from 1)."""
    return codec_for(spec_of(*types), type_id if type_id is not None else len(types))


def roundtrip(c: Codec, value: object) -> object:
    data = c.encode(value)
    assert len(data) == c.size
    return c.decode(data)


# --- scalars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "signed"), [(1, False), (1, True), (2, False), (2, True), (4, False), (4, True), (8, False), (8, True)]
)
def test_integer_limits_round_trip_and_overflow_is_refused(size: int, signed: bool) -> None:
    c = codec(Int("x", size, S if signed else U, 0, 8 * size))
    low, high = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)
    for v in (low, high, 0, 1):
        assert c.encode(v) == v.to_bytes(size, "little", signed=signed)
        assert roundtrip(c, v) == v
    for bad in (low - 1, high + 1):
        with pytest.raises(CodecError, match=rf"^value: {bad} does not fit x \(range {low}\.\.{high}\)"):
            c.encode(bad)


def test_128_bit_integers_are_ints() -> None:
    u = codec(Int("unsigned __int128", 16, U, 0, 128))
    s = codec(Int("__int128", 16, S, 0, 128))
    big = (1 << 128) - 1
    assert u.encode(big) == b"\xff" * 16
    assert roundtrip(u, big) == big
    assert s.decode(b"\xff" * 16) == -1
    assert roundtrip(s, -(1 << 127)) == -(1 << 127)
    with pytest.raises(CodecError):
        u.encode(1 << 128)


@pytest.mark.parametrize("bad", ["5", 1.0, b"\x01", None, [1]])
def test_integers_refuse_non_integers(bad: object) -> None:
    c = codec(Int("int", 4, S, 0, 32))
    with pytest.raises(CodecError, match="expected an integer for int"):
        c.encode(bad)


def test_integers_accept_index_objects_and_bools() -> None:
    class Seven:
        def __index__(self) -> int:
            return 7

    c = codec(Int("int", 4, S, 0, 32))
    assert c.decode(c.encode(Seven())) == 7
    assert c.decode(c.encode(True)) == 1


def test_bool() -> None:
    c = codec(Int("_Bool", 1, IntEncoding.BOOL, 0, 8))
    assert c.encode(True) == b"\x01"
    assert c.encode(0) == b"\x00"
    assert c.decode(b"\x00") is False
    assert c.decode(b"\x02") is True  # any non-zero byte is true, as in C
    with pytest.raises(CodecError, match="expected a bool"):
        c.encode(2)
    with pytest.raises(CodecError):
        c.encode("yes")


def test_char_is_a_number_that_also_takes_one_byte() -> None:
    c = codec(Int("char", 1, S, 0, 8))
    assert c.decode(b"A") == 65
    assert c.encode("A") == c.encode(b"A") == c.encode(65) == b"A"
    assert c.encode(b"\xff") == b"\xff"
    assert c.decode(b"\xff") == -1
    assert c.encode(-1) == b"\xff"
    with pytest.raises(CodecError, match="expected one byte"):
        c.encode("AB")
    with pytest.raises(CodecError, match="expected one byte"):
        c.encode("é")  # two bytes in UTF-8


def test_pointer_is_an_address() -> None:
    c = codec(Int("int", 4, S, 0, 32), Ptr(1))
    assert c.size == 8
    assert c.name == "int *"
    assert roundtrip(c, 0xFFFF_8880_0000_1000) == 0xFFFF_8880_0000_1000
    with pytest.raises(CodecError):
        c.encode(-1)


@pytest.mark.parametrize(("size", "fmt"), [(2, "<e"), (4, "<f"), (8, "<d")])
def test_floats(size: int, fmt: str) -> None:
    c = codec(Float("f", size))
    assert c.encode(1.5) == struct.pack(fmt, 1.5)
    assert roundtrip(c, -0.25) == -0.25
    assert roundtrip(c, 3) == 3.0
    assert math.isinf(roundtrip(c, math.inf))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected a number"):
        c.encode("1.5")
    if size < 8:
        with pytest.raises(CodecError, match="does not fit"):
            c.encode(1e300)


def test_long_double_stays_raw() -> None:
    c = codec(Float("long double", 16))
    assert isinstance(c, RawCodec)
    assert c.decode(bytes(range(16))) == bytes(range(16))


def test_typedefs_and_qualifiers_are_looked_through() -> None:
    c = codec(Int("unsigned int", 4, U, 0, 32), Typedef("__u32", 1), Volatile(2), Const(3), Typedef("u32_t", 4))
    assert c.name == "unsigned int"
    assert roundtrip(c, 0xDEADBEEF) == 0xDEADBEEF


# --- enums -------------------------------------------------------------------------------


def color_types() -> list[Type]:
    return [Enum("color", 4, False, (EnumValue("RED", 1), EnumValue("GREEN", 2), EnumValue("CRIMSON", 1)))]


def test_enum_decodes_to_an_int_enum_and_encodes_names_ints_and_members() -> None:
    c = codec(*color_types())
    assert isinstance(c, EnumCodec)
    red = c.decode(b"\x01\0\0\0")
    assert isinstance(red, enum.IntEnum)
    assert red == 1
    assert red.name == "RED"  # the first enumerator of a value; CRIMSON is its alias
    assert type(red).__name__ == "color"
    assert c.enum_type is not None
    assert c.enum_type.CRIMSON is red
    assert c.encode("GREEN") == c.encode(2) == c.encode(c.enum_type.GREEN) == b"\x02\0\0\0"
    assert c.encode("CRIMSON") == b"\x01\0\0\0"
    unknown = c.decode(b"\x07\0\0\0")
    assert type(unknown) is int
    assert unknown == 7
    with pytest.raises(CodecError, match=r"enum color has no enumerator 'BLUE' \(known: RED, GREEN, CRIMSON\)"):
        c.encode("BLUE")


def test_signed_and_64_bit_enums() -> None:
    c = codec(Enum("delta", 4, True, (EnumValue("DOWN", -2), EnumValue("UP", 3))))
    assert c.encode("DOWN") == (-2).to_bytes(4, "little", signed=True)
    assert c.decode(c.encode(-2)).name == "DOWN"
    w = codec(Enum64("wide", 8, False, (EnumValue("HUGE", 1 << 40),)))
    assert w.decode((1 << 40).to_bytes(8, "little")).name == "HUGE"
    with pytest.raises(CodecError):
        w.encode(1 << 64)


def test_negative_enumerators_of_btf_without_the_signed_flag() -> None:
    """clang before 15 stores -2 as 0xfffffffe and no signed flag: -2 is still accepted."""
    c = codec(Enum("delta", 4, False, (EnumValue("DOWN", 0xFFFFFFFE),)))
    assert c.encode(-2) == b"\xfe\xff\xff\xff"
    assert c.decode(c.encode(-2)).name == "DOWN"


def test_enumerator_names_python_reserves_still_encode_by_name() -> None:
    c = codec(Enum("odd", 4, False, (EnumValue("_sunder_", 1), EnumValue("mro", 2), EnumValue("__MAX", 3))))
    assert isinstance(c, EnumCodec)
    assert c.encode("_sunder_") == b"\x01\0\0\0"
    assert c.encode("mro") == b"\x02\0\0\0"
    assert c.decode(b"\x01\0\0\0") == 1
    assert type(c.decode(b"\x01\0\0\0")) is int
    assert c.decode(b"\x03\0\0\0").name == "__MAX"


def test_enum_without_enumerators() -> None:
    c = codec(Enum("", 4, False, ()))
    assert c.name == "enum (anon)"
    assert roundtrip(c, 9) == 9


# --- arrays -----------------------------------------------------------------------------


def test_arrays_are_lists_of_exact_length() -> None:
    c = codec(Int("int", 4, S, 0, 32), Array(1, 1, 3))
    assert isinstance(c, ArrayCodec)
    assert c.name == "int[3]"
    assert c.encode([1, -2, 3]) == struct.pack("<3i", 1, -2, 3)
    assert c.decode(struct.pack("<3i", 1, -2, 3)) == [1, -2, 3]
    with pytest.raises(CodecError, match=r"^value: int\[3\] has 3 elements, got 2"):
        c.encode([1, 2])
    with pytest.raises(CodecError, match=r"^value\[1\]: expected an integer"):
        c.encode([1, "x", 3])
    with pytest.raises(CodecError, match="expected a list of 3"):
        c.encode(b"abc")


def test_two_dimensional_arrays_and_arrays_of_enums() -> None:
    types = [Int("short", 2, S, 0, 16), Array(1, 1, 3), Array(2, 1, 2), *color_types(), Array(4, 1, 2)]
    grid = codec_for(spec_of(*types), 3)
    assert grid.name == "short[3][2]"
    assert roundtrip(grid, [[1, 2, 3], [-4, -5, -6]]) == [[1, 2, 3], [-4, -5, -6]]
    with pytest.raises(CodecError, match=r"^value\[1\]\[2\]: 40000 does not fit short"):
        grid.encode([[1, 2, 3], [4, 5, 40000]])
    colors = codec_for(spec_of(*types), 5)
    assert [c.name for c in colors.decode(b"\x02\0\0\0\x01\0\0\0")] == ["GREEN", "RED"]


@pytest.mark.parametrize("element", ["char", "unsigned char", "signed char", "u8"])
def test_byte_arrays_are_bytes(element: str) -> None:
    c = codec(Int(element, 1, S if element != "unsigned char" else U, 0, 8), Array(1, 1, 8))
    assert isinstance(c, BytesCodec)
    assert c.encode("dyn") == b"dyn\0\0\0\0\0"
    assert c.encode(b"12345678") == b"12345678"
    assert c.encode(bytearray(b"ab")) == b"ab\0\0\0\0\0\0"
    assert c.encode([1, 255, -1]) == b"\x01\xff\xff\0\0\0\0\0"
    assert c.decode(b"bash\0\0\0\0") == b"bash\0\0\0\0"
    with pytest.raises(CodecError, match=r"holds 8 bytes, got 9"):
        c.encode("123456789")
    with pytest.raises(CodecError, match=r"^value\[0\]: 256 does not fit a byte"):
        c.encode([256])
    with pytest.raises(CodecError, match="expected bytes or str"):
        c.encode(12)


def test_byte_array_encode_overwrites_stale_bytes_in_place() -> None:
    c = codec(Int("char", 1, S, 0, 8), Array(1, 1, 4))
    buf = bytearray(b"xxxxxxxx")
    c.pack_into(buf, 2, "a")
    assert buf == b"xxa\0\0\0xx"


def test_bool_arrays_stay_lists() -> None:
    c = codec(Int("_Bool", 1, IntEncoding.BOOL, 0, 8), Array(1, 1, 2))
    assert c.decode(b"\x01\x00") == [True, False]


# --- structs, unions, bitfields -----------------------------------------------------------------


def point_types() -> list[Type]:
    return [
        Int("int", 4, S, 0, 32),
        Int("char", 1, S, 0, 8),
        Array(2, 1, 4),
        Struct("point", 8, (Member("x", 1, 0), Member("y", 1, 32))),
        Struct("shape", 20, (Member("name", 3, 0), Member("at", 4, 32), Member("sides", 1, 96), Member("id", 1, 128))),
    ]


def test_struct_decodes_to_a_record() -> None:
    c = codec(*point_types())
    assert isinstance(c, StructCodec)
    data = b"tri\0" + struct.pack("<iiii", 1, -2, 3, 9)
    shape = c.decode(data)
    assert isinstance(shape, Record)
    assert type(shape).__name__ == "shape"
    assert shape.name == b"tri\0"
    assert shape.at.x == 1
    assert shape.at.y == -2
    assert shape["sides"] == 3
    assert shape._fields == ("name", "at", "sides", "id")
    assert shape._asdict() == {"name": b"tri\0", "at": shape.at, "sides": 3, "id": 9}
    assert repr(shape) == "shape(name=b'tri\\x00', at=point(x=1, y=-2), sides=3, id=9)"
    assert c.encode(shape) == data
    with pytest.raises(AttributeError, match="read-only"):
        shape.sides = 4
    moved = shape._replace(sides=4)
    assert moved.sides == 4
    assert shape.sides == 3
    assert c.decode(c.encode(moved)) == moved


def test_struct_encodes_from_mappings_with_missing_fields_zero() -> None:
    c = codec(*point_types())
    assert c.encode({"sides": 3, "at": {"y": 5}}) == bytes(4) + struct.pack("<iiii", 0, 5, 3, 0)
    assert c.encode({}) == bytes(20)
    buf = bytearray(b"\xff" * 24)
    c.pack_into(buf, 2, {"id": 1})  # assignment replaces the whole struct, not just the given fields
    assert buf == b"\xff\xff" + bytes(16) + b"\x01\0\0\0" + b"\xff\xff"


def test_struct_errors_name_the_field_path() -> None:
    c = codec(*point_types())
    with pytest.raises(CodecError, match=r"^value\.at\.y: 4294967296 does not fit int") as e:
        c.encode({"at": {"y": 1 << 32}})
    assert e.value.path == "value.at.y"
    with pytest.raises(CodecError, match=r"^value\.at: struct point has no field 'z' \(fields: x, y\)"):
        c.encode({"at": {"z": 1}})
    with pytest.raises(CodecError, match="expected a mapping or record for struct shape, got int"):
        c.encode(5)
    with pytest.raises(CodecError, match=r"^key\.name: struct shape|^key\.name: char\[4\] holds 4 bytes"):
        c.encode({"name": "toolong"}, path="key")
    assert isinstance(e.value, DynbpfError)
    assert isinstance(e.value, ValueError)


def test_records_compare_by_type_and_values_across_codecs() -> None:
    types = point_types()
    a, b = codec_for(spec_of(*types), 5), codec_for(spec_of(*types), 5)
    data = bytes(range(20))
    assert a.decode(data) == b.decode(data)
    assert hash(a.decode(data).at) == hash(b.decode(data).at)
    assert a.decode(data) != a.decode(bytes(20))
    assert b.encode(a.decode(data)) == data
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(a.decode(data))


def test_records_can_be_built_by_hand() -> None:
    c = codec(*point_types())
    assert isinstance(c, StructCodec)
    point = c.record._fields
    assert point == ("name", "at", "sides", "id")
    rec = c.record(b"sq", {"x": 1, "y": 1}, 4, id=2)
    assert c.decode(c.encode(rec)).sides == 4
    with pytest.raises(TypeError, match="missing field"):
        c.record(b"sq")
    with pytest.raises(TypeError, match="no field 'bogus'"):
        c.record(b"", {}, 0, 0, bogus=1)


def test_other_records_and_named_tuples_encode_by_field_name() -> None:
    from collections import namedtuple

    c = codec(*point_types())
    Pt = namedtuple("Pt", "x y")
    assert c.encode({"at": Pt(3, 4)})[4:12] == struct.pack("<ii", 3, 4)


def test_member_names_python_cannot_use_as_attributes() -> None:
    int_t = Int("int", 4, S, 0, 32)
    c = codec(int_t, Struct("odd", 12, (Member("_asdict", 1, 0), Member("class", 1, 32), Member("__x", 1, 64))))
    rec = c.decode(struct.pack("<iii", 1, 2, 3))
    assert rec["_asdict"] == 1
    assert rec["class"] == 2
    assert getattr(rec, "class") == 2
    assert rec["__x"] == 3
    assert rec._asdict() == {"_asdict": 1, "class": 2, "__x": 3}


def bitfield_types() -> list[Type]:
    """struct bits { unsigned a:3; int b:5; unsigned c:12; enum color d:4; _Bool e:1; u64 f:41 @ bit 32; }."""
    return [
        Int("unsigned int", 4, U, 0, 32),
        Int("int", 4, S, 0, 32),
        *color_types(),  # 3
        Int("_Bool", 1, IntEncoding.BOOL, 0, 8),
        Int("unsigned long long", 8, U, 0, 64),
        Struct(
            "bits",
            16,
            (
                Member("a", 1, 0, 3),
                Member("b", 2, 3, 5),
                Member("c", 1, 8, 12),
                Member("d", 3, 20, 4),
                Member("e", 4, 24, 1),
                Member("f", 5, 32, 41),
            ),
        ),
    ]


def test_bitfields_pack_like_c() -> None:
    c = codec(*bitfield_types())
    value = {"a": 5, "b": -9, "c": 0xABC, "d": "GREEN", "e": True, "f": (1 << 41) - 1}
    word = 5 | ((-9 & 0x1F) << 3) | (0xABC << 8) | (2 << 20) | (1 << 24) | (((1 << 41) - 1) << 32)
    assert c.encode(value) == word.to_bytes(16, "little")
    rec = c.decode(word.to_bytes(16, "little"))
    assert rec._asdict() == {"a": 5, "b": -9, "c": 0xABC, "d": 2, "e": True, "f": (1 << 41) - 1}
    assert rec.d.name == "GREEN"


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("a", 8, r"value\.a: 8 does not fit a 3-bit field of unsigned int \(range 0\.\.7\)"),
        ("a", -1, r"value\.a: -1 does not fit a 3-bit field"),
        ("b", 16, r"value\.b: 16 does not fit a 5-bit field of int \(range -16\.\.15\)"),
        ("b", -17, r"value\.b: -17 does not fit"),
        ("d", 16, r"value\.d: 16 does not fit a 4-bit field of enum color"),
        ("e", 2, r"value\.e: expected a bool"),
        ("f", 1 << 41, r"value\.f: \d+ does not fit a 41-bit field"),
    ],
)
def test_bitfield_range_errors(field: str, bad: int, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec(*bitfield_types()).encode({field: bad})


@settings(max_examples=200, deadline=None)
@given(
    value=st.fixed_dictionaries(
        {
            "a": st.integers(0, 7),
            "b": st.integers(-16, 15),
            "c": st.integers(0, 0xFFF),
            "d": st.integers(0, 15),
            "e": st.booleans(),
            "f": st.integers(0, (1 << 41) - 1),
        }
    ),
    noise=st.binary(min_size=16, max_size=16),
)
def test_bitfield_round_trip_property(value: dict[str, int], noise: bytes) -> None:
    bits = _BITS_CODEC
    assert bits.decode(bits.encode(value))._asdict() == value
    # decoding arbitrary bytes and re-encoding keeps every field's bits
    again = bits.decode(bits.encode(bits.decode(noise)))
    assert again == bits.decode(noise)


_BITS_CODEC = codec_for(spec_of(*bitfield_types()), 6)


def test_legacy_bitfields_encoded_in_the_int() -> None:
    """BTF without the kind flag: the member's INT carries bit offset and size."""
    types: list[Type] = [
        Int("int", 4, S, 0, 32),
        Int("int", 4, S, 0, 4),  # a 4-bit int
        Int("unsigned int", 4, U, 2, 6),  # 6 bits, 2 bits into its storage unit
        Struct("legacy", 8, (Member("x", 2, 0), Member("y", 3, 8), Member("z", 1, 32))),
    ]
    c = codec_for(spec_of(*types), 4)
    data = c.encode({"x": -3, "y": 0x2A, "z": 7})
    word = (-3 & 0xF) | (0x2A << 10) | (7 << 32)
    assert data == word.to_bytes(8, "little")
    assert c.decode(data)._asdict() == {"x": -3, "y": 0x2A, "z": 7}


def test_unions_and_anonymous_members_are_flattened_as_in_c() -> None:
    types: list[Type] = [
        Int("unsigned int", 4, U, 0, 32),
        Int("unsigned char", 1, U, 0, 8),
        Array(2, 1, 4),
        Union("", 4, (Member("word", 1, 0), Member("bytes", 3, 0))),
        Int("short", 2, S, 0, 16),
        Struct("", 4, (Member("lo", 5, 0), Member("hi", 5, 16))),
        Struct("packet", 12, (Member("len", 1, 0), Member("", 4, 32), Member("", 6, 64))),
    ]
    c = codec_for(spec_of(*types), 7)
    rec = c.decode(struct.pack("<IIhh", 3, 0x04030201, -1, 2))
    assert rec._fields == ("len", "word", "bytes", "lo", "hi")
    assert rec.word == 0x04030201
    assert rec.bytes == b"\x01\x02\x03\x04"
    assert (rec.lo, rec.hi) == (-1, 2)
    assert c.encode(rec) == struct.pack("<IIhh", 3, 0x04030201, -1, 2)
    # the changed alternative of the union wins over the stale one
    assert c.encode(rec._replace(word=0xAABBCCDD))[4:8] == b"\xdd\xcc\xbb\xaa"
    assert c.encode(rec._replace(bytes=b"\x09"))[4:8] == b"\x09\0\0\0"
    # from a mapping, later alternatives in declaration order win
    assert c.encode({"word": 1, "bytes": b"\x05\x06"})[4:8] == b"\x05\x06\0\0"
    union = codec_for(spec_of(*types), 4)
    assert union.name == "union (anon)"
    assert type(union.decode(bytes(4))).__name__ == "anon_union"


def test_empty_struct() -> None:
    c = codec(Struct("empty", 0, ()))
    assert c.size == 0
    assert c.encode({}) == b""
    assert c.decode(b"")._asdict() == {}


# --- raw bytes, sizes, buffers -----------------------------------------------------------------


def test_type_id_zero_is_raw_bytes_of_the_map_size() -> None:
    c = codec_for(None, 0, size=6)
    assert isinstance(c, RawCodec)
    assert c.encode(b"abcdef") == b"abcdef"
    assert c.decode(bytearray(b"abcdef")) == b"abcdef"
    with pytest.raises(CodecError, match="expected 6 bytes, got 5"):
        c.encode(b"abcde")
    with pytest.raises(CodecError, match="expected 6 bytes, got str"):
        c.encode("abcdef")
    with pytest.raises(CodecError, match="needs a size"):
        codec_for(None, 0)
    with pytest.raises(CodecError, match="needs the BTF"):
        codec_for(None, 3)


def test_size_must_match_the_map() -> None:
    s = spec_of(*point_types())
    assert codec_for(s, 4, size=8).size == 8
    with pytest.raises(CodecError, match=r"struct point \(type \[4\]\) is 8 bytes, but 4 were expected"):
        codec_for(s, 4, size=4)


def test_decode_checks_the_length_and_in_place_access_checks_bounds() -> None:
    c = codec(Int("int", 4, S, 0, 32))
    with pytest.raises(CodecError, match=r"^key: int takes 4 bytes, got 3"):
        c.decode(b"abc", path="key")
    assert c.decode(memoryview(b"\x01\0\0\0")) == 1
    buf = bytearray(6)
    c.pack_into(buf, 2, -1)
    assert buf == b"\0\0\xff\xff\xff\xff"
    assert c.unpack_from(buf, 2) == -1
    assert c.unpack_from(memoryview(buf), 2) == -1
    with pytest.raises(CodecError, match="does not fit a 6-byte buffer"):
        c.pack_into(buf, 3, 1)
    assert len(buf) == 6  # never grown by a slice assignment
    with pytest.raises(CodecError, match="does not fit"):
        c.unpack_from(buf, -1)


# --- what has no value, and malformed BTF -------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "what"),
    [
        ([Fwd("later", False)], "FWD struct later"),
        ([FuncProto(0, ()), Func("f", 1, FuncLinkage.GLOBAL)], r"FUNC void f\(void\)"),
        ([FuncProto(0, ())], r"FUNC_PROTO void \(void\)"),
    ],
)
def test_types_without_a_value_are_codec_errors(types: list[Type], what: str) -> None:
    with pytest.raises(CodecError, match=rf"type \[{len(types)}\] \({what}\) has no value"):
        codec(*types)


def test_void_has_no_value_but_id_zero_means_raw() -> None:
    s = spec_of(Typedef("v", 0))
    with pytest.raises(CodecError, match=r"\(void\) has no value"):
        codec_for(s, 1)


def test_unknown_type_id_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        codec_for(spec_of(Int("int", 4, S, 0, 32)), 9)


@pytest.mark.parametrize(
    ("types", "message"),
    [
        # struct a { struct a self; } (impossible in C, possible in a blob)
        ([Struct("a", 4, (Member("self", 1, 0),))], r"type \[1\]: contains itself"),
        ([Struct("a", 4, (Member("x", 7, 0),))], r"type \[1\]: refers to type \[7\], which does not exist"),
        ([Int("int", 4, S, 0, 32), Struct("a", 4, (Member("x", 1, 8),))], r"member 'x' ends past the 4-byte struct"),
        ([Int("int", 4, S, 0, 32), Struct("a", 8, (Member("x", 1, 3),))], r"member 'x' is not byte-aligned"),
        ([Int("int", 4, S, 0, 32), Struct("a", 4, (Member("x", 1, 30, 4),))], r"bitfield 'x' .* does not fit"),
        ([Int("int", 4, S, 0, 32), Struct("a", 8, (Member("x", 1, 0, 33),))], r"bitfield 'x' .* does not fit"),
        (
            [Int("int", 4, S, 0, 32), Struct("p", 4, (Member("v", 1, 0),)), Struct("a", 4, (Member("x", 2, 0, 4),))],
            r"bitfield 'x' of non-integer type struct p",
        ),
        (
            [Int("int", 4, S, 0, 32), Struct("a", 8, (Member("x", 1, 0), Member("x", 1, 32)))],
            r"two members called 'x'",
        ),
        ([Int("int", 3, S, 0, 24)], r"INT 'int' of 3 bytes"),
        ([Int("int", 4, S, 0, 40)], r"INT 'int' of 4 bytes, 40 bits"),
        ([Enum("e", 3, False, ())], r"enum 'e' of 3 bytes"),
        ([Float("f", 5)], r"float 'f' of 5 bytes"),
        ([Struct("e", 0, ()), Array(1, 1, 1 << 30)], r"array of 1073741824 zero-sized elements"),
        ([Int("long", 8, S, 0, 64), Array(1, 1, 1 << 30)], r"larger than 4 GiB"),
        ([Int("int", 4, S, 0, 32), Struct("a", 4, (Member("x", 3, 0),)), Typedef("t", 2)], r"type \[2\]: contains"),
    ],
)
def test_malformed_btf_is_an_object_format_error_naming_the_record(types: list[Type], message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ObjectFormatError, match=message) as e:
        codec(*types)
    assert e.value.section == ".BTF"
    assert e.value.offset is not None
    assert time.perf_counter() - start < 1.0


def test_deep_nesting_is_bounded_and_not_called_a_loop() -> None:
    """200 structs each holding the next said "contains itself (a loop?)": a chain too deep is not a loop (issue 13)."""
    from dynbpf._maps.codec import MAX_NESTING

    types: list[Type] = [Int("int", 4, S, 0, 32)]
    for i in range(200):
        types.append(Struct(f"s{i}", 4, (Member("in", i + 1, 0),)))
    with pytest.raises(ObjectFormatError, match=rf"is nested deeper than {MAX_NESTING} levels") as e:
        codec(*types)
    assert "itself" not in str(e.value)
    assert "loop" not in str(e.value)
    just_deep_enough = types[: MAX_NESTING + 1]  # the limit itself still decodes
    assert codec(*just_deep_enough).size == 4


def test_a_type_that_contains_itself_is_called_a_loop() -> None:
    loop = [Int("int", 4, S, 0, 32), Struct("a", 4, (Member("b", 3, 0),)), Struct("b", 4, (Member("a", 2, 0),))]
    with pytest.raises(ObjectFormatError, match=r"contains itself \(a loop in the type graph\)"):
        codec(*loop)


def test_shared_types_are_built_once() -> None:
    """A struct of 16 members of a struct of 16 members of ...: a DAG, not a tree, to build."""
    types: list[Type] = [Int("char", 1, S, 0, 8)]
    for level in range(30):
        size = 16**level
        if size * 16 > 0xFFFFFFFF:
            break
        members = tuple(Member(f"m{i}", level + 1, 8 * size * i) for i in range(16))
        types.append(Struct(f"l{level}", size * 16, members))
    start = time.perf_counter()
    c = codec(*types)
    assert time.perf_counter() - start < 1.0
    assert c.size == 16 ** (len(types) - 1)


# --- DATASEC and VAR -----------------------------------------------------------------------------


def datasec_types(size: int) -> list[Type]:
    return [
        Int("unsigned long long", 8, U, 0, 64),
        Var("hits", 1, VarLinkage.GLOBAL_ALLOCATED),
        Int("char", 1, S, 0, 8),
        Array(3, 3, 4),
        Var("tag", 4, VarLinkage.GLOBAL_ALLOCATED),
        Datasec(".bss", size, (VarSecinfo(2, 0, 8), VarSecinfo(5, 8, 4))),
    ]


def test_a_var_is_its_type_and_a_fixed_datasec_is_a_record() -> None:
    s = spec_of(*datasec_types(16))
    assert codec_for(s, 2).name == "unsigned long long"
    sec = codec_for(s, 6, size=16)
    assert sec.name == "SEC(.bss)"
    data = struct.pack("<Q", 7) + b"abcd" + b"\0" * 4
    assert sec.decode(data)._asdict() == {"hits": 7, "tag": b"abcd"}
    assert sec.encode({"tag": "ab"}) == bytes(8) + b"ab" + bytes(6)


def test_a_datasec_straight_from_clang_needs_its_offsets_fixed_first() -> None:
    with pytest.raises(CodecError, match=r"DATASEC \.bss \[6\] has no size yet"):
        codec_for(spec_of(*datasec_types(0)), 6)


def test_datasec_entry_outside_the_section_is_malformed() -> None:
    with pytest.raises(ObjectFormatError, match=r"variable 'tag' .* does not fit"):
        codec_for(spec_of(*datasec_types(10)), 6)


# --- clang's layouts as the oracle -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def codec_obj() -> elf.ObjectSpec:
    return elf.read(bpfbuild.build("maps_codec"))


EXPECTED_FLAGS = {
    "low": 5,
    "neg": -9,
    "straddle": 0xABC,
    "hue": 4,
    "on": True,
    "big": 0x1FFFFFFFFFF,
    "tail": ord("z"),
}


@pytest.mark.needs_clang
def test_clang_bitfield_layout_decodes_and_encodes_byte_exact(codec_obj: elf.ObjectSpec) -> None:
    var = codec_obj.variables["sample_flags"]
    c = codec_for(codec_obj.btf, var.type_id, size=var.size)
    rec = c.decode(var.initial)
    assert rec._asdict() == EXPECTED_FLAGS
    assert rec.hue.name == "BLUE"
    assert c.encode(EXPECTED_FLAGS) == var.initial
    assert c.encode({**EXPECTED_FLAGS, "hue": "BLUE", "tail": "z"}) == var.initial


EXPECTED_REC = {
    "kind": 0xBEEF,
    "as_u32": 0x04030201,
    "as_bytes": b"\x01\x02\x03\x04",
    "x": -1,
    "y": 2,
    "grid": [[1, 2, 3], [4, 5, 6]],
    "name": b"dyn\0\0\0\0\0",
    "d": 0xFFFFFFFE,  # clang 14 emits no signed-enum flag
    "t": 200,
    "w": 0x123456789A,  # ... nor ENUM64: the enumerator is truncated, the value is not
    "ratio": 0.5,
    "precise": -2.25,
    "huge": (0x0123456789ABCDEF << 64) | 0xFEDCBA9876543210,
    "negative": -1234567890123,
    "ptr": 0,
}
EXPECTED_F = [
    {"low": 1, "neg": -16, "straddle": 1, "hue": 1, "on": False, "big": 7, "tail": -3},
    {"low": 7, "neg": 15, "straddle": 0xFFF, "hue": 2, "on": True, "big": 0, "tail": ord("A")},
]


@pytest.mark.needs_clang
def test_clang_struct_with_anonymous_members_arrays_enums_floats(codec_obj: elf.ObjectSpec) -> None:
    var = codec_obj.variables["sample_rec"]
    c = codec_for(codec_obj.btf, var.type_id, size=var.size)
    rec = c.decode(var.initial)
    got = rec._asdict()
    assert [f._asdict() for f in got.pop("f")] == EXPECTED_F
    assert got == EXPECTED_REC
    assert rec.d.name == "MINUS_TWO"
    assert rec.t.name == "T_B"
    assert type(rec.w) is int
    assert c.encode(rec) == var.initial
    # a mapping with one alternative of the anonymous union, enum names, a str for char[8], -2 for the enum
    spelled = {**EXPECTED_REC, "f": EXPECTED_F, "name": "dyn", "d": -2, "t": "T_B"}
    del spelled["as_bytes"]
    assert c.encode(spelled) == var.initial


@pytest.mark.needs_clang
def test_map_key_and_value_codecs_from_the_object(codec_obj: elf.ObjectSpec) -> None:
    m = codec_obj.maps["records"]
    key = codec_for(codec_obj.btf, m.key_type, size=m.key_size)
    value = codec_for(codec_obj.btf, m.value_type, size=m.value_size)
    assert key.name == "struct key3"
    assert key.encode({"a": 1, "b": 2, "c": 3}) == struct.pack("<IHBB", 1, 2, 3, 0)
    assert value.decode(codec_obj.variables["sample_rec"].initial).kind == 0xBEEF


@pytest.mark.needs_clang
def test_maps_fixture_event_and_globals() -> None:
    obj = elf.read(bpfbuild.build("maps"))
    recent = obj.maps["recent"]
    event = codec_for(obj.btf, recent.value_type, size=recent.value_size)
    data = event.encode({"pid": 7, "tgid": 8, "ts": 9, "comm": "bash"})
    assert data == struct.pack("<IIQ", 7, 8, 9) + b"bash" + bytes(12)
    assert event.decode(data).comm.rstrip(b"\0") == b"bash"
    assert codec_for(obj.btf, 0, size=obj.maps["last_event"].value_size).size == 32

    glob = elf.read(bpfbuild.build("globals"))
    values = {}
    for name, var in glob.variables.items():
        c = codec_for(glob.btf, var.type_id, size=var.size)
        values[name] = c.decode(var.initial)
        assert c.encode(values[name]) == var.initial
    assert values["cfg"]._asdict() == {
        "max_events": 4096,
        "port": 8080,
        "enabled": 1,
        "level": 3,
        "window_ns": 1_000_000_000,
    }
    assert values["tag"] == b"dynbpf\0\0"
    assert values["ports"] == [22, 80, 443, 8080]
    assert values["bias"] == -7
    assert values["custom_bytes"] == bytes([1, 2, 3, 4, 5, 6])
    assert values["mask"] == 0xFF00FF00FF00FF00


def test_kernel_types_build_quickly() -> None:
    """The running kernel's biggest structs: unions, bitfields, anonymous members, nested arrays."""
    from dynbpf._btf import Kind, vmlinux

    spec = vmlinux()
    for name in ("task_struct", "sk_buff", "bpf_attr", "perf_event_attr"):
        (type_id,) = [i for i in spec.find(name) if spec.kind(i) in (Kind.STRUCT, Kind.UNION)][:1]
        c = codec_for(spec, type_id)
        assert c.size > 0
        rec = c.decode(bytes(c.size))
        assert c.encode(rec) == bytes(c.size)


# --- global variables over a buffer ---------------------------------------------------------------------


@pytest.mark.needs_clang
def test_rodata_set_before_the_map_exists(globals_obj: elf.ObjectSpec) -> None:
    from dynbpf._maps import Variables

    assert globals_obj.btf is not None
    rodata = globals_obj.maps[".rodata"]
    assert rodata.data is not None
    buf = bytearray(rodata.data)
    view = Variables.of_buffer(buf, globals_obj.btf, section_vars(globals_obj, ".rodata"))
    assert list(view) == ["target_tgid", "sample_every", "cfg", "tag"]
    assert view.target_tgid == 0
    assert view.sample_every == 4
    assert view.cfg.port == 8080
    assert view.tag == b"dynbpf\0\0"
    assert "cfg" in view
    assert "nope" not in view
    assert {"target_tgid", "cfg"} <= set(dir(view))

    view.target_tgid = 4242
    view.cfg = view.cfg._replace(port=443, level=1)
    view["tag"] = "agent"
    assert buf[0:4] == (4242).to_bytes(4, "little")
    cfg = globals_obj.variables["cfg"]
    assert buf[cfg.offset + 4 : cfg.offset + 6] == (443).to_bytes(2, "little")
    assert view._asdict() == {
        "target_tgid": 4242,
        "sample_every": 4,
        "cfg": view.cfg,
        "tag": b"agent\0\0\0",
    }
    assert view.cfg._asdict() == {"max_events": 4096, "port": 443, "enabled": 1, "level": 1, "window_ns": 10**9}
    assert view._type("cfg").name == "struct limits"


@pytest.mark.needs_clang
def test_variable_errors_leave_the_buffer_untouched(globals_obj: elf.ObjectSpec) -> None:
    from dynbpf._maps import Variables

    assert globals_obj.btf is not None
    data = globals_obj.maps[".data"].data
    assert data is not None
    buf = bytearray(data)
    view = Variables.of_buffer(buf, globals_obj.btf, section_vars(globals_obj, ".data"))
    with pytest.raises(CodecError, match=r"^live\.port: 70000 does not fit"):
        view.live = {"max_events": 1, "port": 70000}
    with pytest.raises(CodecError, match=r"^ports: unsigned int\[4\] has 4 elements, got 2"):
        view._update({"seq": 99, "ports": [1, 2]})
    assert buf == data  # neither the struct's first field nor seq was written
    view._update({"seq": 99, "bias": -1})
    assert (view.seq, view.bias) == (99, -1)
    with pytest.raises(
        AttributeError, match=r"this section has no variable 'nope' \(variables: seq, ports, live, bias\)"
    ):
        _ = view.nope
    with pytest.raises(AttributeError):
        view.nope = 1


def test_variables_need_a_writable_buffer_that_holds_them() -> None:
    from dynbpf._maps import Variables

    types = datasec_types(16)
    spec = spec_of(*types)

    class V:
        def __init__(self, name: str, offset: int, size: int, type_id: int) -> None:
            self.name, self.offset, self.size, self.type_id = name, offset, size, type_id

    with pytest.raises(CodecError, match="writable buffer"):
        Variables.of_buffer(b"\0" * 16, spec, [])
    with pytest.raises(CodecError, match=r"^tag: 4 bytes at offset 14 do not fit the 16-byte section"):
        Variables.of_buffer(bytearray(16), spec, [V("tag", 14, 4, 4)])
    with pytest.raises(CodecError, match=r"is 4 bytes, but 8 were expected"):
        Variables.of_buffer(bytearray(16), spec, [V("tag", 0, 8, 4)])
    view = Variables.of_buffer(bytearray(16), spec, [V("hits", 0, 8, 2), V("tag", 8, 4, 4)])
    view.hits = 3
    assert view["hits"] == 3
    assert repr(view) == "<Variables hits, tag>"
