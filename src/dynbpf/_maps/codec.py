"""Python values to and from the bytes of a BTF type.

:func:`codec_for` turns a BTF type into a :class:`Codec`, built once and then
used for every key or value of a map. What each kind becomes:

========================  ==========================================================
BTF                       Python
========================  ==========================================================
integers (any size)       ``int``; ``_Bool`` is ``bool``; a lone ``char`` is ``int``
                          (encode also takes a one-byte ``bytes`` or ``str``)
enums                     a member of an ``IntEnum`` made for the BTF enum
                          (:attr:`EnumCodec.enum_type`); a value with no enumerator
                          decodes to a plain ``int``. Encode takes a member, an
                          ``int`` or an enumerator name.
pointers                  ``int`` (the address)
floats                    ``float`` (16-byte ``long double`` stays raw ``bytes``)
arrays                    ``list``; arrays of 1-byte integers (``char``, ``__u8``)
                          are ``bytes``, encoded from ``bytes`` or ``str`` (UTF-8),
                          zero-padded when shorter; with ``strings=True``, ``char``
                          arrays (text, not ``__u8`` data) decode to ``str`` up to
                          their first NUL
structs, unions           a :class:`~dynbpf._maps.record.Record` with a field per
                          member, anonymous members flattened as C does; encode
                          from a record or a mapping (missing fields are zero)
bitfields                 as their type (``int``, ``bool``, enum), range-checked
typedefs, qualifiers      what they stand for; a VAR is its variable's type
DATASEC                   a record of its variables (once its offsets are fixed)
no BTF (type id 0)        :class:`RawCodec`: ``bytes`` of the map's size
========================  ==========================================================

Byte order is little-endian: dynbpf only reads little-endian BTF.

Malformed BTF (loops, dangling ids, members outside their struct) is
:class:`~dynbpf.errors.ObjectFormatError`; asking for a codec of something
that has no value (``void``, a function) and values that do not fit are
:class:`~dynbpf._maps.errors.CodecError`.
"""

from __future__ import annotations

import abc
import enum
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dynbpf._btf.errors import TypeNotFound
from dynbpf._btf.graph import format_type, resolve
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import (
    Array,
    Datasec,
    Enum,
    Enum64,
    Float,
    Int,
    IntEncoding,
    Member,
    Ptr,
    Struct,
    Union,
    Var,
)
from dynbpf._maps.errors import CodecError
from dynbpf._maps.record import Record, record_type
from dynbpf.errors import ObjectFormatError

ReadableBuffer = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview

#: types nested deeper than this are refused as too deep to decode (a loop is found, and named, as such)
MAX_NESTING = 64
_U32_MAX = 0xFFFFFFFF
#: decoding an array of empty structs makes a list without reading a byte: bound it
_MAX_EMPTY_ELEMENTS = 4096
_CHAR_NAMES = frozenset({"char", "signed char", "unsigned char"})
_STRUCT_FORMATS = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h", (4, False): "I", (4, True): "i"}
_STRUCT_FORMATS |= {(8, False): "Q", (8, True): "q"}


def _nbytes(buf: ReadableBuffer) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


class Codec(abc.ABC):
    """Encodes Python values as the bytes of one BTF type and decodes them back.

    Codecs are immutable and keep no per-call state, so one codec serves any
    number of threads. ``pack_into``/``unpack_from`` work in place at an
    offset (batch buffers, per-CPU slots, a global data section); ``path``
    names the value in error messages.
    """

    __slots__ = ("name", "size")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        buf = bytearray(self.size)
        self._pack(buf, 0, value, path)
        return bytes(buf)

    def decode(self, data: ReadableBuffer, *, path: str = "value") -> Any:
        if _nbytes(data) != self.size:
            raise CodecError(path, f"{self.name} takes {self.size} bytes, got {_nbytes(data)}")
        return self._unpack(data, 0)

    def pack_into(self, buf: WritableBuffer, offset: int, value: Any, *, path: str = "value") -> None:
        self._check_bounds(buf, offset, path)
        self._pack(buf, offset, value, path)

    def unpack_from(self, buf: ReadableBuffer, offset: int = 0, *, path: str = "value") -> Any:
        self._check_bounds(buf, offset, path)
        return self._unpack(buf, offset)

    def _check_bounds(self, buf: ReadableBuffer, offset: int, path: str) -> None:
        if offset < 0 or offset + self.size > _nbytes(buf):
            raise CodecError(path, f"{self.name} at offset {offset} does not fit a {_nbytes(buf)}-byte buffer")

    @abc.abstractmethod
    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None: ...

    @abc.abstractmethod
    def _unpack(self, buf: ReadableBuffer, offset: int) -> Any: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.size} bytes)>"


