"""A parsed BTF blob: cheap to open, decoded one type at a time.

Kernel BTF holds ~130k types and a loader usually needs a few hundred of
them (attach targets, CO-RE candidates). :meth:`Spec.parse` therefore only
checks the header and records where each type's record starts (one pass over
32-bit words, no objects per type); a type becomes a dataclass the first time
it is asked for and is cached from then on. The name index is built on the
first :meth:`Spec.find`.

Thread safety: concurrent readers may decode a type twice, but the first
result stored in the cache is the one every caller gets; the name index is
built once, under a lock.
"""

from __future__ import annotations

import bisect
import struct
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence

from dynbpf import _section_names as section_names
from dynbpf._btf import records
from dynbpf._btf.errors import TypeNotFound
from dynbpf._btf.kinds import BTF_MAGIC, HEADER_SIZE, Kind
from dynbpf._btf.strings import StringTable
from dynbpf._btf.types import Type
from dynbpf.errors import ObjectFormatError

_HEADER = struct.Struct("<HBBIIIII")
_MAX_STRING_OFFSET = 0x7FFFFFFF


def _u32_words(data: bytes, start: int, end: int) -> Sequence[int]:
    """The bytes ``data[start:end]`` as little-endian u32 words, without a copy where possible."""
    view = memoryview(data)[start:end]
    if sys.byteorder == "little":
        return view.cast("I")
    words = array("I", view)
    words.byteswap()
    return words


