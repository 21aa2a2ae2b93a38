"""A BTF string table: NUL-terminated strings addressed by byte offset.

Split BTF continues its base's offsets: offset ``len(base)`` is the first
byte of the split table's own strings. Strings are decoded as UTF-8 with
``surrogateescape``, so any byte sequence (a source line in Latin-1 quoted by
line_info) decodes without error and encodes back to the same bytes.
"""

from __future__ import annotations

import threading
from sys import intern

from dynbpf.errors import ObjectFormatError


class StringTable:
    """One BTF blob's own strings, on top of its base's."""

    __slots__ = ("_base", "_data", "_end", "_index", "_lock", "_start", "first_offset", "section")

    def __init__(self, data: bytes, start: int, end: int, *, base: StringTable | None, section: str) -> None:
        self._data = data
        self._start = start
        self._end = end
        self._base = base
        self.section = section
        self.first_offset = base.end_offset if base is not None else 0
        self._index: dict[str, int] | None = None
        self._lock = threading.Lock()

    @property
    def end_offset(self) -> int:
        """One past the last offset of this table (where a split table on top of it starts)."""
        return self.first_offset + self._end - self._start

    def own_bytes(self) -> bytes:
        """This table's strings, exactly as stored."""
        return self._data[self._start : self._end]

    def get(self, offset: int, *, section: str | None = None, at: int | None = None) -> str:
        """The string at ``offset``; a bad offset is an ObjectFormatError blamed on ``section``/``at``."""
        if offset < self.first_offset:
            if self._base is None or offset < 0:
                raise ObjectFormatError(f"negative string offset {offset}", section=section or self.section, offset=at)
            return self._base.get(offset, section=section, at=at)
        start = self._start + offset - self.first_offset
        if start >= self._end:
            raise ObjectFormatError(
                f"string offset {offset} is past the string table (ends at {self.end_offset})",
                section=section or self.section,
                offset=at,
            )
        stop = self._data.find(b"\0", start, self._end)
        if stop < 0:  # parse() checks the table ends with NUL; this guards hand-built tables
            raise ObjectFormatError(
                f"unterminated string at offset {offset}", section=section or self.section, offset=at
            )
        return intern(self._data[start:stop].decode("utf-8", "surrogateescape"))

    def offsets_of(self, s: str) -> list[int]:
        """Every offset whose string is ``s`` (a shared suffix counts), the base's first, ascending."""
        out = self._base.offsets_of(s) if self._base is not None else []
        needle = s.encode("utf-8", "surrogateescape") + b"\0"
        data, start, end = self._data, self._start, self._end
        at = data.find(needle, start, end)
        while at >= 0:
            out.append(at - start + self.first_offset)
            at = data.find(needle, at + 1, end)
        return out

    def find(self, s: str) -> int | None:
        """Offset of ``s`` (the base's copy first, as libbpf prefers), or None."""
        if self._base is not None:
            found = self._base.find(s)
            if found is not None:
                return found
        return self.index().get(s)

    def index(self) -> dict[str, int]:
        """Own strings to their first offset, built once (encoding needs it, lookups do not)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    index: dict[str, int] = {}
                    offset = self.first_offset
                    pieces = self.own_bytes().split(b"\0")
                    pieces.pop()  # after the last NUL: empty, or an unterminated tail
                    for raw in pieces:
                        index.setdefault(raw.decode("utf-8", "surrogateescape"), offset)
                        offset += len(raw) + 1
                    self._index = index
        return self._index
