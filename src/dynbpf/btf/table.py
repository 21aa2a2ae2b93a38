"""A compact index over raw BTF: type offsets and a name lookup, nothing decoded.

Kernel BTF has ~130k types; most callers need a handful of them by name (an
attach target, a CO-RE candidate). Indexing offsets once and decoding types
on demand keeps both time and memory small.
"""

from __future__ import annotations

import struct
import threading
from array import array

from dynbpf.btf.kinds import BTF_MAGIC, HEADER_SIZE, TRAILER, TYPE_SIZE, Kind
from dynbpf.errors import ObjectFormatError

_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")

VMLINUX_PATH = "/sys/kernel/btf/vmlinux"


class TypeTable:
    """Offsets of every type in one BTF blob (ids start at 1; id 0 is void)."""

    def __init__(self, data: bytes, *, section: str = ".BTF") -> None:
        self.data = data
        self._section = section
        if len(data) < HEADER_SIZE:
            raise ObjectFormatError("BTF shorter than its header", section=section, offset=0)
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise ObjectFormatError(f"bad BTF magic {magic:#x} (big-endian BTF is not supported)", section=section)
        if version != 1:
            raise ObjectFormatError(f"unsupported BTF version {version}", section=section, offset=2)
        if hdr_len < HEADER_SIZE or hdr_len > len(data):
            raise ObjectFormatError(f"bad BTF header length {hdr_len}", section=section, offset=4)
        self.types_start = hdr_len + type_off
        self.types_end = self.types_start + type_len
        self.strings_start = hdr_len + str_off
        self.strings_end = self.strings_start + str_len
        if self.types_end > len(data) or self.strings_end > len(data):
            raise ObjectFormatError("BTF type or string section runs past the end of the data", section=section)
        self.offsets = self._scan()
        self._names: dict[tuple[str, int], list[int]] | None = None
        self._lock = threading.Lock()

    def _scan(self) -> array[int]:
        data, pos, end = self.data, self.types_start, self.types_end
        offsets = array("I", [0])  # id 0: void
        unpack = _TYPE.unpack_from
        while pos < end:
            if pos + TYPE_SIZE > end:
                raise ObjectFormatError("truncated BTF type record", section=self._section, offset=pos)
            _name, info, _size = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            try:
                fixed, per = TRAILER.get(Kind(kind), (0, 0))
            except ValueError:
                raise ObjectFormatError(f"unknown BTF kind {kind}", section=self._section, offset=pos) from None
            offsets.append(pos)
            pos += TYPE_SIZE + fixed + per * (info & 0xFFFF)
        if pos != end:
            raise ObjectFormatError("BTF type record runs past the type section", section=self._section, offset=pos)
        return offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def header(self, type_id: int) -> tuple[int, Kind, int, int]:
        """``(name_off, kind, vlen, size_or_type)`` of one type."""
        name_off, info, size = _TYPE.unpack_from(self.data, self.offsets[type_id])
        return name_off, Kind((info >> 24) & 0x1F), info & 0xFFFF, size

    def string(self, off: int) -> str:
        start = self.strings_start + off
        if off < 0 or start >= self.strings_end:
            raise ObjectFormatError(f"string offset {off} outside the string section", section=self._section)
        end = self.data.find(b"\0", start, self.strings_end)
        if end < 0:
            raise ObjectFormatError("unterminated BTF string", section=self._section, offset=start)
        return self.data[start:end].decode("utf-8", "replace")

    def name(self, type_id: int) -> str:
        return self.string(self.header(type_id)[0]) if type_id else ""

    def find(self, name: str, kind: Kind) -> list[int]:
        """Ids of the types called ``name`` of ``kind`` (name index built on first use)."""
        with self._lock:
            if self._names is None:
                self._names = self._index()
        return self._names.get((name, int(kind)), [])

    def _index(self) -> dict[tuple[str, int], list[int]]:
        names: dict[tuple[str, int], list[int]] = {}
        string_cache: dict[int, str] = {}
        for type_id in range(1, len(self.offsets)):
            name_off, info, _ = _TYPE.unpack_from(self.data, self.offsets[type_id])
            if not name_off:
                continue
            s = string_cache.get(name_off)
            if s is None:
                s = string_cache[name_off] = self.string(name_off)
            names.setdefault((s, (info >> 24) & 0x1F), []).append(type_id)
        return names


_vmlinux: list[TypeTable] = []  # filled once; a list avoids rebinding a module global
_vmlinux_lock = threading.Lock()


def vmlinux() -> TypeTable | None:
    """The running kernel's BTF, indexed once per process; None if the kernel has no BTF."""
    with _vmlinux_lock:
        if not _vmlinux:
            try:
                with open(VMLINUX_PATH, "rb") as f:
                    _vmlinux.append(TypeTable(f.read(), section=VMLINUX_PATH))
            except FileNotFoundError:
                return None
        return _vmlinux[0]