class Spec:
    """The types of one BTF blob, optionally split on top of a base (module BTF on vmlinux).

    Valid ids are ``range(len(spec))``: 0 is void, ids below :attr:`first_id`
    belong to :attr:`base`. Looking up any other id raises
    :class:`~dynbpf._btf.errors.TypeNotFound`; a malformed record raises
    :class:`~dynbpf.errors.ObjectFormatError` when it is first decoded.
    """

    __slots__ = (
        "_cache",
        "_cache_lock",
        "_data",
        "_lock",
        "_names",
        "_offsets",
        "_types_start",
        "_words",
        "base",
        "first_id",
        "section",
        "strings",
    )

    def __init__(
        self,
        data: bytes,
        words: Sequence[int],
        offsets: array[int],
        types_start: int,
        strings: StringTable,
        *,
        base: Spec | None,
        section: str,
    ) -> None:
        self._data = data
        self._words = words
        self._offsets = offsets
        self._types_start = types_start
        self.strings = strings
        self.base = base
        self.section = section
        self.first_id = len(base) if base is not None else 1
        self._cache: list[Type | None] | None = None  # by own index, allocated on first decode
        self._cache_lock = threading.Lock()
        self._names: tuple[bytes, array[int]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, data: bytes, *, base: Spec | None = None, section: str = section_names.BTF) -> Spec:
        """Check the header and index record offsets; types are decoded on first use."""
        if not isinstance(data, bytes):
            data = bytes(data)
        if len(data) < HEADER_SIZE:
            raise ObjectFormatError(
                f"BTF shorter than its header ({len(data)} < {HEADER_SIZE} bytes)", section=section, offset=0
            )
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != BTF_MAGIC:
            what = "big-endian BTF is not supported" if magic == 0x9FEB else f"bad BTF magic {magic:#06x}"
            raise ObjectFormatError(what, section=section, offset=0)
        if version != 1:
            raise ObjectFormatError(f"unsupported BTF version {version}", section=section, offset=2)
        if flags:
            raise ObjectFormatError(f"unknown BTF header flags {flags:#x}", section=section, offset=3)
        if hdr_len < HEADER_SIZE or hdr_len > len(data):
            raise ObjectFormatError(f"bad BTF header length {hdr_len}", section=section, offset=4)
        types_start, strings_start = hdr_len + type_off, hdr_len + str_off
        if type_off % 4 or type_len % 4:
            raise ObjectFormatError("BTF type section is not 4-byte aligned", section=section, offset=8)
        if types_start + type_len > len(data) or strings_start + str_len > len(data):
            raise ObjectFormatError(
                f"BTF sections run past the end of the data ({len(data)} bytes)", section=section, offset=8
            )
        if type_off + type_len > str_off:
            raise ObjectFormatError("BTF type section overlaps the string section", section=section, offset=8)
        strings_end = strings_start + str_len
        if base is None and (str_len == 0 or data[strings_start] != 0):
            raise ObjectFormatError("BTF string table must start with an empty string", section=section, offset=16)
        if str_len and data[strings_end - 1] != 0:
            raise ObjectFormatError("BTF string table is not NUL-terminated", section=section, offset=strings_end - 1)
        strings = StringTable(
            data, strings_start, strings_end, base=base.strings if base is not None else None, section=section
        )
        if strings.end_offset - 1 > _MAX_STRING_OFFSET:
            raise ObjectFormatError("BTF string table larger than 2 GiB", section=section, offset=20)
        words = _u32_words(data, types_start, types_start + type_len)
        offsets = _scan(words, types_start, section, len(base) if base is not None else 1)
        return cls(data, words, offsets, types_start, strings, base=base, section=section)

    @classmethod
    def from_types(cls, types: Iterable[Type], *, base: Spec | None = None, section: str = section_names.BTF) -> Spec:
        """Encode ``types`` (ids ``first_id``, ``first_id + 1``, ...) into a new blob and parse it."""
        seed = b"" if base is not None else b"\0"
        table = StringTable(seed, 0, len(seed), base=base.strings if base is not None else None, section=section)
        return cls.parse(_encode(types, table), base=base, section=section)

    def __len__(self) -> int:
        return self.first_id + len(self._offsets)

    def __getitem__(self, type_id: int) -> Type | None:
        """The type with ``type_id``; None for void (0)."""
        index = type_id - self.first_id
        if 0 <= index < len(self._offsets):
            cache = self._cache if self._cache is not None else self._new_cache()
            t = cache[index]
            if t is None:
                decoded = self._decode(index)
                with self._cache_lock:  # racing decoders agree on one object
                    t = cache[index]
                    if t is None:
                        t = cache[index] = decoded
            return t
        if type_id == 0:
            return None
        if self.base is not None and 0 < type_id < self.first_id:
            return self.base[type_id]
        raise TypeNotFound(f"no type [{type_id}] in {self.section} (valid ids: 0..{len(self) - 1})")

    def _new_cache(self) -> list[Type | None]:
        with self._cache_lock:
            if self._cache is None:
                self._cache = [None] * len(self._offsets)
            return self._cache

    def _decode(self, index: int) -> Type:
        pos = self._offsets[index]
        at = self._types_start + 4 * pos
        return records.decode(
            self._words, pos, self.strings, section=self.section, at=at, type_id=self.first_id + index
        )

    def types(self) -> Iterator[tuple[int, Type]]:
        """This blob's own types with their ids (not the base's); streams without filling the cache."""
        cache, decode = self._cache, self._decode
        for index in range(len(self._offsets)):
            t = cache[index] if cache is not None else None
            yield self.first_id + index, t if t is not None else decode(index)

    def kind(self, type_id: int) -> Kind:
        """The kind of ``type_id`` read from its record, without decoding it (UNKN for void)."""
        spec, index = self._owner(type_id)
        if spec is None:
            return Kind.UNKN
        return Kind((spec._words[spec._offsets[index] + 1] >> 24) & 0x1F)

    def locate(self, type_id: int) -> tuple[str, int | None]:
        """Section name and byte offset of ``type_id``'s record, for error messages."""
        spec, index = self._owner(type_id)
        if spec is None:
            return self.section, None
        return spec.section, spec._types_start + 4 * spec._offsets[index]

    def _owner(self, type_id: int) -> tuple[Spec | None, int]:
        spec: Spec | None = self
        while spec is not None:
            index = type_id - spec.first_id
            if 0 <= index < len(spec._offsets):
                return spec, index
            if type_id == 0 or type_id > spec.first_id:
                break
            spec = spec.base
        if type_id == 0:
            return None, 0
        raise TypeNotFound(f"no type [{type_id}] in {self.section} (valid ids: 0..{len(self) - 1})")

    def string(self, offset: int) -> str:
        """The string at ``offset`` (split BTF offsets continue after the base's table)."""
        return self.strings.get(offset)

    def find(self, name: str, kind: Kind | None = None) -> list[int]:
        """Ids of the types called ``name`` (of ``kind`` if given), base types first, in id order."""
        found = self.base.find(name, kind) if self.base is not None else []
        own = self._named(name)
        if kind is None:
            return found + own
        words, offsets, first = self._words, self._offsets, self.first_id
        return found + [i for i in own if (words[offsets[i - first] + 1] >> 24) & 0x1F == kind]

    def _named(self, name: str) -> list[int]:
        """Own ids of the types called ``name``, in id order.

        No name -> ids dictionary: for kernel BTF that means decoding ~100k
        strings (a fifth of a second) to answer the few dozen lookups a load
        makes. Instead the string table is searched for ``name`` (every
        offset whose string it is, shared suffixes included), and the packed
        array of type name offsets for those offsets, both at C speed.
        """
        if not name:
            return []
        packed, used = self._name_offsets()
        ids: list[int] = []
        for offset in self.strings.offsets_of(name):
            at = bisect.bisect_left(used, offset)
            if at == len(used) or used[at] != offset:
                continue
            needle = array("I", (offset,)).tobytes()
            at = packed.find(needle)
            while at >= 0:
                if not at & 3:
                    ids.append(self.first_id + (at >> 2))
                at = packed.find(needle, at + 1)
        ids.sort()
        return ids

    def _name_offsets(self) -> tuple[bytes, array[int]]:
        """Own types' name offsets packed in id order, and sorted without repeats; checked once against the strings."""
        if self._names is None:
            with self._lock:
                if self._names is None:
                    words = self._words
                    offsets = array("I", [words[pos] for pos in self._offsets])
                    end = self.strings.end_offset
                    if offsets and max(offsets) >= end:
                        index = next(i for i, off in enumerate(offsets) if off >= end)
                        raise ObjectFormatError(
                            f"type [{self.first_id + index}]: name offset {offsets[index]} is outside the string "
                            f"table (ends at {end})",
                            section=self.section,
                            offset=self._types_start + 4 * self._offsets[index],
                        )
                    self._names = (offsets.tobytes(), array("I", sorted(set(offsets))))
        return self._names

    def encode(self) -> bytes:
        """This blob re-encoded from its decoded types and string table (own types only for split BTF).

        A blob laid out as the encoder lays it out (header, types, strings,
        nothing between or after) re-encodes to exactly its own bytes, so
        those are returned without decoding a type.
        """
        data = self._data
        _, _, _, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if (
            hdr_len == HEADER_SIZE
            and type_off == 0
            and str_off == type_len
            and len(data) == hdr_len + type_len + str_len
        ):
            return data
        return _encode((t for _, t in self.types()), self.strings)

    def record_words(self, type_id: int) -> Sequence[int]:
        """The raw record of one of this blob's own types, as 32-bit words (copied verbatim by rewrites)."""
        index = type_id - self.first_id
        if not 0 <= index < len(self._offsets):
            raise TypeNotFound(f"no own type [{type_id}] in {self.section}")
        end = self._offsets[index + 1] if index + 1 < len(self._offsets) else len(self._words)
        return self._words[self._offsets[index] : end]


