"""The raw ELF layer: sections, symbols and relocations of a BPF object, validated.

pyelftools does the header decoding; this module checks every offset and size
against the file before anything is read, so a hostile object can neither
make us read out of bounds nor loop over a symbol count taken from a bogus
header, and turns every parsing failure into :class:`ObjectFormatError`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from dynbpf.errors import ObjectFormatError

SHT_PROGBITS = 1
SHT_NOBITS = 8
SHT_REL = 9
SHT_SYMTAB = 2
SHF_EXECINSTR = 0x4

STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_FILE_OR_SECTION = (STT_SECTION, STT_FILE)

#: BPF relocation types (llvm/BinaryFormat/ELFRelocs/BPF.def)
R_BPF_64_64 = 1  # ldimm64
R_BPF_64_ABS64 = 2  # 8-byte data word (.maps values, .struct_ops slots)
R_BPF_64_ABS32 = 3
R_BPF_64_NODYLD32 = 4  # .BTF / .BTF.ext / DWARF
R_BPF_64_32 = 10  # call

_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: only its size is used
_REL = struct.Struct("<QQ")
_PARSE_ERRORS = (ELFError, struct.error, ValueError, KeyError, IndexError, UnicodeDecodeError, OverflowError)


@contextmanager
def _elf_errors(what: str, section: str | None = None) -> Iterator[None]:
    try:
        yield
    except ObjectFormatError:
        raise
    except _PARSE_ERRORS as e:
        raise ObjectFormatError(f"malformed ELF {what}: {e}", section=section) from None


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
        with _elf_errors("header"):
            elf = ELFFile(io.BytesIO(data))
            if elf.elfclass != 64 or not elf.little_endian:
                raise ObjectFormatError(
                    f"only little-endian 64-bit objects are supported (got {elf.elfclass}-bit "
                    f"{'little' if elf.little_endian else 'big'}-endian; compile with -target bpf)"
                )
            if elf["e_machine"] != "EM_BPF":
                raise ObjectFormatError(f"not a BPF object: e_machine is {elf['e_machine']}")
            if elf["e_type"] != "ET_REL":
                raise ObjectFormatError(f"not a relocatable object: e_type is {elf['e_type']}")
            count = elf.num_sections()
            if elf["e_shoff"] + count * elf["e_shentsize"] > len(data) or elf["e_shentsize"] != 64:
                raise ObjectFormatError(f"{count} section headers do not fit in the file", offset=elf["e_shoff"])
        self._elf = elf
        self.sections: list[Section] = []
        for i in range(count):
            with _elf_errors("section header", f"#{i}"):
                raw = elf.get_section(i)
                h = raw.header
                s = Section(
                    i,
                    raw.name,
                    _sh_type(h["sh_type"]),
                    h["sh_flags"],
                    h["sh_offset"],
                    h["sh_size"],
                    h["sh_link"],
                    h["sh_info"],
                    h["sh_entsize"],
                )
            if s.type != SHT_NOBITS and s.offset + s.size > len(data):
                raise ObjectFormatError(
                    f"section extends past the end of the file ({s.offset + s.size} > {len(data)} bytes)",
                    section=s.name or f"#{i}",
                    offset=s.offset,
                )
            self.sections.append(s)
        self.by_name = {s.name: s for s in self.sections if s.name}
        self.symbols = self._symbols()
        self._relocs: dict[int, list[Reloc]] = {}

    def section(self, index: int, *, where: str = "") -> Section:
        if not 0 < index < len(self.sections):
            raise ObjectFormatError(f"reference to section index {index}, which does not exist", section=where or None)
        return self.sections[index]

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
        symbols: list[Symbol] = []
        with _elf_errors("symbol table", table.name):
            raw_table = self._elf.get_section(table.index)
            for i, sym in enumerate(raw_table.iter_symbols()):  # type: ignore[attr-defined]
                shndx = sym["st_shndx"]
                symbols.append(
                    Symbol(
                        i,
                        sym.name,
                        sym["st_value"],
                        sym["st_size"],
                        _ST_TYPE.get(sym["st_info"]["type"], -1),
                        _ST_BIND.get(sym["st_info"]["bind"], -1),
                        shndx if isinstance(shndx, int) else _SHN.get(shndx, 0xFFFF),
                        sym["st_other"]["visibility"] in ("STV_HIDDEN", "STV_INTERNAL"),
                    )
                )
        return symbols

    def relocations_for(self, target: Section) -> list[Reloc]:
        """Every relocation that applies to ``target``, sorted by offset (parsed once)."""
        if target.index not in self._relocs:
            found = [r for s in self.sections if s.type == SHT_REL and s.info == target.index for r in self._parse(s)]
            self._relocs[target.index] = sorted(found, key=lambda r: r.offset)
        return self._relocs[target.index]

    def _parse(self, section: Section) -> list[Reloc]:
        """Relocations in the SHT_REL section ``section``, against this image's symbols."""
        if section.entsize != _REL.size or section.size % _REL.size:
            raise ObjectFormatError(
                f"relocation entry size {section.entsize}, size {section.size}", section=section.name
            )
        out: list[Reloc] = []
        with _elf_errors("relocation", section.name):
            raw = self._elf.get_section(section.index)
            for i, rel in enumerate(raw.iter_relocations()):  # type: ignore[attr-defined]
                sym = rel["r_info_sym"]
                if not 0 <= sym < len(self.symbols):
                    raise ObjectFormatError(
                        f"relocation refers to symbol {sym}, which does not exist",
                        section=section.name,
                        offset=i * _REL.size,
                    )
                out.append(Reloc(rel["r_offset"], self.symbols[sym], rel["r_info_type"]))
        return out


_MAX_NOBITS = 1 << 30
_ST_TYPE = {
    "STT_NOTYPE": STT_NOTYPE,
    "STT_OBJECT": STT_OBJECT,
    "STT_FUNC": STT_FUNC,
    "STT_SECTION": STT_SECTION,
    "STT_FILE": STT_FILE,
}
_ST_BIND = {"STB_LOCAL": STB_LOCAL, "STB_GLOBAL": STB_GLOBAL, "STB_WEAK": STB_WEAK}
_SHN = {"SHN_UNDEF": 0, "SHN_ABS": 0xFFF1, "SHN_COMMON": 0xFFF2}
_SH_TYPES = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_NOBITS": 8, "SHT_REL": 9}


def _sh_type(value: object) -> int:
    if isinstance(value, int):
        return value
    return _SH_TYPES.get(str(value), -1)


def _too_big(section: Section) -> bytes:
    raise ObjectFormatError(f"NOBITS section of {section.size} bytes is implausibly large", section=section.name)
