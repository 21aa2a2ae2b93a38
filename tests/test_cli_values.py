"""Values typed on the command line, read per BTF type; and decoded values printed as plain JSON data."""

from __future__ import annotations

import enum

import pytest

from dynbpf._cli.values import ValueSyntaxError, parse
from dynbpf._maps.codec import (
    ArrayCodec,
    BoolCodec,
    BytesCodec,
    CharCodec,
    EnumCodec,
    FloatCodec,
    IntCodec,
    RawCodec,
    StructCodec,
    _Field,
)
from dynbpf._tools.plain import flat, plain, text_or_hex

U32 = IntCodec("unsigned int", 4, False)
S64 = IntCodec("long long", 8, True)
KIND = EnumCodec("enum kind", 4, False, [("EV_EXEC", 1), ("EV_EXIT", 2)])
SETTING = StructCodec(
    "struct setting",
    16,
    [
        _Field("level", 0, U32),
        _Field("on", 4, BoolCodec("_Bool", 1, False)),
        _Field("name", 5, BytesCodec("char[8]", 8, True)),
    ],
)


@pytest.mark.parametrize(
    ("codec", "text", "value"),
    [
        (U32, "42", 42),
        (U32, "0x2a", 42),
        (U32, " 0b101 ", 5),
        (S64, "-7", -7),
        (BoolCodec("_Bool", 1, False), "Yes", True),
        (BoolCodec("_Bool", 1, False), "off", False),
        (KIND, "EV_EXIT", "EV_EXIT"),
        (KIND, "1", 1),
        (CharCodec("char", 1, True), "x", "x"),
        (CharCodec("char", 1, True), "65", 65),
        (FloatCodec("double", 8), "2.5", 2.5),
        (BytesCodec("char[8]", 8, True), " a b", " a b"),
        (ArrayCodec("unsigned int[3]", U32, 3), "1,2,3", [1, 2, 3]),
        (ArrayCodec("unsigned int[3]", U32, 3), "[1, 2, 3]", [1, 2, 3]),
        (SETTING, '{"level": 3, "name": "x"}', {"level": 3, "name": "x"}),
        (RawCodec(4), "0x0a000000", b"\n\0\0\0"),
        (RawCodec(4), "10", b"\n\0\0\0"),
    ],
)
def test_text_reads_as_the_type(codec: object, text: str, value: object) -> None:
    assert parse(codec, text) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "text", "message"),
    [
        (U32, "4x", "'4x' is not an integer for unsigned int (unsigned, 32 bits)"),
        (U32, "-1", "count: -1 does not fit unsigned int (range 0..4294967295)"),
        (BoolCodec("_Bool", 1, False), "2", "'2' is not a bool (true/false, yes/no, on/off, 1/0) for bool"),
        (KIND, "EV_FORK", "'EV_FORK' is not an enumerator of enum kind (EV_EXEC, EV_EXIT) or its number"),
        (BytesCodec("char[4]", 4, True), "hello", "count: char[4] holds 4 bytes, got 5"),
        (SETTING, "{", "'{' is not JSON"),
        (SETTING, '{"lvl": 1}', "struct setting has no field 'lvl' (fields: level, on, name)"),
        (ArrayCodec("unsigned int[3]", U32, 3), "1,2", "unsigned int[3] has 3 elements, got 2"),
        (RawCodec(4), "0xzz", "'0xzz' is not 4 bytes in hex (0x...) or an integer"),
    ],
)
def test_what_does_not_fit_says_what_the_type_takes(codec: object, text: str, message: str) -> None:
    declared = "bool" if isinstance(codec, BoolCodec) else None
    with pytest.raises(ValueSyntaxError) as e:
        parse(codec, text, what="count", declared=declared)  # type: ignore[arg-type]
    assert message in str(e.value)


def test_decoded_values_as_plain_data() -> None:
    record = SETTING.decode(SETTING.encode({"level": 3, "on": True, "name": "abc"}))
    assert plain(record) == {"level": 3, "on": True, "name": "abc"}
    assert plain([b"\x01\x02", enum.IntEnum("K", {"A": 1}).A]) == ["0x0102", "A"]
    assert flat({"a": 1, "b": {"c": "x"}}) == [("a", 1), ("b.c", "x")]


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"bash\0\0\0\0", "bash"),
        (b"\0\0\0\0", ""),
        (b"bash\0xy\0", "0x6261736800787900"),  # bytes after the first NUL: not just text
        (b"\xff\xfe", "0xfffe"),
        (b"\x01\x02", "0x0102"),
        (b"full", "full"),
    ],
)
def test_byte_arrays_read_as_text_only_when_they_hold_text(data: bytes, text: str) -> None:
    assert text_or_hex(data) == text
