"""Read a clang-compiled BPF object into an :class:`ObjectSpec`.

The rules follow libbpf's (``bpf_object__open``): functions in ``.text`` are
subprograms, every global function in another executable section is a
program whose kind comes from the section name, maps come from BTF in
``.maps`` (or the legacy ``maps`` section), global data sections become
array maps, undefined symbols are externs typed by BTF. Relocations are
categorised here once, so later stages never scan instructions to find out
what a program needs.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
import re
import stat
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from dynbpf import _section_names as section_names
from dynbpf._asm.insn import Insn, decode
from dynbpf._asm.slots import SlotMap
from dynbpf._btf import graph
from dynbpf._btf.errors import TypeNotFound
from dynbpf._btf.ext import CoreRelo, ExtIndex, FuncInfo, LineInfo
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Datasec, Func, FuncLinkage, Var, VarLinkage
from dynbpf._elf.datasec import find_datasec, placed_vars
from dynbpf._elf.dwarf import DEBUG_INFO, DwarfTypes
from dynbpf._elf.image import (
    R_BPF_64_32,
    R_BPF_64_64,
    SHT_NOBITS,
    SHT_PROGBITS,
    STB_LOCAL,
    STB_WEAK,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    Image,
    Reloc,
    Section,
    Symbol,
)
from dynbpf._elf.maps import read_btf_maps, read_legacy_maps, read_struct_ops
from dynbpf._elf.names import Named, file_of, source_files, unique_names
from dynbpf._elf.sections import lenient_kind
from dynbpf._elf.spec import (
    CoreRelocation,
    DataReference,
    ExternKind,
    ExternReference,
    ExternSpec,
    FunctionBody,
    FunctionPointer,
    FunctionSpec,
    KfuncCall,
    LazyBody,
    MapReference,
    MapSpec,
    ObjectSpec,
    ProgramSpec,
    Relocation,
    SubprogramCall,
    VariableSpec,
)
from dynbpf._sys.constants import MapFlags, MapType
from dynbpf.errors import ObjectFormatError


def read(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None, lazy: bool = False
) -> ObjectSpec:
    """Parse a BPF object file (a path, or its bytes).

    Everything is checked and decoded now, unless ``lazy``: then each
    function's instructions, relocations and ``.BTF.ext`` records are
    decoded the first time they are used (``dynbpf.open`` reads lazily, so
    a program never loaded is never decoded), and a malformed function
    raises ``ObjectFormatError`` at that moment, for that function only.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data, default_name = bytes(source), "object"
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        data = read_object_file(path)
        default_name = path.name.split(".", 1)[0] or "object"
    else:
        raise TypeError(f"read() takes a path or the object's bytes, not {type(source).__name__}")
    try:
        image = Image(data)
        spec = dataclasses.replace(
            _Reader(image, name or default_name).spec(),
            digest=hashlib.sha256(data).digest(),
            dwarf=DwarfTypes(data) if DEBUG_INFO in image.by_name else None,
        )
        if not lazy:
            for fn in spec.functions.values():
                fn.body.get()
        return spec
    except TypeNotFound as e:  # a type id stored in the object that its BTF does not define
        raise ObjectFormatError(f"dangling BTF type reference: {e}", section=section_names.BTF) from None


#: Larger than any BPF object a compiler or linker makes (the largest deployed ones are tens of MB).
MAX_OBJECT_SIZE = 512 << 20


def read_object_file(path: Path) -> bytes:
    """The bytes of a regular file of a sane size: never a device, FIFO or socket that would hang or never end."""
    if not str(path):
        raise ObjectFormatError("no object file named (an empty path)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO opens without waiting for a writer
    except OSError as e:
        raise ObjectFormatError(f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ObjectFormatError(f"{path} is not a regular file (a BPF object is one)")
        if st.st_size > MAX_OBJECT_SIZE:
            raise ObjectFormatError(f"{path} is {st.st_size} bytes, more than any BPF object ({MAX_OBJECT_SIZE})")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_OBJECT_SIZE + 1)
        if len(data) > MAX_OBJECT_SIZE:  # it grew while we read it
            raise ObjectFormatError(f"{path} is more than {MAX_OBJECT_SIZE} bytes, more than any BPF object")
        return data
    except OSError as e:
        raise ObjectFormatError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)


