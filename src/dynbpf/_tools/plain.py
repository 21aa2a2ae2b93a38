"""Decoded map and event values as plain JSON data, for printing and for machines.

The codecs hand out :class:`~dynbpf.Record` objects, ``IntEnum`` members,
``bytes`` for byte arrays and lists for arrays and per-CPU values; JSON has
none of the first three. A byte array holding text (``char comm[16]``: text,
then NULs) reads as that text; any other is a hex string, so both stay
readable and neither loses information.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from dynbpf._maps.record import Record


def plain(value: Any) -> Any:
    """``value`` as JSON-able data: records are dicts, enum members their names, byte arrays text or hex."""
    if isinstance(value, Record):
        return {name: plain(item) for name, item in value._items()}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return text_or_hex(bytes(value))
    if isinstance(value, Mapping):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return str(value)


def text_or_hex(data: bytes) -> str:
    """The text a NUL-padded byte array holds (``""`` when all zero), else ``0x`` and its hex digits."""
    text, nul, rest = data.partition(b"\0")
    if text and (not nul or not rest.strip(b"\0")):
        try:
            decoded: str | None = text.decode()
        except UnicodeDecodeError:
            decoded = None
        if decoded is not None and decoded.isprintable():
            return decoded
    if not data.strip(b"\0"):
        return ""  # all zero: an empty string, as C reads it
    return "0x" + data.hex()


def flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.name, leaf)`` pairs of a plain value's nested dicts, for one-line text output."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for name, item in value.items():
            out += flat(item, f"{prefix}{name}.")
        return out
    return [(prefix.rstrip("."), value)]
