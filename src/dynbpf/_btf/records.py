"""The on-disk layout of each kind: one type record to a Type, and back.

A record is a 12-byte ``struct btf_type`` (name offset, info word, size or
type) followed by a kind-specific tail; everything is 32-bit words, which is
how both directions address it. Decoding is as strict as the kernel about
bits that carry no meaning (unused info bits, vlen or kind flag on kinds
without them, reserved INT bits): rejecting them is what makes
``encode(decode(x)) == x`` hold for every accepted record.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

from dynbpf._btf.errors import EncodingError
from dynbpf._btf.kinds import TRAILER, Kind, info
from dynbpf._btf.strings import StringTable
from dynbpf._btf.types import (
    Array,
    Const,
    Datasec,
    DeclTag,
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
    Param,
    Ptr,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarLinkage,
    VarSecinfo,
    Volatile,
)
from dynbpf.errors import ObjectFormatError

_INFO_UNUSED = 0x60FF0000  # info bits 16-23 and 29-30
_INT_UNUSED = 0xF000FF00
_INT_ENCODINGS = 0x7

#: kinds a type record may have (UNKN, 0, is only void's kind)
TYPE_KINDS = frozenset(k for k in Kind if k is not Kind.UNKN)

#: words per record: fixed part (header included) and per vlen entry; unknown kinds jump out of any section
FIXED_WORDS = [1 << 40] * 32
ENTRY_WORDS = [0] * 32
for _kind in Kind:
    if _kind is not Kind.UNKN:
        _fixed, _per = TRAILER.get(_kind, (0, 0))
        FIXED_WORDS[_kind] = 3 + _fixed // 4
        ENTRY_WORDS[_kind] = _per // 4

_KINDS_WITH_VLEN = frozenset(
    {Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FUNC_PROTO, Kind.DATASEC, Kind.FUNC}
)
_KINDS_WITH_FLAG = frozenset({Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FWD, Kind.TYPE_TAG, Kind.DECL_TAG})


def record_words(info_word: int) -> int:
    """Length in words of the record with this info word (huge for unknown kinds)."""
    kind = (info_word >> 24) & 0x1F
    return FIXED_WORDS[kind] + ENTRY_WORDS[kind] * (info_word & 0xFFFF)


class Record:
    """One raw record being decoded: its header fields, its tail, and where it is (for errors)."""

    __slots__ = ("at", "flag", "name_off", "section", "size", "strings", "tail", "type_id", "vlen", "words")

    def __init__(self, words: Sequence[int], pos: int, strings: StringTable, *, section: str, at: int, type_id: int):
        self.words = words
        self.tail = pos + 3
        self.strings = strings
        self.section = section
        self.at = at
        self.type_id = type_id
        self.name_off = words[pos]
        info_word = words[pos + 1]
        self.size = words[pos + 2]  # or the referenced type
        self.vlen = info_word & 0xFFFF
        self.flag = bool(info_word >> 31)
        kind = (info_word >> 24) & 0x1F
        if info_word & _INFO_UNUSED:
            raise self.fail(f"reserved info bits set ({info_word:#010x})")
        if self.vlen and kind not in _KINDS_WITH_VLEN:
            raise self.fail(f"{Kind(kind).name} with vlen {self.vlen}")
        if self.flag and kind not in _KINDS_WITH_FLAG:
            raise self.fail(f"{Kind(kind).name} with the kind flag set")

    def name(self, offset: int | None = None) -> str:
        """The string at ``offset``, by default the record's own name."""
        return self.strings.get(self.name_off if offset is None else offset, section=self.section, at=self.at)

    def optional_name(self) -> str:
        return self.name() if self.name_off else ""

    def entries(self, width: int) -> range:
        """Word positions of the vlen entries of ``width`` words each."""
        return range(self.tail, self.tail + width * self.vlen, width)

    def fail(self, message: str) -> ObjectFormatError:
        return ObjectFormatError(f"type [{self.type_id}]: {message}", section=self.section, offset=self.at)


def decode(words: Sequence[int], pos: int, strings: StringTable, *, section: str, at: int, type_id: int) -> Type:
    """The type whose record starts at word ``pos`` (the caller checked that it fits)."""
    r = Record(words, pos, strings, section=section, at=at, type_id=type_id)
    return _BY_NUMBER[(words[pos + 1] >> 24) & 0x1F](r)


Decoder = Callable[[Record], Type]


def _int(r: Record) -> Type:
    data = r.words[r.tail]
    if data & _INT_UNUSED:
        raise r.fail(f"INT with reserved bits set ({data:#010x})")
    encoding = (data >> 24) & 0xF
    if encoding & ~_INT_ENCODINGS:
        raise r.fail(f"INT with unknown encoding {encoding:#x}")
    return Int(r.name(), r.size, IntEncoding(encoding), (data >> 16) & 0xFF, data & 0xFF)


