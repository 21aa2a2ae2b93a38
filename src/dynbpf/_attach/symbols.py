"""Where a function lives in an ELF file, as the file offset a uprobe is placed at.

The uprobe PMU takes a file offset, not an address: a symbol's value is a
virtual address inside its section, so the offset is ``value - sh_addr +
sh_offset``. ``.symtab`` is preferred (it also has static functions); a
stripped library still has ``.dynsym``. The file is arbitrary user input,
so any failure of the ELF parser becomes a :class:`SymbolError` naming the
file.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from dynbpf._elf.functions import TABLES, is_defined_function
from dynbpf.errors import DynbpfError

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import Symbol, SymbolTableSection

T = TypeVar("T")


class SymbolError(DynbpfError, LookupError):
    """The function is not (unambiguously) in the file, or the file is not readable ELF."""


@dataclass(frozen=True, slots=True)
class FunctionLocation:
    offset: int  # in the file
    table: str  # where it was found
    ifunc: bool  # an indirect function: the probe hits its resolver, not the implementation


def function_offset(path: str, name: str) -> FunctionLocation:
    """File offset of function ``name`` in ``path`` (a plain or ``name@VERSION`` symbol)."""
    return _read(path, lambda elf: _find(elf, path, name))


def functions_matching(path: str, pattern: str) -> dict[str, int]:
    """Name -> file offset of every function of ``path`` whose name matches the glob ``pattern``.

    Names are unversioned; a function with several versions counts once, at
    its default version. A name in ``.symtab`` hides the same name in
    ``.dynsym``.
    """
    return _read(path, lambda elf: _glob(elf, path, pattern))


def _read(path: str, fn: Callable[[ELFFile], T]) -> T:
    from elftools.elf.elffile import ELFFile  # pyelftools costs ~0.2 s to import: only for uprobes that need it

    try:
        with open(path, "rb") as f:
            return fn(ELFFile(f))
    except SymbolError:
        raise
    except OSError as e:
        raise SymbolError(f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # pyelftools raises many kinds of errors on malformed files
        raise SymbolError(f"cannot read the symbols of {path}: {type(e).__name__}: {e}") from None


def _offset(elf: ELFFile, symbol: Symbol, path: str) -> int:
    section = elf.get_section(symbol["st_shndx"])
    offset = int(symbol["st_value"] - section["sh_addr"] + section["sh_offset"])
    if offset < 0:
        raise SymbolError(f"{symbol.name} in {path} lies outside its section {section.name}")
    return offset


def _glob(elf: ELFFile, path: str, pattern: str) -> dict[str, int]:
    from elftools.elf.sections import SymbolTableSection

    found: dict[str, int] = {}
    for table_name in TABLES:
        table = elf.get_section_by_name(table_name)
        if not isinstance(table, SymbolTableSection):
            continue
        by_name: dict[str, list[tuple[int, Symbol]]] = {}
        for index, symbol in enumerate(table.iter_symbols()):
            base = symbol.name.partition("@")[0]
            if base not in found and fnmatch.fnmatchcase(base, pattern) and _is_defined_function(symbol):
                by_name.setdefault(base, []).append((index, symbol))
        indices = [i for matched in by_name.values() for i, sym in matched if "@" not in sym.name]
        versions = _versions(elf, table, indices)
        for base, matched in by_name.items():
            candidates = [_candidate(index, symbol, versions) for index, symbol in matched]
            found[base] = _offset(elf, _choose(candidates, path, base, table_name), path)
    return found


def _find(elf: ELFFile, path: str, name: str) -> FunctionLocation:
    from elftools.elf.sections import SymbolTableSection

    seen_tables = []
    not_functions: list[str] = []
    for table_name in TABLES:
        table = elf.get_section_by_name(table_name)
        if not isinstance(table, SymbolTableSection):
            continue
        seen_tables.append(table_name)
        candidates = _candidates(elf, table, name)
        functions = [c for c in candidates if _is_defined_function(c.symbol)]
        not_functions += [f"{c.label} ({c.symbol['st_info']['type']})" for c in candidates if c not in functions]
        if functions:
            symbol = _choose(functions, path, name, table_name)
            return FunctionLocation(_offset(elf, symbol, path), table_name, symbol["st_info"]["type"] != "STT_FUNC")
    if not seen_tables:
        raise SymbolError(f"{path} has no symbol table (.symtab or .dynsym): it is stripped; give offset= instead")
    also = f"; symbols of that name that are not defined functions: {', '.join(not_functions)}" if not_functions else ""
    raise SymbolError(f"no function {name!r} in {' or '.join(seen_tables)} of {path}{also}")


@dataclass(frozen=True)
class _Candidate:
    symbol: Symbol
    version: str | None
    default: bool  # the version the linker binds to (``@@``, or versym without the hidden bit)

    @property
    def label(self) -> str:
        base = self.symbol.name.partition("@")[0]
        return f"{base}{'@@' if self.default else '@'}{self.version}" if self.version else base


def _candidates(elf: ELFFile, table: SymbolTableSection, name: str) -> list[_Candidate]:
    """Symbols called ``name`` (any version, or the one ``name@VERSION`` asks for), with their versions."""
    base, _, wanted = name.replace("@@", "@").partition("@")
    exact = table.get_symbol_by_name(base) or []
    if not wanted and len(exact) == 1 and "@" not in exact[0].name:
        return [_Candidate(exact[0], None, True)]
    matched = [(i, sym) for i, sym in enumerate(table.iter_symbols()) if sym.name.partition("@")[0] == base]
    versions = _versions(elf, table, [i for i, sym in matched if "@" not in sym.name])
    candidates = [_candidate(index, symbol, versions) for index, symbol in matched]
    return [c for c in candidates if not wanted or c.version == wanted]


def _candidate(index: int, symbol: Symbol, versions: dict[int, tuple[str | None, bool]]) -> _Candidate:
    """A symbol with its version: from its name (``name@V``, ``name@@V``) or from ``.gnu.version``."""
    _, at, version = symbol.name.partition("@")
    if at:
        return _Candidate(symbol, version.lstrip("@"), version.startswith("@"))
    name, default = versions.get(index, (None, True))
    return _Candidate(symbol, name, default)


def _versions(elf: ELFFile, table: SymbolTableSection, indices: list[int]) -> dict[int, tuple[str | None, bool]]:
    """Symbol index -> (version name, is default) from ``.gnu.version``, for ``indices`` of ``table``."""
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerSymSection

    versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
    if not indices or versym is None or elf.get_section(versym["sh_link"]).name != table.name:
        return {}
    verdef = next((s for s in elf.iter_sections() if isinstance(s, GNUVerDefSection)), None)
    names: dict[int, str] = {}
    if verdef is not None:
        for version, aux in verdef.iter_versions():
            first = next(iter(aux), None)
            if first is not None:
                names[version["vd_ndx"]] = first.name
    out: dict[int, tuple[str | None, bool]] = {}
    for index in indices:
        ndx = versym.get_symbol(index).entry["ndx"]
        if isinstance(ndx, int):
            out[index] = (names.get(ndx & 0x7FFF), not ndx & 0x8000)
    return out


def _is_defined_function(symbol: Symbol) -> bool:
    from elftools.elf.enums import ENUM_ST_INFO_TYPE

    kind, shndx = symbol["st_info"]["type"], symbol["st_shndx"]  # pyelftools' names: STT_LOOS is GNU_IFUNC
    number = kind if isinstance(kind, int) else ENUM_ST_INFO_TYPE.get(kind, -1)
    return is_defined_function(number, shndx if isinstance(shndx, int) else 0, symbol["st_value"])


def _choose(candidates: list[_Candidate], path: str, name: str, table: str) -> Symbol:
    """One symbol: all at one address, else the default version, else the only global one."""
    for pick in (
        candidates,
        [c for c in candidates if c.default],
        [c for c in candidates if c.symbol["st_info"]["bind"] == "STB_GLOBAL"],
    ):
        if pick and len({c.symbol["st_value"] for c in pick}) == 1:
            return pick[0].symbol
    where = ", ".join(f"{c.label} at {c.symbol['st_value']:#x} ({c.symbol['st_info']['bind']})" for c in candidates)
    raise SymbolError(
        f"{name!r} is ambiguous in {table} of {path}: {where}; name a version (name@VERSION) or give offset="
    )
