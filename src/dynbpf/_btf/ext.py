"""``.BTF.ext``: per-instruction function, line and CO-RE records, grouped by ELF section.

The section holds up to three regions (func_info, line_info, CO-RE
relocations). Each starts with the record size the writer used, followed by
blocks of ``(section name, record count, records)``. Like libbpf, a record
size larger than the one known here is accepted and the unknown tail of each
record skipped, so objects from newer compilers still load.

Instruction offsets stay in bytes, as in the file; strings are resolved
through the object's ``.BTF`` string table.
"""

from __future__ import annotations

import bisect
import enum
import struct
import sys
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeVar

from dynbpf import _section_names as section_names
from dynbpf._btf.errors import EncodingError, NameNotFound
from dynbpf._btf.kinds import BTF_MAGIC
from dynbpf._btf.spec import Spec
from dynbpf.errors import ObjectFormatError

_PREFIX = struct.Struct("<HBBI")  # magic, version, flags, hdr_len
_REGION = struct.Struct("<II")
_U32 = struct.Struct("<I")
_SEC = struct.Struct("<II")  # section name offset, record count
_FUNC = struct.Struct("<II")
_LINE = struct.Struct("<IIII")
_CORE = struct.Struct("<IIII")
_HEADER_V1 = 24  # through line_info_len
_HEADER_CORE = 32  # with core_relo_off/len
_COLUMN_BITS = 10