def _ptr(r: Record) -> Type:
    return Ptr(r.size, r.optional_name())


def _array(r: Record) -> Type:
    if r.size:
        raise r.fail(f"ARRAY with size {r.size} (must be 0)")
    w, p = r.words, r.tail
    return Array(w[p], w[p + 1], w[p + 2], r.optional_name())


def _members(r: Record) -> tuple[Member, ...]:
    w, name = r.words, r.name
    if r.flag:
        return tuple(Member(name(w[i]), w[i + 1], w[i + 2] & 0xFFFFFF, w[i + 2] >> 24) for i in r.entries(3))
    return tuple(Member(name(w[i]), w[i + 1], w[i + 2]) for i in r.entries(3))


def _struct(r: Record) -> Type:
    return Struct(r.name(), r.size, _members(r))


def _union(r: Record) -> Type:
    return Union(r.name(), r.size, _members(r))


def _signed32(value: int) -> int:
    return value - ((value & 0x80000000) << 1)


def _enum(r: Record) -> Type:
    w, name = r.words, r.name
    if r.flag:
        values = tuple(EnumValue(name(w[i]), _signed32(w[i + 1])) for i in r.entries(2))
    else:
        values = tuple(EnumValue(name(w[i]), w[i + 1]) for i in r.entries(2))
    return Enum(r.name(), r.size, r.flag, values)


def _enum64(r: Record) -> Type:
    w, values = r.words, []
    for i in r.entries(3):
        value = w[i + 1] | (w[i + 2] << 32)
        if r.flag and value >> 63:
            value -= 1 << 64
        values.append(EnumValue(r.name(w[i]), value))
    return Enum64(r.name(), r.size, r.flag, tuple(values))


def _fwd(r: Record) -> Type:
    if r.size:
        raise r.fail(f"FWD with type {r.size} (must be 0)")
    return Fwd(r.name(), r.flag)


def _typedef(r: Record) -> Type:
    return Typedef(r.name(), r.size)


def _volatile(r: Record) -> Type:
    return Volatile(r.size, r.optional_name())


def _const(r: Record) -> Type:
    return Const(r.size, r.optional_name())


def _restrict(r: Record) -> Type:
    return Restrict(r.size, r.optional_name())


def _func(r: Record) -> Type:
    if r.vlen > FuncLinkage.EXTERN:
        raise r.fail(f"FUNC with unknown linkage {r.vlen}")
    return Func(r.name(), r.size, FuncLinkage(r.vlen))


def _func_proto(r: Record) -> Type:
    w, name = r.words, r.name
    return FuncProto(r.size, tuple(Param(name(w[i]), w[i + 1]) for i in r.entries(2)), r.optional_name())


def _var(r: Record) -> Type:
    linkage = r.words[r.tail]
    if linkage > VarLinkage.GLOBAL_EXTERN:
        raise r.fail(f"VAR with unknown linkage {linkage}")
    return Var(r.name(), r.size, VarLinkage(linkage))


def _datasec(r: Record) -> Type:
    w = r.words
    return Datasec(r.name(), r.size, tuple(VarSecinfo(w[i], w[i + 1], w[i + 2]) for i in r.entries(3)))


def _float(r: Record) -> Type:
    return Float(r.name(), r.size)


def _decl_tag(r: Record) -> Type:
    return DeclTag(r.name(), r.size, _signed32(r.words[r.tail]), r.flag)


def _type_tag(r: Record) -> Type:
    return TypeTag(r.name(), r.size, r.flag)


def _unknown(r: Record) -> Type:
    raise r.fail("BTF kind 0 (UNKN) is not a type")


_DECODERS: dict[Kind, Decoder] = {
    Kind.UNKN: _unknown,
    Kind.INT: _int,
    Kind.PTR: _ptr,
    Kind.ARRAY: _array,
    Kind.STRUCT: _struct,
    Kind.UNION: _union,
    Kind.ENUM: _enum,
    Kind.FWD: _fwd,
    Kind.TYPEDEF: _typedef,
    Kind.VOLATILE: _volatile,
    Kind.CONST: _const,
    Kind.RESTRICT: _restrict,
    Kind.FUNC: _func,
    Kind.FUNC_PROTO: _func_proto,
    Kind.VAR: _var,
    Kind.DATASEC: _datasec,
    Kind.FLOAT: _float,
    Kind.DECL_TAG: _decl_tag,
    Kind.TYPE_TAG: _type_tag,
    Kind.ENUM64: _enum64,
}
_BY_NUMBER: list[Decoder] = [_unknown] * 32
for _kind, _decoder in _DECODERS.items():
    _BY_NUMBER[_kind] = _decoder