#: The first two bytes of a BPF-to-BPF call: opcode 0x85, source register 1 (the high nibble of the second byte).
_PSEUDO_CALL = re.compile(rb"\x85[\x10-\x1f]", re.DOTALL)


@dataclass(slots=True)
class _Function:
    name: str
    section: Section
    offset: int
    symbol: Symbol
    code: memoryview  # a slice of the file: no copy
    _decoded: tuple[list[Insn], SlotMap] | None = None

    @property
    def end(self) -> int:
        return self.offset + len(self.code)

    def decoded(self, known: dict[bytes, Insn]) -> tuple[list[Insn], SlotMap]:
        if self._decoded is None:
            insns = decode(self.code, section=self.section.name, base=self.offset, known=known)
            self._decoded = (insns, SlotMap.of(insns))
        return self._decoded

    def forget_decoded(self) -> None:
        self._decoded = None

    def index_of(self, byte_off: int, *, where: str) -> int:
        """Position in the instructions of the one at section byte offset ``byte_off``."""
        assert self._decoded is not None
        index = self._decoded[1].index_at_byte(byte_off - self.offset)
        if index is None:
            raise ObjectFormatError(
                f"offset does not start an instruction of {self.name!r}", section=where, offset=byte_off
            )
        return index


class _Reader:
    def __init__(self, image: Image, name: str) -> None:
        self.image = image
        self.name = name
        self.btf = self._btf()
        self.ext = self._ext()  # structure checked; records decoded per function when it is
        self.functions: dict[int, list[_Function]] = {}  # by section index, sorted by offset
        self.files = source_files(image)
        self._relocs: dict[int, dict[int, list[Reloc]]] = {}  # section index -> function offset -> relocations
        self._known: dict[bytes, Insn] = {}  # equal encodings share one Insn across the object
        self._lock = threading.Lock()  # function bodies decode one at a time, each once

    # --- entry point ------------------------------------------------------------------

    def spec(self) -> ObjectSpec:
        img = self.image
        maps: dict[str, MapSpec] = {}
        map_at: dict[tuple[int, int], str] = {}  # (section index, offset) -> map name, for relocations
        self._functions()
        function_names = {(f.section.index, f.offset): f.name for fs in self.functions.values() for f in fs}
        if section_names.MAPS in img.by_name:
            found = read_btf_maps(
                img, img.by_name[section_names.MAPS], self._need_btf(section_names.MAPS), function_names, self.files
            )
            self._add_maps(maps, map_at, found)
        if section_names.LEGACY_MAPS in img.by_name:
            self._add_maps(maps, map_at, read_legacy_maps(img, img.by_name[section_names.LEGACY_MAPS]))
        for sec_name in section_names.STRUCT_OPS:
            if sec_name in img.by_name:
                found = read_struct_ops(img, img.by_name[sec_name], self._need_btf(sec_name), function_names)
                self._add_maps(maps, map_at, found)
        placed: list[tuple[VariableSpec, Named]] = []
        for sec in img.sections:
            if section_names.is_data_section(sec.name) and sec.size and sec.type in (SHT_PROGBITS, SHT_NOBITS):
                data_map, sec_vars = self._data_section(sec)
                self._add_maps(maps, map_at, [(sec.index, 0, data_map)])
                placed.extend(sec_vars)
        names = unique_names([named for _, named in placed])
        variables = {name: replace(var, name=name) for (var, _), name in zip(placed, names, strict=True)}
        externs = self._externs()
        functions = {f.name: self._function_spec(f, map_at, externs) for fs in self.functions.values() for f in fs}
        programs = {}
        for fs in self.functions.values():
            for f in fs:
                if f.section.name != section_names.TEXT:
                    programs[f.name] = ProgramSpec(functions[f.name], lenient_kind(f.section.name))
        return ObjectSpec(
            name=self.name,
            license=self._license(),
            kernel_version=self._kernel_version(),
            programs=programs,
            functions=functions,
            maps=maps,
            variables=variables,
            externs=externs,
            btf=self.btf,
        )

    @staticmethod
    def _add_maps(
        maps: dict[str, MapSpec], map_at: dict[tuple[int, int], str], found: list[tuple[int, int, MapSpec]]
    ) -> None:
        for sec_index, offset, m in found:
            if m.name in maps:
                raise ObjectFormatError(f"two maps are called {m.name!r}", section=m.section, offset=offset)
            maps[m.name] = m
            map_at[(sec_index, offset)] = m.name

    # --- BTF ----------------------------------------------------------------------------

    def _btf(self) -> Spec | None:
        sec = self.image.by_name.get(section_names.BTF)
        return Spec.parse(self.image.contents(sec), section=section_names.BTF) if sec else None

    def _ext(self) -> ExtIndex | None:
        sec = self.image.by_name.get(section_names.BTF_EXT)
        if sec is None or self.btf is None:
            return None
        return ExtIndex(self.image.contents(sec), self.btf, section=section_names.BTF_EXT)

    def _need_btf(self, section: str) -> Spec:
        if self.btf is None:
            raise ObjectFormatError(
                "this section needs BTF, but the object has no .BTF (compile with -g)", section=section
            )
        return self.btf

    def _datasec(self, name: str) -> tuple[int, Datasec] | None:
        return find_datasec(self.btf, name) if self.btf is not None else None

    # --- functions ----------------------------------------------------------------------

    def _functions(self) -> None:
        img = self.image
        by_section: dict[int, list[Symbol]] = {}
        for sym in img.symbols:
            if sym.type == STT_FUNC and 0 < sym.shndx < len(img.sections):
                by_section.setdefault(sym.shndx, []).append(sym)
        for sec in img.sections:
            if not sec.executable or not sec.size:
                continue
            syms = sorted(by_section.get(sec.index, []), key=lambda s: s.value)
            if not syms:
                raise ObjectFormatError("executable section has no function symbols", section=sec.name)
            code = img.view(sec)
            fns: list[_Function] = []
            for sym in syms:
                if sec.name != section_names.TEXT and sym.bind == STB_LOCAL:
                    raise ObjectFormatError(
                        f"program {sym.name!r} is static; programs must be global functions "
                        "(static functions belong in .text as subprograms)",
                        section=sec.name,
                        offset=sym.value,
                    )
                if sym.value % 8 or sym.size % 8 or not sym.size or sym.value + sym.size > sec.size:
                    raise ObjectFormatError(
                        f"function {sym.name!r} has a bad extent ({sym.value:#x}+{sym.size:#x})",
                        section=sec.name,
                        offset=sym.value,
                    )
                if fns and sym.value < fns[-1].end:
                    raise ObjectFormatError(f"function {sym.name!r} overlaps {fns[-1].name!r}", section=sec.name)
                fns.append(_Function(sym.name, sec, sym.value, sym, code[sym.value : sym.value + sym.size]))
            self.functions[sec.index] = fns
            by_function: dict[int, list[Reloc]] = {}
            for rel in img.relocations_for(sec):
                owner = self._function_at(sec, rel.offset)
                if owner is None:
                    raise ObjectFormatError("relocation outside any function", section=sec.name, offset=rel.offset)
                by_function.setdefault(owner.offset, []).append(rel)
            self._relocs[sec.index] = by_function
        every = [f for fs in self.functions.values() for f in fs]
        named = [self._named(f.symbol, f.section.name, f.offset) for f in every]
        for f, name in zip(every, unique_names(named), strict=True):
            f.name = name

    def _named(self, sym: Symbol | None, section: str, offset: int, name: str = "") -> Named:
        is_global = sym is not None and sym.bind != STB_LOCAL
        return Named(name or (sym.name if sym else ""), is_global, file_of(self.files, sym), section, offset)

    def _function_at(self, sec: Section, byte_off: int) -> _Function | None:
        fns = self.functions.get(sec.index, [])
        i = bisect.bisect_right(fns, byte_off, key=lambda f: f.offset) - 1  # sorted, non-overlapping
        return fns[i] if i >= 0 and byte_off < fns[i].end else None

    def _function_starting(self, sec: Section, byte_off: int, *, where: str, at: int) -> _Function:
        f = self._function_at(sec, byte_off)
        if f is None or f.offset != byte_off:
            raise ObjectFormatError(
                f"reference to {sec.name}+{byte_off:#x}, which is not the start of a function", section=where, offset=at
            )
        return f

    def _function_spec(
        self, f: _Function, map_at: Mapping[tuple[int, int], str], externs: Mapping[str, ExternSpec]
    ) -> FunctionSpec:
        return FunctionSpec(
            name=f.name,
            section=f.section.name,
            offset=f.offset,
            code=f.code,
            global_function=f.symbol.bind != STB_LOCAL and not f.symbol.hidden,
            hidden=f.symbol.bind != STB_LOCAL and f.symbol.hidden,
            body=LazyBody(partial(self._body, f, map_at, externs), self._lock, partial(self._lines, f)),
        )

    def _body(
        self, f: _Function, map_at: Mapping[tuple[int, int], str], externs: Mapping[str, ExternSpec]
    ) -> FunctionBody:
        """Decode ``f``: instructions, categorised relocations, its ``.BTF.ext`` records."""
        insns, slots = f.decoded(self._known)
        relocs: dict[int, Relocation] = {}
        sec = f.section
        for rel in self._relocs[sec.index].get(f.offset, ()):
            index = f.index_of(rel.offset, where=sec.name)
            relocs[index] = self._classify(f, insns[index], index, rel, map_at=map_at, externs=externs)
        for match in _PSEUDO_CALL.finditer(f.code):  # candidates found at C speed; the Insn decides
            if match.start() % 8:
                continue
            at = slots.index(match.start() // 8)
            if at is None or at in relocs or not insns[at].is_pseudo_call:
                continue
            here = slots.slot(at)
            target = f.offset + 8 * insns[at].jump_target(here)
            callee = self._function_starting(sec, target, where=sec.name, at=f.offset + 8 * here)
            relocs[at] = SubprogramCall(at, callee.name)
        func_type, line_words, core = self._ext_for(f, slots)
        ordered = [relocs[i] for i in sorted(relocs)] + core
        f.forget_decoded()  # the body keeps the instructions; decoded again only to explain a line record
        return FunctionBody(tuple(insns), tuple(ordered), func_type, line_words)

    def _lines(self, f: _Function) -> tuple[tuple[int, LineInfo], ...]:
        """``f``'s line records decoded, by instruction position (for messages; loads use the raw records)."""
        if self.ext is None:
            return ()
        f.decoded(self._known)
        out = []
        for li in self.ext.records("line", f.section.name, f.offset, f.end):
            assert isinstance(li, LineInfo)
            out.append((f.index_of(li.insn_off, where=section_names.BTF_EXT), li))
        return tuple(out)

    def _classify(
        self,
        f: _Function,
        insn: Insn,
        index: int,
        rel: Reloc,
        *,
        map_at: Mapping[tuple[int, int], str],
        externs: Mapping[str, ExternSpec],
    ) -> Relocation:
        sym, where = rel.symbol, f.section.name
        at = rel.offset

        def fail(why: str) -> ObjectFormatError:
            return ObjectFormatError(
                f"relocation against {sym.name or 'a section symbol'!r} {why}", section=where, offset=at
            )

        is_call = insn.is_call
        if rel.type not in (R_BPF_64_64, R_BPF_64_32):
            raise fail(f"has unsupported type {rel.type}")
        if sym.shndx == 0:
            ext = externs.get(sym.name)
            if ext is None:
                raise fail("names an undefined symbol that is not a __kconfig/__ksym extern")
            if is_call:
                if ext.kind is not ExternKind.KFUNC:
                    raise fail("calls an extern that is not a function")
                return KfuncCall(index, sym.name)
            if not insn.is_ldimm64:
                raise fail("is on an instruction that is neither ldimm64 nor call")
            return ExternReference(index, sym.name)
        target = self.image.section(sym.shndx, where=where)
        if is_call:
            if not insn.is_pseudo_call:
                raise fail("is on a helper or kfunc call (expected a BPF-to-BPF call)")
            if target.name != section_names.TEXT:
                raise fail(f"calls into section {target.name!r}; subprograms must be in .text")
            callee = self._function_starting(target, sym.value + 8 * (insn.imm + 1), where=where, at=at)
            return SubprogramCall(index, callee.name)
        if not insn.is_ldimm64:
            raise fail("is on an instruction that is neither ldimm64 nor call")
        if target.executable:
            if target.name != section_names.TEXT:
                raise fail(f"takes the address of code in {target.name!r}; callbacks must be in .text")
            callee = self._function_starting(target, sym.value + insn.imm, where=where, at=at)
            return FunctionPointer(index, callee.name)
        if section_names.is_data_section(target.name):
            if sym.type not in (STT_SECTION, STT_OBJECT, 0):
                raise fail("has an unexpected symbol type")
            offset = sym.value + insn.imm
            if not 0 <= offset <= target.size:
                raise fail(f"points outside {target.name} (offset {offset})")
            return DataReference(index, target.name, offset)
        # a static map is referred to through its section's symbol, its offset in the instruction
        name = map_at.get((target.index, sym.value + (insn.imm if sym.type == STT_SECTION else 0)))
        if name is None:
            raise fail(f"points into section {target.name!r} at {sym.value:#x}, where no map is defined")
        return MapReference(index, name)

    def _ext_for(self, f: _Function, slots: SlotMap) -> tuple[int, bytes, list[CoreRelocation]]:
        if self.ext is None:
            return 0, b"", []
        sec, where = f.section.name, section_names.BTF_EXT
        func_type = 0
        for fi in self.ext.records("func", sec, f.offset, f.offset + 1):
            assert isinstance(fi, FuncInfo)
            func_type = fi.type  # the last record for an offset wins, as libbpf's search does
        words = self.ext.line_words(sec, f.offset, f.end)
        stray = set(words[0::4]).difference(slots.starts)
        if stray:  # the second half of an ldimm64: the kernel would refuse it, and it could name no source line
            at = f.offset + 8 * min(stray)
            raise ObjectFormatError(f"line_info record at {sec}+{at:#x} is not at an instruction", section=where)
        lines = words.tobytes()
        core = []
        for r in self.ext.records("core", sec, f.offset, f.end):
            assert isinstance(r, CoreRelo)
            core.append(CoreRelocation(f.index_of(r.insn_off, where=where), r.type, r.access, r.kind))
        return func_type, lines, core

    # --- global data -------------------------------------------------------------------

    def _data_section(self, sec: Section) -> tuple[MapSpec, list[tuple[VariableSpec, Named]]]:
        data = self.image.contents(sec)
        flags = MapFlags.RDONLY_PROG if section_names.is_read_only_data(sec.name) else 0
        found = self._datasec(sec.name)
        if found is not None and self.btf is not None:
            placed = placed_vars(self.image, sec, self.btf, found[1])
            entries = [
                (
                    p.var.name,
                    p.offset,
                    p.size,
                    p.var.type,
                    p.var.linkage != VarLinkage.STATIC and not p.hidden,
                    p.symbol,
                )
                for p in placed
            ]
        else:  # no BTF: the symbol table is all there is
            symbols = [s for s in self.image.symbols if s.shndx == sec.index and s.type == STT_OBJECT]
            entries = [(s.name, s.value, s.size, 0, s.bind != STB_LOCAL and not s.hidden, s) for s in symbols]
        variables = []
        for name, offset, size, type_id, is_global, sym in entries:
            if offset + size > sec.size:
                raise ObjectFormatError(f"variable {name!r} lies outside its section", section=sec.name, offset=offset)
            var = VariableSpec(name, sec.name, offset, size, type_id, is_global, data[offset : offset + size])
            static = sym is not None and sym.bind == STB_LOCAL
            variables.append((var, Named(name, not static, file_of(self.files, sym), sec.name, offset)))
        variables.sort(key=lambda v: v[0].offset)
        if found is not None and any(v.is_global for v, _ in variables):
            flags |= MapFlags.MMAPABLE  # libbpf's rule: a skeleton exposes at least one variable
        data_map = MapSpec(
            name=sec.name,
            type=MapType.ARRAY,
            key_size=4,
            value_size=sec.size,
            max_entries=1,
            flags=int(flags),
            value_type=found[0] if found is not None else 0,
            data=None if sec.type == SHT_NOBITS else data,
            section=sec.name,
        )
        return data_map, variables

    # --- externs -----------------------------------------------------------------------

    def _externs(self) -> dict[str, ExternSpec]:
        undefined = [
            s for s in self.image.symbols if s.shndx == 0 and s.name and s.bind != STB_LOCAL and s.type != STT_SECTION
        ]
        if not undefined:
            return {}
        btf = self._need_btf("externs")
        declared: dict[str, tuple[str, int]] = {}
        for sec_name in (section_names.KCONFIG, section_names.KSYMS):
            found = self._datasec(sec_name)
            for vsi in found[1].vars if found else ():
                t = btf[vsi.type]
                if isinstance(t, Var | Func):
                    declared[t.name] = (sec_name, vsi.type)
        externs: dict[str, ExternSpec] = {}
        for sym in undefined:
            where = declared.get(sym.name)
            if where is None:
                where = self._extern_func(sym.name)
            if where is None:
                raise ObjectFormatError(
                    f"extern {sym.name!r} is neither __kconfig nor __ksym (no BTF declaration in .kconfig/.ksyms)",
                    section=".symtab",
                )
            sec_name, btf_id = where
            t = btf[btf_id]
            if isinstance(t, Func):
                if t.linkage != FuncLinkage.EXTERN:
                    raise ObjectFormatError(
                        f"extern function {sym.name!r} has non-extern linkage", section=section_names.BTF
                    )
                kind, type_id = ExternKind.KFUNC, t.type
            elif isinstance(t, Var):
                if t.linkage != VarLinkage.GLOBAL_EXTERN:
                    raise ObjectFormatError(
                        f"extern {sym.name!r} has non-extern BTF linkage", section=section_names.BTF
                    )
                kind = ExternKind.KCONFIG if sec_name == section_names.KCONFIG else ExternKind.KSYM
                type_id = graph.skip_qualifiers(btf, t.type)
            else:
                raise ObjectFormatError(
                    f"extern {sym.name!r} has BTF type {btf_id}, not VAR or FUNC", section=section_names.BTF
                )
            if kind is ExternKind.KCONFIG and type_id == 0:
                raise ObjectFormatError(f"kconfig extern {sym.name!r} cannot be void", section=section_names.KCONFIG)
            externs[sym.name] = ExternSpec(sym.name, kind, type_id, sym.bind == STB_WEAK, btf_id)
        return externs

    def _extern_func(self, name: str) -> tuple[str, int] | None:
        """kfuncs that clang did not place in a .ksyms DATASEC: any extern FUNC of that name."""
        assert self.btf is not None
        for type_id in self.btf.find(name, Kind.FUNC):
            t = self.btf[type_id]
            if isinstance(t, Func) and t.linkage == FuncLinkage.EXTERN:
                return section_names.KSYMS, type_id
        return None

    # --- license and version -------------------------------------------------------------

    def _license(self) -> str:
        sec = self.image.by_name.get("license")
        if sec is None:
            return ""
        raw = self.image.contents(sec)
        return raw.split(b"\0", 1)[0].decode("ascii", "replace")

    def _kernel_version(self) -> int:
        sec = self.image.by_name.get("version")
        if sec is None:
            return 0
        raw = self.image.contents(sec)
        if len(raw) != 4:
            raise ObjectFormatError(f"version section must be 4 bytes, is {len(raw)}", section="version")
        return int(struct.unpack("<I", raw)[0])


__all__ = ["read"]