class CoreReloKind(enum.IntEnum):
    """``enum bpf_core_relo_kind`` (uapi ``linux/bpf.h``)."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


@dataclass(frozen=True, slots=True)
class FuncInfo:
    insn_off: int  # bytes from the start of the ELF section
    type: int  # the FUNC


@dataclass(frozen=True, slots=True)
class LineInfo:
    insn_off: int
    file_name: str
    line: str  # the source line's text
    line_num: int
    column: int


@dataclass(frozen=True, slots=True)
class CoreRelo:
    insn_off: int
    type: int  # the root type in the object's own BTF
    access: str  # "0:1:2": accessor indices from the root
    kind: CoreReloKind


@dataclass(frozen=True, slots=True)
class ExtInfo:
    """All records of one object, keyed by ELF section name (read-only mappings, file order)."""

    func_info: Mapping[str, tuple[FuncInfo, ...]]
    line_info: Mapping[str, tuple[LineInfo, ...]]
    core_relos: Mapping[str, tuple[CoreRelo, ...]]


R = TypeVar("R")
Located = FuncInfo | LineInfo | CoreRelo  # a record at an instruction offset
Kind = Literal["func", "line", "core"]
_REGIONS: tuple[tuple[Kind, str, struct.Struct], ...] = (
    ("func", "func_info", _FUNC),
    ("line", "line_info", _LINE),
    ("core", "CO-RE relocation", _CORE),
)
_RECORD = {kind: record for kind, _, record in _REGIONS}
_LAST_CORE_KIND = max(CoreReloKind)


class ExtIndex:
    """``.BTF.ext`` with its structure checked and its records decoded only where asked.

    A large object carries a line record for every few instructions (73,000
    in a 245-program agent); decoding them all costs more than a selective
    load. The index checks the header and every block at once, then decodes
    the records of one section and instruction range on request
    (:meth:`records`), each record's strings checked as it is decoded.
    Safe to use from several threads: the per-section indexes it builds are
    equal whoever builds them.
    """

    def __init__(self, data: bytes, btf: Spec, *, section: str = section_names.BTF_EXT) -> None:
        self._parser = p = _Parser(bytes(data), btf, section)
        data = p.data
        if len(data) < _PREFIX.size:
            raise p.fail(".BTF.ext shorter than its header", 0)
        magic, version, flags, hdr_len = _PREFIX.unpack_from(data)
        if magic != BTF_MAGIC:
            raise p.fail(f"bad .BTF.ext magic {magic:#06x}", 0)
        if version != 1:
            raise p.fail(f"unsupported .BTF.ext version {version}", 2)
        if flags:
            raise p.fail(f"unknown .BTF.ext flags {flags:#x}", 3)
        if hdr_len < _HEADER_V1 or hdr_len > len(data):
            raise p.fail(f"bad .BTF.ext header length {hdr_len}", 4)
        regions = [_REGION.unpack_from(data, 8), _REGION.unpack_from(data, 16)]
        regions.append(_REGION.unpack_from(data, 24) if hdr_len >= _HEADER_CORE else (0, 0))
        self._blocks: dict[Kind, dict[str, list[tuple[int, int]]]] = {}
        self._sizes: dict[Kind, int] = {}
        for i, ((kind, what, record), (off, length)) in enumerate(zip(_REGIONS, regions, strict=True)):
            if hdr_len + off + length > len(data):
                raise p.fail(f"{what} region runs past the end", 8 + 8 * i)
            self._blocks[kind], self._sizes[kind] = p.blocks(what, hdr_len + off, length, record)
        self._sorted: dict[tuple[Kind, str], tuple[array[int], array[int]]] = {}  # record positions, offsets

    def sections(self, kind: Kind) -> list[str]:
        return list(self._blocks[kind])

    def records(self, kind: Kind, section: str, start: int = 0, end: int | None = None) -> list[Located]:
        """The records of ``section`` at instruction byte offsets [start, end), by offset (file order for ties)."""
        found = self._sorted.get((kind, section))
        if found is None:
            every = [
                at
                for pos, count in self._blocks[kind].get(section, ())
                for at in range(pos, pos + count * self._sizes[kind], self._sizes[kind])
            ]
            data = self._parser.data
            every.sort(key=lambda at: _U32.unpack_from(data, at)[0])  # stable: file order among equals
            offsets = array("I", [_U32.unpack_from(data, at)[0] for at in every])
            found = self._sorted[(kind, section)] = (array("I", every), offsets)
        positions, offsets = found
        lo = bisect.bisect_left(offsets, start)
        hi = len(offsets) if end is None else bisect.bisect_left(offsets, end)
        decode, record = self._decoder(kind), _RECORD[kind]
        return [decode(record.unpack_from(self._parser.data, at), at) for at in positions[lo:hi]]

    def line_words(self, section: str, start: int, end: int) -> array[int]:
        """The line records of ``section`` in [start, end) as the kernel's ``bpf_line_info`` words.

        Instruction offsets become slots from ``start``; string offsets stay
        the object's (its BTF keeps them), so nothing is decoded: a load
        needs no ``LineInfo`` objects. Strings are only checked to lie in the
        string table.
        """
        self.records("line", section, start, start)  # builds the sorted index
        positions, offsets = self._sorted[("line", section)]
        lo, hi = bisect.bisect_left(offsets, start), bisect.bisect_left(offsets, end)
        data, limit = self._parser.data, self._parser.btf.strings.end_offset
        words: array[int] = array("I", b"".join(data[at : at + _LINE.size] for at in positions[lo:hi]))
        if sys.byteorder != "little":
            words.byteswap()
        if words and (max(words[1::4]) >= limit or max(words[2::4]) >= limit):
            raise self._parser.fail(f"a line_info record of {section} names a string outside .BTF", None)
        if any((off - start) % 8 for off in words[0::4]):
            raise self._parser.fail(f"a line_info record of {section} is not at an instruction", None)
        words[0::4] = array("I", [(off - start) // 8 for off in words[0::4]])
        return words

    def _decoder(self, kind: Kind) -> Callable[[tuple[int, ...], int], Located]:
        p = self._parser
        if kind == "line":
            return p.line
        if kind == "core":
            return p.core
        return lambda r, at: FuncInfo(r[0], r[1])

    def all(self) -> ExtInfo:
        """Every record, by section in file order: :class:`ExtInfo`."""
        return ExtInfo(*(MappingProxyType(self._in_file_order(kind)) for kind, _, _ in _REGIONS))  # type: ignore[arg-type]

    def _in_file_order(self, kind: Kind) -> dict[str, tuple[Located, ...]]:
        decode, size, record = self._decoder(kind), self._sizes[kind], _RECORD[kind]
        data = self._parser.data
        return {
            name: tuple(
                decode(record.unpack_from(data, at), at)
                for pos, count in blocks
                for at in range(pos, pos + count * size, size)
            )
            for name, blocks in self._blocks[kind].items()
        }


class _Parser:
    def __init__(self, data: bytes, btf: Spec, section: str) -> None:
        self.data = data
        self.btf = btf
        self.section = section
        self._strings: dict[int, str] = {}  # line records repeat file names and lines: look each up once

    def fail(self, message: str, offset: int | None) -> ObjectFormatError:
        return ObjectFormatError(message, section=self.section, offset=offset)

    def string(self, offset: int, at: int) -> str:
        found = self._strings.get(offset)
        if found is not None:
            return found
        try:
            found = self._strings[offset] = self.btf.string(offset)
        except ObjectFormatError:
            raise self.fail(f"string offset {offset} is outside the .BTF string table", at) from None
        return found

    def blocks(
        self, what: str, start: int, length: int, record: struct.Struct
    ) -> tuple[dict[str, list[tuple[int, int]]], int]:
        """Where each section's records are: ``{section: [(position, count)...]}``, and the record size."""
        out: dict[str, list[tuple[int, int]]] = {}
        if length == 0:
            return out, record.size
        end = start + length
        if length < 4:
            raise self.fail(f"{what} region shorter than its record size field", start)
        (rec_size,) = _U32.unpack_from(self.data, start)
        if rec_size < record.size or rec_size % 4:
            raise self.fail(f"{what} record size {rec_size} (need a multiple of 4, at least {record.size})", start)
        pos = start + 4
        while pos < end:
            if pos + _SEC.size > end:
                raise self.fail(f"truncated {what} section header", pos)
            name_off, count = _SEC.unpack_from(self.data, pos)
            if count == 0:
                raise self.fail(f"{what} block without records", pos)
            name = self.string(name_off, pos)
            pos += _SEC.size
            if count > (end - pos) // rec_size:
                raise self.fail(f"{what} block of {count} records runs past the region", pos)
            out.setdefault(name, []).append((pos, count))  # a linked object has a block per input file
            pos += count * rec_size
        return out, rec_size

    def line(self, rec: tuple[int, ...], at: int) -> LineInfo:
        insn_off, file_off, line_off, line_col = rec
        return LineInfo(
            insn_off,
            self.string(file_off, at),
            self.string(line_off, at),
            line_col >> _COLUMN_BITS,
            line_col & ((1 << _COLUMN_BITS) - 1),
        )

    def core(self, rec: tuple[int, ...], at: int) -> CoreRelo:
        insn_off, type_id, access_off, kind = rec
        if kind > _LAST_CORE_KIND:
            raise self.fail(f"unknown CO-RE relocation kind {kind}", at)
        return CoreRelo(insn_off, type_id, self.string(access_off, at), CoreReloKind(kind))