class StringWriter:
    """String offsets for encoding: existing strings keep theirs, new ones are appended."""

    __slots__ = ("_added", "_next", "_table")

    def __init__(self, table: StringTable) -> None:
        self._table = table
        self._added: dict[str, int] = {}
        self._next = table.end_offset

    def add(self, s: str) -> int:
        if not s:
            return 0
        found = self._table.find(s)
        if found is not None:
            return found
        off = self._added.get(s)
        if off is None:
            off = self._added[s] = self._next
            self._next += len(s.encode("utf-8", "surrogateescape")) + 1
        return off

    def appended(self) -> bytes:
        """The strings added, in offset order, each NUL-terminated."""
        return b"".join(s.encode("utf-8", "surrogateescape") + b"\0" for s in self._added)


def encode(t: Type, add: Callable[[str], int], out: array[int]) -> None:
    """Append ``t``'s record to ``out``; EncodingError (and ``out`` unusable) if a field does not fit."""
    try:
        _encode(t, add, out)
    except (OverflowError, TypeError, AttributeError) as e:  # a field of the wrong type, or not a Type
        raise EncodingError(f"cannot encode {t!r}: {e}") from None


def _vlen(t: Type, n: int) -> int:
    if n > 0xFFFF:
        raise EncodingError(f"{t.kind.name} {t.name!r} has {n} entries; BTF allows at most 65535")
    return n


def _encode(t: Type, add: Callable[[str], int], out: array[int]) -> None:
    name = add(t.name)
    match t:
        case Int():
            if t.bit_offset > 0xFF or t.bits > 0xFF or int(t.encoding) & ~_INT_ENCODINGS:
                raise EncodingError(f"INT {t.name!r}: offset, bits or encoding out of range")
            out.extend((name, info(Kind.INT), t.size, (int(t.encoding) << 24) | (t.bit_offset << 16) | t.bits))
        case Ptr() | Typedef() | Volatile() | Const() | Restrict():
            out.extend((name, info(t.kind), t.type))
        case TypeTag():
            out.extend((name, info(Kind.TYPE_TAG, 0, t.attribute), t.type))
        case Array():
            out.extend((name, info(Kind.ARRAY), 0, t.type, t.index_type, t.nelems))
        case Struct() | Union():
            flag = any(m.bitfield_size for m in t.members)
            out.extend((name, info(t.kind, _vlen(t, len(t.members)), flag), t.size))
            for m in t.members:
                if flag:
                    if m.bit_offset > 0xFFFFFF or m.bitfield_size > 0xFF:
                        raise EncodingError(f"member {m.name!r} of {t.name!r}: bitfield offset or size out of range")
                    offset = (m.bitfield_size << 24) | m.bit_offset
                else:
                    offset = m.bit_offset
                out.extend((add(m.name), m.type, offset))
        case Enum():
            out.extend((name, info(Kind.ENUM, _vlen(t, len(t.values)), t.signed), t.size))
            for v in t.values:
                out.extend((add(v.name), v.value & 0xFFFFFFFF if -(1 << 31) <= v.value < 0 else v.value))
        case Enum64():
            out.extend((name, info(Kind.ENUM64, _vlen(t, len(t.values)), t.signed), t.size))
            for v in t.values:
                value = v.value & 0xFFFFFFFFFFFFFFFF if -(1 << 63) <= v.value < 0 else v.value
                out.extend((add(v.name), value & 0xFFFFFFFF, value >> 32))
        case Fwd():
            out.extend((name, info(Kind.FWD, 0, t.union), 0))
        case Func():
            out.extend((name, info(Kind.FUNC, int(t.linkage)), t.type))
        case FuncProto():
            out.extend((name, info(Kind.FUNC_PROTO, _vlen(t, len(t.params))), t.return_type))
            for p in t.params:
                out.extend((add(p.name), p.type))
        case Var():
            out.extend((name, info(Kind.VAR), t.type, int(t.linkage)))
        case Datasec():
            out.extend((name, info(Kind.DATASEC, _vlen(t, len(t.vars))), t.size))
            for secinfo in t.vars:
                out.extend((secinfo.type, secinfo.offset, secinfo.size))
        case Float():
            out.extend((name, info(Kind.FLOAT), t.size))
        case DeclTag():
            idx = t.component_idx & 0xFFFFFFFF if -(1 << 31) <= t.component_idx < 0 else t.component_idx
            out.extend((name, info(Kind.DECL_TAG, 0, t.attribute), t.type, idx))
        case _:
            raise EncodingError(f"not a BTF type: {t!r}")
