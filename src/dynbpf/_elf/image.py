"""The raw ELF layer: sections, symbols and relocations of a BPF object, validated.

The headers are decoded with ``struct`` straight from the file's bytes: an
object with hundreds of programs has tens of thousands of relocations, and
a general ELF library's per-record objects cost more than everything else in
reading it. Every offset and size is checked against the file before
anything is read, so a hostile object can neither make us read out of bounds
nor loop over a count taken from a bogus header, and every parsing failure
becomes :class:`ObjectFormatError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dynbpf.errors import ObjectFormatError

SHT_PROGBITS = 1
SHT_NOBITS = 8
SHT_REL = 9
SHT_SYMTAB = 2
SHF_EXECINSTR = 0x4

STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_FILE_OR_SECTION = (STT_SECTION, STT_FILE)
STV_INTERNAL, STV_HIDDEN = 1, 2

#: BPF relocation types (llvm/BinaryFormat/ELFRelocs/BPF.def)
R_BPF_64_64 = 1  # ldimm64
R_BPF_64_ABS64 = 2  # 8-byte data word (.maps values, .struct_ops slots)
R_BPF_64_ABS32 = 3
R_BPF_64_NODYLD32 = 4  # .BTF / .BTF.ext / DWARF
R_BPF_64_32 = 10  # call

EM_BPF = 247
ET_REL = 1
SHN_XINDEX = 0xFFFF
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym
_REL = struct.Struct("<QQ")  # Elf64_Rel


@dataclass(frozen=True, slots=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True, slots=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int  # 0 = undefined; >= 0xff00 = special (ABS, COMMON)
    hidden: bool = False  # STV_HIDDEN/STV_INTERNAL: not visible outside the object (libbpf treats it as static)


@dataclass(frozen=True, slots=True)
class Reloc:
    offset: int
    symbol: Symbol
    type: int


class Image:
    """A validated little-endian 64-bit BPF relocatable object."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        if len(data) < _EHDR.size:
            raise ObjectFormatError(f"file of {len(data)} bytes is too short for an ELF header")
        ident, e_type, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum, shstrndx = _EHDR.unpack_from(data)
        if ident[:4] != b"\x7fELF":
            raise ObjectFormatError("not an ELF file (bad magic)")
        if ident[4] != 2 or ident[5] != 1:
            raise ObjectFormatError(
                f"only little-endian 64-bit objects are supported (got {32 if ident[4] == 1 else '?'}-bit "
                f"{'little' if ident[5] == 1 else 'big'}-endian; compile with -target bpf)"
            )
        if machine != EM_BPF:
            raise ObjectFormatError(f"not a BPF object: e_machine is {machine}")
        if e_type != ET_REL:
            raise ObjectFormatError(f"not a relocatable object: e_type is {e_type}")
        if shentsize != _SHDR.size or shoff + _SHDR.size > len(data):
            raise ObjectFormatError(f"section headers of {shentsize} bytes at {shoff} do not fit", offset=shoff)
        headers = [_SHDR.unpack_from(data, shoff)]
        count = shnum or headers[0][5]  # more than 0xff00 sections: the count is section 0's size
        if shstrndx == SHN_XINDEX:
            shstrndx = headers[0][6]
        if shoff + count * _SHDR.size > len(data):
            raise ObjectFormatError(f"{count} section headers do not fit in the file", offset=shoff)
        headers += [_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(1, count)]
        if not 0 < shstrndx < count:
            raise ObjectFormatError(f"section name table index {shstrndx} does not exist")
        _, str_type, _, _, str_offset, str_size, *_ = headers[shstrndx]
        if str_type == SHT_NOBITS or str_offset + str_size > len(data):
            raise ObjectFormatError(f"section name table #{shstrndx} is not in the file", offset=str_offset)
        self.sections: list[Section] = []
        for i, (name, sh_type, flags, _, offset, size, link, info, _, entsize) in enumerate(headers):
            s = Section(i, _string(data, str_offset, str_size, name), sh_type, flags, offset, size, link, info, entsize)
            if sh_type != SHT_NOBITS and offset + size > len(data):
                raise ObjectFormatError(
                    f"section extends past the end of the file ({offset + size} > {len(data)} bytes)",
                    section=s.name or f"#{i}",
                    offset=offset,
                )
            self.sections.append(s)
        self.by_name = {s.name: s for s in self.sections if s.name}
        self.symbols = self._symbols()
        self._relocs: dict[int, list[Reloc]] = {}
        self._rel_sections: dict[int, list[Section]] | None = None

    def section(self, index: int, *, where: str = "") -> Section:
        if not 0 < index < len(self.sections):
            raise ObjectFormatError(f"reference to section index {index}, which does not exist", section=where or None)
        return self.sections[index]

    def view(self, section: Section) -> memoryview:
        """A PROGBITS section's bytes without copying them (functions keep slices of the file, not copies)."""
        return memoryview(self.data)[section.offset : section.offset + section.size]

    def contents(self, section: Section) -> bytes:
        """A section's bytes (zeros for NOBITS, i.e. .bss)."""
        if section.type == SHT_NOBITS:
            return bytes(section.size) if section.size <= _MAX_NOBITS else _too_big(section)
        return self.data[section.offset : section.offset + section.size]

    def _symbols(self) -> list[Symbol]:
        tables = [s for s in self.sections if s.type == SHT_SYMTAB]
        if not tables:
            raise ObjectFormatError("object has no symbol table (was it stripped?)")
        table = tables[0]
        if table.entsize != _SYM.size or table.size % _SYM.size:
            raise ObjectFormatError(
                f"symbol table entry size {table.entsize}, size {table.size}", section=table.name, offset=table.offset
            )
        if not 0 < table.link < len(self.sections):
            raise ObjectFormatError(f"symbol table names string table #{table.link}", section=table.name)
        strtab = self.sections[table.link]
        if strtab.type == SHT_NOBITS:
            raise ObjectFormatError("symbol names are in a NOBITS section", section=table.name)
        data = self.data
        symbols: list[Symbol] = []
        for i, (name, info, other, shndx, value, size) in enumerate(
            _SYM.iter_unpack(data[table.offset : table.offset + table.size])
        ):
            kind, bind = info & 0xF, info >> 4
            symbols.append(
                Symbol(
                    i,
                    _string(data, strtab.offset, strtab.size, name, f"symbol #{i}") if name else "",
                    value,
                    size,
                    kind if kind <= STT_FILE else -1,
                    bind if bind <= STB_WEAK else -1,
                    shndx,
                    other & 3 in (STV_HIDDEN, STV_INTERNAL),
                )
            )
        return symbols

    def relocations_for(self, target: Section) -> list[Reloc]:
        """Every relocation that applies to ``target``, sorted by offset (parsed on first use).

        Only what is asked for is parsed: most relocations of an object are
        DWARF's and ``.BTF.ext``'s, which nobody asks for.
        """
        if self._rel_sections is None:
            self._rel_sections = {}
            for s in self.sections:
                if s.type == SHT_REL:
                    self._rel_sections.setdefault(s.info, []).append(s)
        found = self._relocs.get(target.index)
        if found is None:
            found = [r for s in self._rel_sections.get(target.index, ()) for r in self._parse(s)]
            found.sort(key=_offset)
            self._relocs[target.index] = found
        return found

    def _parse(self, section: Section) -> list[Reloc]:
        """Relocations in the SHT_REL section ``section``, against this image's symbols."""
        if section.entsize != _REL.size or section.size % _REL.size:
            raise ObjectFormatError(
                f"relocation entry size {section.entsize}, size {section.size}", section=section.name
            )
        symbols = self.symbols
        out: list[Reloc] = []
        raw = self.data[section.offset : section.offset + section.size]
        for i, (offset, info) in enumerate(_REL.iter_unpack(raw)):
            sym = info >> 32
            if sym >= len(symbols):
                raise ObjectFormatError(
                    f"relocation refers to symbol {sym}, which does not exist",
                    section=section.name,
                    offset=i * _REL.size,
                )
            out.append(Reloc(offset, symbols[sym], info & 0xFFFFFFFF))
        return out


def _string(data: bytes, table_offset: int, table_size: int, offset: int, what: str = "section") -> str:
    """A NUL-terminated name from a string table (already checked to lie in the file)."""
    if offset >= table_size:
        raise ObjectFormatError(f"{what} name at offset {offset} is outside its string table ({table_size} bytes)")
    end = data.find(b"\0", table_offset + offset, table_offset + table_size)
    if end < 0:
        raise ObjectFormatError(f"{what} name at offset {offset} is not NUL-terminated")
    return data[table_offset + offset : end].decode("latin-1")  # names are bytes; latin-1 keeps every byte


def _offset(reloc: Reloc) -> int:
    return reloc.offset


_MAX_NOBITS = 1 << 30


def _too_big(section: Section) -> bytes:
    raise ObjectFormatError(f"NOBITS section of {section.size} bytes is implausibly large", section=section.name)
