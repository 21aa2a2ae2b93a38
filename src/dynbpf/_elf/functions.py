"""The functions of an executable or shared library, by address: what a user-space address is.

A stack trace holds addresses in a process; the process maps files at
addresses of the loader's choosing (a PIE program and every shared library
at a random base), so an address is first turned into an offset in the
mapped file (``/proc/PID/maps``), then, through the file's ``PT_LOAD``
program headers, into the virtual address the linker gave it, which is
what symbol values are. Names come from ``.symtab`` (which has static
functions too), else from ``.dynsym`` (all a stripped library keeps);
:mod:`dynbpf._attach.symbols`, the way from a name to a file offset for
uprobes, applies the same rule of what a defined function is.

The file is read with ``struct``, only the parts needed (headers, one
symbol table and its strings): a large library has tens of thousands of
symbols, which pyelftools (what uprobes use to find one name) would take
a second or more to decode, most of it building hash tables never used.
The file is arbitrary input: every offset is checked against what was
read, and any inconsistency is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

#: where function names are looked for, best first, with their section types
TABLES = (".symtab", ".dynsym")
_TABLE_TYPES = {".symtab": 2, ".dynsym": 11}  # SHT_SYMTAB, SHT_DYNSYM
STT_FUNC, STT_GNU_IFUNC = 2, 10
SHN_LORESERVE = 0xFF00  # section indices from here on are special (ABS, COMMON...), not sections
SHN_XINDEX = 0xFFFF
PT_LOAD = 1
_BIND_RANK = {1: 0, 2: 1, 0: 2}  # of names at one address, GLOBAL before WEAK before LOCAL


def is_defined_function(st_type: int, shndx: int, value: int) -> bool:
    """Whether a symbol is a function defined in its file (not an import, not an absolute value)."""
    return st_type in (STT_FUNC, STT_GNU_IFUNC) and 0 < shndx < SHN_LORESERVE and value != 0


@dataclass(frozen=True, slots=True)
class Segment:
    """A ``PT_LOAD`` program header: ``size`` bytes at ``offset`` in the file go to address ``vaddr``."""

    offset: int
    vaddr: int
    size: int


class FunctionTable:
    """The defined functions of one file, sorted by address, and its load segments; immutable."""

    __slots__ = ("_ends", "_names", "_starts", "segments", "table")

    def __init__(
        self, table: str | None, segments: Sequence[Segment], functions: Sequence[tuple[int, int, str]]
    ) -> None:
        """``functions``: (address, size, name), in any order; at one address the first listed is kept.

        Functions whose size is unknown should be given the size up to the
        end of their section: a size of 0 names no address at all.
        """
        self.table = table  # where the names came from; None when the file has neither table
        self.segments = tuple(segments)
        starts: list[int] = []
        ends: list[int] = []
        names: list[str] = []
        for address, size, name in sorted(functions, key=lambda f: f[0]):
            if starts and starts[-1] == address:
                continue
            starts.append(address)
            ends.append(address + size)
            names.append(name)
        self._starts, self._ends, self._names = starts, ends, names

    def __len__(self) -> int:
        return len(self._starts)

    def address(self, file_offset: int) -> int | None:
        """The address the linker gave the byte at ``file_offset``; None outside every load segment."""
        for segment in self.segments:
            if segment.offset <= file_offset < segment.offset + segment.size:
                return file_offset - segment.offset + segment.vaddr
        return None

    def function(self, address: int) -> tuple[str, int] | None:
        """The function ``address`` lies in and the offset into it; None between or outside functions."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        if address >= self._ends[i]:
            return None
        return self._names[i], address - self._starts[i]


def read_functions(path: str) -> FunctionTable:
    """The functions of the ELF file at ``path``; ``OSError`` if unreadable, ``ValueError`` if not usable ELF."""
    with open(path, "rb") as f:
        try:
            return _Reader(f.fileno()).functions()
        except (ValueError, struct.error) as e:
            raise ValueError(f"{path} is not an ELF file we can read: {e}") from None


@dataclass(frozen=True, slots=True)
class _Section:
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