def parse_ext(data: bytes, btf: Spec, *, section: str = section_names.BTF_EXT) -> ExtInfo:
    """Decode all of ``.BTF.ext``; ``btf`` is the same object's ``.BTF`` (it holds the strings)."""
    return ExtIndex(data, btf, section=section).all()


def encode_ext(ext: ExtInfo, btf: Spec) -> bytes:
    """``.BTF.ext`` for ``ext`` in LLVM's layout; every string must already be in ``btf``."""

    def string(s: str) -> int:
        off = btf.strings.find(s)
        if off is None:
            raise NameNotFound(f"string {s!r} is not in the BTF string table; .BTF.ext cannot add strings")
        return off

    def region(
        groups: Mapping[str, tuple[R, ...]], record: struct.Struct, fields: Callable[[R], tuple[int, ...]]
    ) -> bytes:
        out = [_U32.pack(record.size)]
        for name, recs in groups.items():
            if recs:
                out.append(_SEC.pack(string(name), len(recs)))
                out.extend(record.pack(*fields(r)) for r in recs)
        return b"".join(out)

    def line(r: LineInfo) -> tuple[int, ...]:
        if not 0 <= r.column < 1 << _COLUMN_BITS or not 0 <= r.line_num < 1 << (32 - _COLUMN_BITS):
            raise EncodingError(f"line_info {r}: line or column out of range")
        return r.insn_off, string(r.file_name), string(r.line), (r.line_num << _COLUMN_BITS) | r.column

    try:
        func = region(ext.func_info, _FUNC, lambda r: (r.insn_off, r.type))
        lines = region(ext.line_info, _LINE, line)
        core = region(ext.core_relos, _CORE, lambda r: (r.insn_off, r.type, string(r.access), int(r.kind)))
    except struct.error as e:
        raise EncodingError(f"cannot encode .BTF.ext: {e}") from None
    if not any(ext.core_relos.values()):
        core = b""  # LLVM omits an empty CO-RE region but keeps its offset
    header = _PREFIX.pack(BTF_MAGIC, 1, 0, _HEADER_CORE) + struct.pack(
        "<6I", 0, len(func), len(func), len(lines), len(func) + len(lines), len(core)
    )
    return header + func + lines + core