class RawCodec(Codec):
    """Bytes as they are: for keys and values without BTF."""

    __slots__ = ()

    def __init__(self, size: int, name: str = "") -> None:
        super().__init__(name or f"{size} raw bytes", size)

    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(path, f"expected {self.size} bytes, got {type(value).__name__}")
        if _nbytes(value) != self.size:
            raise CodecError(path, f"expected {self.size} bytes, got {_nbytes(value)}")
        buf[offset : offset + self.size] = value

    def _unpack(self, buf: ReadableBuffer, offset: int) -> bytes:
        return bytes(buf[offset : offset + self.size])


def _check_range(value: int, bits: int, signed: bool, path: str, what: str) -> None:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise CodecError(path, f"{value} does not fit {what} (range {low}..{high})")


class ScalarCodec(Codec):
    """A value stored as an integer: ints, bools, chars, enums, pointers; these can be bitfields."""

    __slots__ = ("_struct", "signed")

    def __init__(self, name: str, size: int, signed: bool) -> None:
        super().__init__(name, size)
        self.signed = signed
        fmt = _STRUCT_FORMATS.get((size, signed))
        self._struct = struct.Struct("<" + fmt) if fmt else None

    @abc.abstractmethod
    def to_int(self, value: Any, path: str) -> int:
        """The integer ``value`` stands for (not yet range-checked)."""

    @abc.abstractmethod
    def from_int(self, raw: int) -> Any:
        """The Python value for ``raw`` (already sign-extended when ``signed``)."""

    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None:
        raw = self.to_int(value, path)
        _check_range(raw, 8 * self.size, self.signed, path, self.name)
        if self._struct is not None:
            self._struct.pack_into(buf, offset, raw)
        else:
            buf[offset : offset + self.size] = raw.to_bytes(self.size, "little", signed=self.signed)

    def _unpack(self, buf: ReadableBuffer, offset: int) -> Any:
        if self._struct is not None:
            raw: int = self._struct.unpack_from(buf, offset)[0]
        else:
            raw = int.from_bytes(buf[offset : offset + self.size], "little", signed=self.signed)
        return self.from_int(raw)


def as_int(value: Any, path: str, what: str) -> int:
    """``value`` as an int (anything with ``__index__``), never a float, str or bytes taken for one."""
    if isinstance(value, str | bytes | float):
        raise CodecError(path, f"expected an integer for {what}, got {type(value).__name__} {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise CodecError(path, f"expected an integer for {what}, got {type(value).__name__}") from None


class IntCodec(ScalarCodec):
    __slots__ = ()

    def to_int(self, value: Any, path: str) -> int:
        return as_int(value, path, self.name)

    def from_int(self, raw: int) -> int:
        return raw


class BoolCodec(ScalarCodec):
    """``_Bool``: any non-zero byte reads as True; only bools and 0/1 are accepted on encode."""

    __slots__ = ()

    def to_int(self, value: Any, path: str) -> int:
        if isinstance(value, bool):
            return int(value)
        raw = as_int(value, path, self.name)
        if raw not in (0, 1):
            raise CodecError(path, f"expected a bool (or 0/1) for {self.name}, got {raw}")
        return raw

    def from_int(self, raw: int) -> bool:
        return raw != 0


class CharCodec(ScalarCodec):
    """A lone ``char``: decodes to its number, encodes a number or one byte."""

    __slots__ = ()

    def to_int(self, value: Any, path: str) -> int:
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes | bytearray):
            if len(value) != 1:
                raise CodecError(path, f"expected one byte for {self.name}, got {len(value)}")
            byte = value[0]
            return byte - 256 if self.signed and byte > 127 else byte
        return as_int(value, path, self.name)

    def from_int(self, raw: int) -> int:
        return raw