class _Reader:
    """The headers of one ELF file (either class, either byte order), read with ``pread``.

    Sections are found by type (``SHT_SYMTAB``, ``SHT_DYNSYM``), so their
    names are never read.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.file_size = os.fstat(fd).st_size
        ident = os.pread(fd, 16, 0)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ValueError("no ELF header")
        self.wide = ident[4] == 2
        order = "<" if ident[5] == 1 else ">"
        ehdr = order + ("16xHHIQQQIHHHHHH" if self.wide else "16xHHIIIIIHHHHHH")
        _, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = self.unpack(ehdr, 0)
        phdr = struct.Struct(order + ("IIQQQQQQ" if self.wide else "IIIIIIII"))
        shdr = struct.Struct(order + ("IIQQQQIIQQ" if self.wide else "IIIIIIIIII"))
        self.sym = struct.Struct(order + ("IBBHQQ" if self.wide else "IIIBBH"))
        if (phnum and phentsize != phdr.size) or (shoff and shentsize != shdr.size):
            raise ValueError(f"header sizes {phentsize}/{shentsize} are not this class's")
        self.segments: list[Segment] = []
        for i in range(phnum):
            p = self.unpack(phdr, phoff + i * phdr.size)
            p_type, offset, vaddr, filesz = (p[0], p[2], p[3], p[5]) if self.wide else (p[0], p[1], p[2], p[4])
            if p_type == PT_LOAD and filesz:
                self.segments.append(Segment(offset, vaddr, filesz))
        self.sections: list[_Section] = []
        if shoff:
            first = self.unpack(shdr, shoff)
            count = shnum or first[5]  # more than 0xff00 sections: the count is section 0's size
            raw = self.read(shoff, count * shdr.size)
            for _, s_type, _, addr, offset, size, link, _, _, entsize in shdr.iter_unpack(raw):
                self.sections.append(_Section(s_type, addr, offset, size, link, entsize))

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``, checked against the file's size before anything is allocated."""
        data = os.pread(self.fd, size, offset) if offset + size <= self.file_size else b""
        if len(data) != size:
            raise ValueError(f"{size} bytes at offset {offset} are beyond the end of the file")
        return data

    def unpack(self, layout: str | struct.Struct, offset: int) -> tuple[int, ...]:
        form = layout if isinstance(layout, struct.Struct) else struct.Struct(layout)
        return form.unpack(self.read(offset, form.size))

    def functions(self) -> FunctionTable:
        for table in TABLES:
            found = self._table(_TABLE_TYPES[table])
            if found:
                return FunctionTable(table, self.segments, found)
        return FunctionTable(None, self.segments, [])

    def _table(self, section_type: int) -> list[tuple[int, int, str]]:
        """(address, size, name) of the defined functions of the first section of ``section_type``, best name
        first at each address."""
        table = next((s for s in self.sections if s.type == section_type), None)
        if table is None or not table.size:
            return []
        if table.entsize != self.sym.size:
            raise ValueError(f"symbol table entries of {table.entsize} bytes, not {self.sym.size}")
        if not 0 < table.link < len(self.sections):
            raise ValueError(f"symbol table names string table #{table.link}, which does not exist")
        strtab = self.sections[table.link]
        data = self.read(table.offset, table.size - table.size % self.sym.size)
        strings = self.read(strtab.offset, strtab.size)
        found: list[tuple[int, int, int, str]] = []
        for fields in self.sym.iter_unpack(data):
            if self.wide:
                name_at, info, _, shndx, value, size = fields
            else:
                name_at, value, size, info, _, shndx = fields
            if not is_defined_function(info & 0xF, shndx, value) or name_at >= len(strings):
                continue
            if not size:  # no .size (hand-written assembly, _init, _fini): it reaches at most to its section's end
                section = self.sections[shndx] if shndx < len(self.sections) else None
                size = max(section.addr + section.size - value, 0) if section is not None else 0
            end = strings.find(b"\0", name_at)
            label = strings[name_at : end if end >= 0 else len(strings)].decode("utf-8", "surrogateescape")
            found.append((value, _BIND_RANK.get(info >> 4, 3), size, label))
        found.sort(key=_best_first)
        return [(value, size, label) for value, _, size, label in found]


def _best_first(function: tuple[int, int, int, str]) -> tuple[int, bool, int, int, str]:
    """Of the names one address has, the one people call it by: public (``getpgid``, not ``__getpgid``), global."""
    value, rank, _, label = function
    return value, label.startswith("_"), rank, len(label), label


__all__ = ["TABLES", "FunctionTable", "Segment", "is_defined_function", "read_functions"]
