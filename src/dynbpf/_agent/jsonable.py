"""Decoded map values and event records as JSON values, for the control API.

Records become objects, arrays lists, enum members their names. Bytes
(``char comm[16]``, an undecoded record) become text when they are a
printable string padded with NULs, as C strings are; any other bytes
become ``"0x"`` and their hex digits, so nothing is lost.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from dynbpf._maps.record import Record


def jsonable(value: Any) -> Any:
    """``value`` (as a map view or event reader decodes it) made of JSON's types only."""
    if isinstance(value, Record):
        return {name: jsonable(item) for name, item in value._asdict().items()}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytes(bytes(value))
    if isinstance(value, Mapping):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return str(value)


def _bytes(raw: bytes) -> str:
    text, _, padding = raw.partition(b"\0")
    if text and not padding.strip(b"\0"):
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if decoded.isprintable():
                return decoded
    return "0x" + raw.hex()