class EnumCodec(ScalarCodec):
    """A BTF enum; :attr:`enum_type` is the ``IntEnum`` its values decode to.

    Enumerator names Python reserves (``_sunder_``, ``__dunder__``, ``mro``)
    are left out of the ``IntEnum`` but still accepted by name on encode.
    """

    __slots__ = ("by_name", "enum_type")

    def __init__(self, name: str, size: int, signed: bool, values: Sequence[tuple[str, int]]) -> None:
        super().__init__(name, size, signed)
        self.by_name: dict[str, int] = {}
        for n, v in values:
            self.by_name.setdefault(n, v)
        self.enum_type = _int_enum(name, values)

    def to_int(self, value: Any, path: str) -> int:
        if isinstance(value, str):
            raw = self.by_name.get(value)
            if raw is None:
                known = ", ".join(list(self.by_name)[:12]) + (", ..." if len(self.by_name) > 12 else "")
                raise CodecError(path, f"{self.name} has no enumerator {value!r} (known: {known or 'none'})")
            return raw
        raw = as_int(value, path, self.name)
        bits = 8 * self.size
        if not self.signed and -(1 << (bits - 1)) <= raw < 0:
            raw += 1 << bits  # BTF before the signed-enum flag stores negative enumerators unsigned
        return raw

    def from_int(self, raw: int) -> Any:
        if self.enum_type is None:
            return raw
        try:
            return self.enum_type(raw)
        except ValueError:
            return raw


def _int_enum(type_name: str, values: Sequence[tuple[str, int]]) -> type[enum.IntEnum] | None:
    tag = type_name.removeprefix("enum ")
    class_name = tag if tag.isidentifier() else "anon_enum"
    members: dict[str, int] = {}
    for n, v in values:
        reserved = (n.startswith("_") and n.endswith("_")) or n.startswith(f"_{class_name}__") or n == "mro"
        if n.isidentifier() and not reserved:
            members.setdefault(n, v)
    if not members:
        return None
    try:
        return enum.IntEnum(class_name, members)  # type: ignore[return-value]  # functional API
    except (ValueError, TypeError):  # a name the enum machinery still refuses: plain ints then
        return None


class FloatCodec(Codec):
    __slots__ = ("_struct",)

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)
        self._struct = struct.Struct("<" + {2: "e", 4: "f", 8: "d"}[size])

    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None:
        if not isinstance(value, int | float):
            raise CodecError(path, f"expected a number for {self.name}, got {type(value).__name__}")
        try:
            self._struct.pack_into(buf, offset, value)
        except (OverflowError, struct.error) as e:
            raise CodecError(path, f"{value!r} does not fit {self.name}: {e}") from None

    def _unpack(self, buf: ReadableBuffer, offset: int) -> float:
        value: float = self._struct.unpack_from(buf, offset)[0]
        return value


class BytesCodec(Codec):
    """An array of 1-byte integers (``char[16]``, ``__u8[6]``) as ``bytes``."""

    __slots__ = ("signed",)

    def __init__(self, name: str, size: int, signed: bool) -> None:
        super().__init__(name, size)
        self.signed = signed

    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None:
        if isinstance(value, str):
            data: bytes | bytearray | memoryview = value.encode()
        elif isinstance(value, bytes | bytearray | memoryview):
            data = value
        elif isinstance(value, list | tuple):
            ints = bytearray()
            for i, item in enumerate(value):
                n = as_int(item, f"{path}[{i}]", "a byte")
                if not -128 <= n <= 255:
                    raise CodecError(f"{path}[{i}]", f"{n} does not fit a byte")
                ints.append(n & 0xFF)
            data = ints
        else:
            raise CodecError(path, f"expected bytes or str for {self.name}, got {type(value).__name__}")
        n = _nbytes(data)
        if n > self.size:
            raise CodecError(path, f"{self.name} holds {self.size} bytes, got {n}")
        buf[offset : offset + n] = data
        buf[offset + n : offset + self.size] = bytes(self.size - n)

    def _unpack(self, buf: ReadableBuffer, offset: int) -> Any:
        return bytes(buf[offset : offset + self.size])

    def unpack_partial(self, buf: ReadableBuffer, offset: int, nbytes: int) -> Any:
        """The first ``nbytes`` bytes of the array (a variable-length record's tail)."""
        return bytes(buf[offset : offset + min(nbytes, self.size)])


