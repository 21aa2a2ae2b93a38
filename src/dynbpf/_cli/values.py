"""Values typed on the command line, read as the BTF type they are for (a constant, a map's key or value).

The codec of the type decides: integers (decimal, ``0x``, ``0o``, ``0b``,
negative for signed types), bools (``true``/``false``, ``yes``/``no``,
``on``/``off``, ``1``/``0``), enums (an enumerator's name or its number),
floats, byte arrays (``char name[8]``: the text itself, UTF-8), and for
structs and arrays JSON (``{"level": 3, "on": true}``, ``[1, 2]``). A map
without BTF takes hex bytes (``0x0a000000``) or an integer, written in the
kernel's byte order in the key or value's size. Every value is encoded once
here, so a value that does not fit is refused before anything is loaded.
"""

from __future__ import annotations

import json
from typing import Any

from dynbpf._maps.codec import (
    ArrayCodec,
    BoolCodec,
    BytesCodec,
    CharCodec,
    Codec,
    EnumCodec,
    FloatCodec,
    RawCodec,
    ScalarCodec,
    StructCodec,
)
from dynbpf._maps.errors import CodecError

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class ValueSyntaxError(ValueError):
    """Text that is not a value of the type it is for; the message says what the type takes."""


def expected(codec: Codec, declared: str | None = None) -> str:
    """What text ``codec`` takes, for messages; ``declared`` is the type's name in the source (``u32``)."""
    name = declared or codec.name
    if isinstance(codec, BoolCodec):
        return f"a bool (true/false, yes/no, on/off, 1/0) for {name}"
    if isinstance(codec, EnumCodec):
        names = ", ".join(list(codec.by_name)[:8]) + (", ..." if len(codec.by_name) > 8 else "")
        return f"an enumerator of {name} ({names}) or its number"
    if isinstance(codec, CharCodec):
        return f"one character or a number for {name}"
    if isinstance(codec, FloatCodec):
        return f"a number for {name}"
    if isinstance(codec, BytesCodec):
        return f"text of at most {codec.size} bytes for {name}"
    if isinstance(codec, StructCodec):
        return f"a JSON object for {name} (fields: {', '.join(codec.record._fields)})"
    if isinstance(codec, ArrayCodec):
        return f"a JSON list or comma-separated elements for {name}"
    if isinstance(codec, RawCodec):
        return f"{codec.size} bytes in hex (0x...) or an integer (the map has no BTF type for it)"
    if isinstance(codec, ScalarCodec):
        sign = "signed" if codec.signed else "unsigned"
        return f"an integer for {name} ({sign}, {8 * codec.size} bits)"
    return f"a value of {name}"


def parse(codec: Codec, text: str, *, what: str = "value", declared: str | None = None) -> Any:
    """The value ``text`` stands for as ``codec``'s type, checked to encode; :class:`ValueSyntaxError` if not.

    ``what`` names the value in messages (a constant's name), ``declared`` its type as the source spells it.
    """
    value = _read(codec, text.strip() if not isinstance(codec, BytesCodec) else text, declared)
    try:
        codec.encode(value, path=what)
    except CodecError as e:
        raise ValueSyntaxError(f"{e}; expected {expected(codec, declared)}") from None
    return value


def _read(codec: Codec, text: str, declared: str | None = None) -> Any:
    json_text = text.startswith(("[", "{")) and not isinstance(codec, BytesCodec)
    if isinstance(codec, StructCodec | ArrayCodec) or json_text:
        if isinstance(codec, ArrayCodec) and not text.startswith("["):
            return [_read(codec.element, part) for part in text.split(",")]
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueSyntaxError(f"{text!r} is not JSON ({e.msg}); expected {expected(codec, declared)}") from None
    if isinstance(codec, BytesCodec):
        return text
    if isinstance(codec, RawCodec):
        return _raw(codec, text)
    if isinstance(codec, BoolCodec):
        word = text.lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueSyntaxError(f"{text!r} is not {expected(codec, declared)}")
    if isinstance(codec, EnumCodec) and text in codec.by_name:
        return text
    if isinstance(codec, CharCodec) and len(text.encode()) == 1 and not text.isdigit():
        return text
    if isinstance(codec, FloatCodec):
        try:
            return float(text)
        except ValueError:
            raise ValueSyntaxError(f"{text!r} is not {expected(codec, declared)}") from None
    try:
        return int(text, 0)
    except ValueError:
        raise ValueSyntaxError(f"{text!r} is not {expected(codec, declared)}") from None


def _raw(codec: RawCodec, text: str) -> bytes:
    digits = text.removeprefix("0x").replace(" ", "")
    if text.startswith("0x") and len(digits) == 2 * codec.size:
        try:
            return bytes.fromhex(digits)
        except ValueError:
            pass
    else:
        try:
            number = int(text, 0)
        except ValueError:
            number = None
        if number is not None:
            try:
                return number.to_bytes(codec.size, "little", signed=number < 0)
            except OverflowError:
                raise ValueSyntaxError(f"{number} does not fit {codec.size} bytes") from None
    raise ValueSyntaxError(f"{text!r} is not {expected(codec)}")