def _scan(words: Sequence[int], types_start: int, section: str, first_id: int) -> array[int]:
    """Word offset of every record; one tight loop, re-walked carefully only to explain a failure."""
    offsets: array[int] = array("I")
    append, fixed, per = offsets.append, records.FIXED_WORDS, records.ENTRY_WORDS
    n, pos = len(words), 0
    try:
        while pos < n:
            append(pos)
            info = words[pos + 1]
            kind = (info >> 24) & 0x1F
            pos += fixed[kind] + per[kind] * (info & 0xFFFF)
    except IndexError:
        pos = -1
    if pos == n:
        return offsets
    pos = 0
    type_id = first_id
    while True:  # the fast loop failed, so this one raises
        at = types_start + 4 * pos
        if pos + 3 > n:
            raise ObjectFormatError(f"type [{type_id}]: truncated record header", section=section, offset=at)
        kind = (words[pos + 1] >> 24) & 0x1F
        if kind not in records.TYPE_KINDS:
            raise ObjectFormatError(f"type [{type_id}]: unknown BTF kind {kind}", section=section, offset=at)
        size = records.record_words(words[pos + 1])
        if pos + size > n:
            raise ObjectFormatError(
                f"type [{type_id}] ({Kind(kind).name}) runs past the end of the type section",
                section=section,
                offset=at,
            )
        pos += size
        type_id += 1


def _encode(types: Iterable[Type], table: StringTable) -> bytes:
    writer = records.StringWriter(table)
    out: array[int] = array("I")
    for t in types:
        records.encode(t, writer.add, out)
    if sys.byteorder != "little":
        out.byteswap()
    type_bytes = out.tobytes()
    string_bytes = table.own_bytes() + writer.appended()
    header = _HEADER.pack(BTF_MAGIC, 1, 0, HEADER_SIZE, 0, len(type_bytes), len(type_bytes), len(string_bytes))
    return header + type_bytes + string_bytes