class StrCodec(BytesCodec):
    """A ``char`` array read as text: ``str`` up to the first NUL (``strings=True``); encodes like bytes."""

    __slots__ = ()

    def _unpack(self, buf: ReadableBuffer, offset: int) -> str:
        return _text(bytes(buf[offset : offset + self.size]))

    def unpack_partial(self, buf: ReadableBuffer, offset: int, nbytes: int) -> str:
        return _text(bytes(buf[offset : offset + min(nbytes, self.size)]))


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class ArrayCodec(Codec):
    """A fixed-length array as a ``list`` of exactly ``length`` elements."""

    __slots__ = ("_fast", "element", "length")

    def __init__(self, name: str, element: Codec, length: int) -> None:
        super().__init__(name, element.size * length)
        self.element = element
        self.length = length
        self._fast: struct.Struct | None = None
        if type(element) is IntCodec and element._struct is not None:
            self._fast = struct.Struct(f"<{length}{element._struct.format[1:]}")

    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
            raise CodecError(path, f"expected a list of {self.length} for {self.name}, got {type(value).__name__}")
        if len(value) != self.length:
            raise CodecError(path, f"{self.name} has {self.length} elements, got {len(value)}")
        element, step = self.element, self.element.size
        for i, item in enumerate(value):
            element._pack(buf, offset + i * step, item, f"{path}[{i}]")

    def _unpack(self, buf: ReadableBuffer, offset: int) -> list[Any]:
        if self._fast is not None:
            return list(self._fast.unpack_from(buf, offset))
        element, step = self.element, self.element.size
        return [element._unpack(buf, offset + i * step) for i in range(self.length)]

    def unpack_partial(self, buf: ReadableBuffer, offset: int, nbytes: int) -> list[Any]:
        """The whole elements among the first ``nbytes`` bytes (a variable-length record's tail)."""
        element, step = self.element, self.element.size
        count = self.length if step == 0 else min(self.length, nbytes // step)
        return [element._unpack(buf, offset + i * step) for i in range(count)]


class _Field:
    """A byte-aligned member at ``offset`` from the start of its struct."""

    __slots__ = ("codec", "name", "offset")

    def __init__(self, name: str, offset: int, codec: Codec) -> None:
        self.name = name
        self.offset = offset
        self.codec = codec

    def shifted(self, byte_offset: int) -> _Field:
        return _Field(self.name, self.offset + byte_offset, self.codec)

    @property
    def end(self) -> int:
        return self.offset + self.codec.size

    def pack(self, buf: WritableBuffer, base: int, value: Any, path: str) -> None:
        self.codec._pack(buf, base + self.offset, value, path)

    def unpack(self, buf: ReadableBuffer, base: int) -> Any:
        return self.codec._unpack(buf, base + self.offset)


class _BitField:
    """``bits`` bits at ``bit_offset`` from the start of the struct (little-endian bit order)."""

    __slots__ = ("bit_offset", "bits", "codec", "name")

    def __init__(self, name: str, bit_offset: int, bits: int, codec: ScalarCodec) -> None:
        self.name = name
        self.bit_offset = bit_offset
        self.bits = bits
        self.codec = codec

    def shifted(self, byte_offset: int) -> _BitField:
        return _BitField(self.name, self.bit_offset + 8 * byte_offset, self.bits, self.codec)

    @property
    def end(self) -> int:
        return (self.bit_offset + self.bits + 7) // 8

    def _span(self, base: int) -> tuple[int, int, int]:
        start = base + self.bit_offset // 8
        shift = self.bit_offset % 8
        return start, start + (shift + self.bits + 7) // 8, shift

    def pack(self, buf: WritableBuffer, base: int, value: Any, path: str) -> None:
        raw = self.codec.to_int(value, path)
        _check_range(raw, self.bits, self.codec.signed, path, f"a {self.bits}-bit field of {self.codec.name}")
        start, end, shift = self._span(base)
        mask = (1 << self.bits) - 1
        word = int.from_bytes(buf[start:end], "little")
        word = (word & ~(mask << shift)) | ((raw & mask) << shift)
        buf[start:end] = word.to_bytes(end - start, "little")

    def unpack(self, buf: ReadableBuffer, base: int) -> Any:
        start, end, shift = self._span(base)
        raw = (int.from_bytes(buf[start:end], "little") >> shift) & ((1 << self.bits) - 1)
        if self.codec.signed and raw >> (self.bits - 1):
            raw -= 1 << self.bits
        return self.codec.from_int(raw)


class StructCodec(Codec):
    """A struct, union or DATASEC as a :class:`Record`; :attr:`record` is its class."""

    __slots__ = ("_by_name", "fields", "record")

    def __init__(self, name: str, size: int, fields: Sequence[_Field | _BitField]) -> None:
        super().__init__(name, size)
        self.fields = tuple(fields)
        self._by_name = {f.name: f for f in self.fields}
        self.record = record_type(name, tuple(self._by_name))

    def _pack(self, buf: WritableBuffer, offset: int, value: Any, path: str) -> None:
        buf[offset : offset + self.size] = bytes(self.size)
        pairs: Iterable[tuple[str, Any]]
        if isinstance(value, Record) and value._fields == self.record._fields:
            pairs = value._items()
            if value._touched:  # changed fields last: they win over stale overlapping views
                pairs = sorted(pairs, key=lambda kv: kv[0] in value._touched)
        else:
            if isinstance(value, Record) or (hasattr(value, "_asdict") and not isinstance(value, Mapping)):
                value = value._asdict()
            if not isinstance(value, Mapping):
                raise CodecError(path, f"expected a mapping or record for {self.name}, got {type(value).__name__}")
            unknown = [k for k in value if k not in self._by_name]
            if unknown:
                fields = ", ".join(self._by_name) or "none"
                raise CodecError(path, f"{self.name} has no field {unknown[0]!r} (fields: {fields})")
            pairs = ((f.name, value[f.name]) for f in self.fields if f.name in value)
        by_name = self._by_name
        for name, item in pairs:
            by_name[name].pack(buf, offset, item, f"{path}.{name}")

    def _unpack(self, buf: ReadableBuffer, offset: int) -> Record:
        return self.record._make(tuple(f.unpack(buf, offset) for f in self.fields))

    def trailing_array(self) -> _Field | None:
        """The array member that ends the struct's layout, after every other member, if there is one.

        A producer that fills only part of that array (a path, a payload)
        often submits only the bytes used; :meth:`unpack_head` decodes such a
        record.
        """
        arrays = [f for f in self.fields if isinstance(f, _Field) and isinstance(f.codec, BytesCodec | ArrayCodec)]
        if not arrays:
            return None
        tail = max(arrays, key=lambda f: f.offset)
        if any(f is not tail and f.end > tail.offset for f in self.fields):
            return None
        return tail

    def unpack_head(self, buf: ReadableBuffer, nbytes: int, tail: _Field) -> Record:
        """A record of ``nbytes`` (at least ``tail.offset``) bytes: ``tail`` holds what of it is there."""
        codec = tail.codec
        if not isinstance(codec, BytesCodec | ArrayCodec):
            raise CodecError("record", f"member {tail.name!r} of {self.name} is not an array")
        partial = codec.unpack_partial(buf, tail.offset, nbytes - tail.offset)
        return self.record._make(tuple(partial if f is tail else f.unpack(buf, 0) for f in self.fields))


def codec_for(spec: Spec | None, type_id: int, *, size: int | None = None, strings: bool = False) -> Codec:
    """The codec for BTF type ``type_id`` of ``spec``.

    Type id 0 means "no BTF": the result is a :class:`RawCodec` of ``size``
    bytes. Otherwise ``size``, when given (a map's key or value size), must
    match the type's size. ``strings``: ``char`` arrays decode to ``str``
    (:class:`StrCodec`) instead of ``bytes``.
    """
    if type_id == 0:
        if size is None:
            raise CodecError("", "a codec without BTF (type id 0) needs a size")
        return RawCodec(size)
    if spec is None:
        raise CodecError("", f"type [{type_id}] needs the BTF it belongs to")
    codec = _Builder(spec, strings=strings).build(type_id, None, 0)
    if size is not None and codec.size != size:
        raise CodecError("", f"{codec.name} (type [{type_id}]) is {codec.size} bytes, but {size} were expected")
    return codec


_TAGGED = {"struct": (Kind.STRUCT,), "union": (Kind.UNION,), "enum": (Kind.ENUM, Kind.ENUM64)}
#: kinds a bare name may stand for when no typedef has it (C would need the tag; BPF users rarely write it)
_BARE = (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.INT, Kind.FLOAT)


def record_type_id(spec: Spec, record: str | int) -> int:
    """The BTF id of an event record type: an id, ``"struct event"``/``"union u"``/``"enum e"``, or a bare name.

    A bare name is a typedef if one has it (as in C), else the struct, union,
    enum or base type of that name; a bare name that is both a struct and a
    union (or enum) is ambiguous and refused.
    """
    if isinstance(record, int):
        try:
            spec[record]
        except TypeNotFound as e:
            raise CodecError("", str(e)) from None
        return record
    found = find_record_type(spec, record)
    if found is None:
        raise CodecError("", f"no type {' '.join(record.split())!r} in {spec.section}")
    return found


def find_record_type(spec: Spec, name: str) -> int | None:
    """:func:`record_type_id` of a name, or None if ``spec`` has no such type (an ambiguous name still raises)."""
    name = " ".join(name.split())
    word, _, tag = name.partition(" ")
    if word in _TAGGED and tag:
        found = [i for kind in _TAGGED[word] for i in spec.find(tag, kind)]
    else:
        found = spec.find(name, Kind.TYPEDEF)
        if not found:
            found = [i for kind in _BARE for i in spec.find(name, kind)]
            kinds = {spec.kind(i) for i in found}
            if len(kinds) > 1:
                spelled = ", ".join(sorted(f"{k.name.lower()} {name}" for k in kinds))
                raise CodecError("", f"{name!r} is ambiguous ({spelled}); name the kind")
    return found[0] if found else None


def record_decoder(
    spec: Spec, record: str | int, *, exact: bool = False, strings: bool = False
) -> Callable[[ReadableBuffer], Any]:
    """Decode event records (ring buffer records, perf samples) as the BTF type ``record`` names.

    ``record`` is what :func:`record_type_id` takes. Longer records decode
    their leading bytes, because perf pads raw samples to 8 bytes and a
    fixed header struct is often followed by a variable payload; ``exact``
    refuses them. A shorter record is :class:`~dynbpf._maps.errors.CodecError`,
    unless the struct ends with an array and the record holds everything
    before it: producers submit only the used part of a ``char buf[4096]``,
    which then comes back as long as what arrived (whole elements of other
    arrays). ``strings``: ``char`` arrays decode to ``str`` up to their NUL.
    """
    codec = codec_for(spec, record_type_id(spec, record), strings=strings)
    size = codec.size
    struct_codec = codec if isinstance(codec, StructCodec) else None
    tail = struct_codec.trailing_array() if struct_codec is not None else None
    head = f" (at least {tail.offset}, the part before its trailing array {tail.name!r})" if tail else ""

    def decode(data: ReadableBuffer) -> Any:
        got = _nbytes(data)
        if got >= size and not (exact and got != size):
            return codec.unpack_from(data, 0, path="record")
        if struct_codec is not None and tail is not None and tail.offset <= got < size:
            return struct_codec.unpack_head(data, got, tail)
        raise CodecError("record", f"{codec.name} takes {size} bytes{head}, the record has {got}")

    return decode


class _Builder:
    """One codec per resolved type id (shared by every use), built depth-first with loop detection."""

    def __init__(self, spec: Spec, *, strings: bool = False) -> None:
        self.spec = spec
        self.strings = strings
        self.done: dict[int, Codec] = {}
        self.active: set[int] = set()

    def fail(self, type_id: int, message: str) -> ObjectFormatError:
        section, offset = self.spec.locate(type_id)
        return ObjectFormatError(f"type [{type_id}]: {message}", section=section, offset=offset)

    def build(self, type_id: int, parent: int | None, depth: int) -> Codec:
        if parent is not None:
            try:
                self.spec[type_id]
            except TypeNotFound:
                raise self.fail(parent, f"refers to type [{type_id}], which does not exist") from None
        resolved = resolve(self.spec, type_id)
        hit = self.done.get(resolved)
        if hit is not None:
            return hit
        if resolved in self.active:
            raise self.fail(resolved, "contains itself (a loop in the type graph)")
        if depth > MAX_NESTING:  # a chain this deep without a loop: too deep to decode, not self-containing
            raise self.fail(resolved, f"is nested deeper than {MAX_NESTING} levels")
        self.active.add(resolved)
        try:
            codec = self._make(resolved, parent, depth)
        finally:
            self.active.discard(resolved)
        self.done[resolved] = codec
        return codec

    def _make(self, type_id: int, parent: int | None, depth: int) -> Codec:
        t = self.spec[type_id]
        match t:
            case Int():
                if t.size not in (1, 2, 4, 8, 16) or t.bits > 8 * t.size or t.bit_offset + t.bits > 8 * t.size:
                    raise self.fail(type_id, f"INT {t.name!r} of {t.size} bytes, {t.bits} bits at {t.bit_offset}")
                return _int_codec(t)
            case Ptr():
                return IntCodec(format_type(self.spec, type_id), 8, False)
            case Enum() | Enum64():
                if t.size not in (1, 2, 4, 8):
                    raise self.fail(type_id, f"enum {t.name!r} of {t.size} bytes")
                name = f"enum {t.name}" if t.name else "enum (anon)"
                return EnumCodec(name, t.size, t.signed, [(v.name, v.value) for v in t.values])
            case Float():
                if t.size not in (2, 4, 8, 12, 16):
                    raise self.fail(type_id, f"float {t.name!r} of {t.size} bytes")
                if t.size in (2, 4, 8):
                    return FloatCodec(t.name, t.size)
                return RawCodec(t.size, t.name)
            case Array():
                return self._array(type_id, t, depth)
            case Struct() | Union():
                word = "struct" if isinstance(t, Struct) else "union"
                name = f"{word} {t.name}" if t.name else f"{word} (anon)"
                return StructCodec(name, t.size, self._members(type_id, t, depth))
            case Var():
                return self.build(t.type, type_id, depth + 1)
            case Datasec():
                return self._datasec(type_id, t, depth)
        what = "void" if t is None else f"{t.kind.name} {format_type(self.spec, type_id)}"
        if parent is not None:
            raise self.fail(parent, f"has a member or element of type [{type_id}] ({what}), which has no value")
        raise CodecError("", f"type [{type_id}] ({what}) has no value to encode or decode")

    def _array(self, type_id: int, t: Array, depth: int) -> Codec:
        element = self.build(t.type, type_id, depth + 1)
        size = element.size * t.nelems
        if element.size == 0 and t.nelems > _MAX_EMPTY_ELEMENTS:
            raise self.fail(type_id, f"array of {t.nelems} zero-sized elements")
        if size > _U32_MAX:
            raise self.fail(type_id, f"array of {t.nelems} elements is larger than 4 GiB")
        name = f"{element.name}[{t.nelems}]"
        if isinstance(element, IntCodec | CharCodec) and element.size == 1:
            if self.strings and is_text(self.spec, type_id):
                return StrCodec(name, size, element.signed)
            return BytesCodec(name, size, element.signed)
        return ArrayCodec(name, element, t.nelems)

    def _members(self, type_id: int, t: Struct | Union, depth: int) -> list[_Field | _BitField]:
        fields: list[_Field | _BitField] = []
        seen: set[str] = set()

        def add(field: _Field | _BitField) -> None:
            if field.name in seen:
                raise self.fail(type_id, f"has two members called {field.name!r}")
            seen.add(field.name)
            fields.append(field)

        for m in t.members:
            codec = self.build(m.type, type_id, depth + 1)
            bits = self._bitfield_bits(m, codec)
            if bits:
                if not isinstance(codec, ScalarCodec):
                    raise self.fail(type_id, f"bitfield {m.name!r} of non-integer type {codec.name}")
                offset = m.bit_offset + self._int_bit_offset(m)
                if bits > 8 * codec.size or offset + bits > 8 * t.size:
                    raise self.fail(type_id, f"bitfield {m.name!r} ({bits} bits at bit {offset}) does not fit")
                if m.name:
                    add(_BitField(m.name, offset, bits, codec))
                continue
            if m.bit_offset % 8:
                raise self.fail(type_id, f"member {m.name!r} is not byte-aligned (bit {m.bit_offset})")
            if m.bit_offset // 8 + codec.size > t.size:
                raise self.fail(type_id, f"member {m.name!r} ends past the {t.size}-byte struct")
            if m.name:
                add(_Field(m.name, m.bit_offset // 8, codec))
            elif isinstance(codec, StructCodec):  # anonymous struct/union: its members are ours, as in C
                for inner in codec.fields:
                    add(inner.shifted(m.bit_offset // 8))
        return fields

    def _bitfield_bits(self, m: Member, codec: Codec) -> int:
        if m.bitfield_size:
            return m.bitfield_size
        # BTF without the kind flag encodes a bitfield in the INT itself (bits < 8 * size)
        t = self.spec[resolve(self.spec, m.type)]
        if isinstance(t, Int) and (t.bits != 8 * t.size or t.bit_offset):
            return t.bits
        return 0

    def _int_bit_offset(self, m: Member) -> int:
        t = self.spec[resolve(self.spec, m.type)]
        return t.bit_offset if isinstance(t, Int) and not m.bitfield_size else 0

    def _datasec(self, type_id: int, t: Datasec, depth: int) -> Codec:
        if t.size == 0 and t.vars:
            raise CodecError(
                "", f"DATASEC {t.name} [{type_id}] has no size yet (offsets are fixed at load); use its variables"
            )
        fields: list[_Field | _BitField] = []
        for v in t.vars:
            var = self.spec[v.type] if v.type < len(self.spec) else None
            if not isinstance(var, Var):
                raise self.fail(type_id, f"entry [{v.type}] is not a VAR")
            codec = self.build(v.type, type_id, depth + 1)
            if codec.size != v.size or v.offset + v.size > t.size:
                raise self.fail(type_id, f"variable {var.name!r} ({v.size} bytes at {v.offset}) does not fit")
            fields.append(_Field(var.name, v.offset, codec))
        return StructCodec(f"SEC({t.name})", t.size, fields)


def _int_codec(t: Int) -> ScalarCodec:
    signed = bool(t.encoding & IntEncoding.SIGNED)
    if t.encoding & IntEncoding.BOOL:
        return BoolCodec(t.name, t.size, False)
    if t.size == 1 and (t.encoding & IntEncoding.CHAR or t.name in _CHAR_NAMES):
        return CharCodec(t.name, 1, signed)
    return IntCodec(t.name, t.size, signed)


def is_text(spec: Spec, type_id: int) -> bool:
    """An array of plain ``char`` (through typedefs and qualifiers): text, where ``__u8`` arrays are data."""
    t = spec[resolve(spec, type_id)]
    if not isinstance(t, Array):
        return False
    element = spec[resolve(spec, t.type)]
    return isinstance(element, Int) and element.size == 1 and element.name == "char"
