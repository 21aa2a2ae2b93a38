"""The object's BTF completed the way libbpf completes it before the kernel sees it.

clang writes BTF for one translation unit, before anything is placed, so the
blob it emits is not yet loadable:

- DATASEC sizes and the offsets of global variables are 0: the ELF section
  and symbol table say where things ended up (libbpf's ``btf_fixup_datasec``).
  A global with hidden visibility becomes a static VAR, as its ELF symbol
  says nobody outside the object may see it; a hidden global subprogram's
  FUNC becomes static too, so the verifier checks it in its callers' context.
- ``.kconfig`` describes values the loader lays out in a map of its own; the
  VARs get those offsets and lose their extern linkage, which the kernel
  refuses (``bpf_object__collect_externs``).
- ``.ksyms`` describes kernel symbols that take no room at all. Each entry
  becomes a 4-byte slot: VARs become plain ``int`` variables, and FUNCs, which
  a DATASEC may not list, are replaced there by one ``dummy_ksym`` VAR; the
  FUNCs themselves become global (the kernel refuses extern FUNCs) and their
  unnamed parameters borrow the name ``dummy_ksym`` (the kernel refuses
  unnamed parameters of a FUNC).

Only DATASEC placement needs facts from the ELF file; :class:`ElfLayout`
carries them. Types keep their ids and the string table stays a prefix
(:mod:`dynbpf._prepare.btf_rewrite`), so func_info, line_info, CO-RE records
and map definitions stay valid against the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dynbpf._btf import graph
from dynbpf._btf.errors import TypeNotFound
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import (
    Datasec,
    Func,
    FuncLinkage,
    FuncProto,
    Int,
    Param,
    Type,
    Var,
    VarLinkage,
    VarSecinfo,
)
from dynbpf._elf.datasec import find_datasec
from dynbpf._elf.image import SHT_SYMTAB, STB_GLOBAL, STB_LOCAL, STB_WEAK, STT_FUNC, STT_OBJECT, Image
from dynbpf._elf.spec import ObjectSpec
from dynbpf._prepare import kconfig
from dynbpf._prepare.btf_rewrite import rewrite
from dynbpf._section_names import BTF, KCONFIG, KSYMS, TEXT, is_data_section
from dynbpf.errors import ObjectFormatError

#: the VAR libbpf puts in ``.ksyms`` in place of FUNCs, and the name unnamed kfunc parameters borrow
DUMMY_KSYM = "dummy_ksym"
KSYM_SLOT = 4  # bytes per .ksyms entry, as libbpf lays them out

_SYM_SIZE = 24  # Elf64_Sym
_ST_OTHER = 5  # offset of st_other in Elf64_Sym
_STV_INTERNAL, _STV_HIDDEN = 1, 2


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a global variable's ELF symbol puts it in its section, and whether it is hidden."""

    offset: int
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class ElfLayout:
    """What libbpf's DATASEC fix-up reads from the ELF file.

    ``sections`` maps section names to sizes; ``variables`` maps the names of
    global and weak object symbols to their placement (the first symbol of a
    name wins, as in libbpf); ``hidden_functions`` names the global ``.text``
    functions with hidden or internal visibility.
    """

    sections: Mapping[str, int]
    variables: Mapping[str, Placement]
    hidden_functions: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def read(cls, source: bytes | str | os.PathLike[str]) -> ElfLayout:
        """The layout of a BPF object file (a path, or its bytes): exactly what libbpf sees."""
        if isinstance(source, bytes):
            data = source
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as e:
                raise ObjectFormatError(f"cannot read {source}: {e.strerror}") from None
        return cls.of_image(Image(data))

    @classmethod
    def of_image(cls, image: Image) -> ElfLayout:
        sections: dict[str, int] = {}
        for sec in image.sections:
            if sec.name:
                sections.setdefault(sec.name, sec.size)
        symtab = next(s for s in image.sections if s.type == SHT_SYMTAB)  # the one Image read its symbols from
        raw = image.contents(symtab)
        text = image.by_name.get(TEXT)
        variables: dict[str, Placement] = {}
        hidden_functions = set()
        for sym in image.symbols:
            hidden = raw[sym.index * _SYM_SIZE + _ST_OTHER] & 3 in (_STV_HIDDEN, _STV_INTERNAL)
            if sym.type == STT_OBJECT and sym.bind in (STB_GLOBAL, STB_WEAK) and sym.name:
                variables.setdefault(sym.name, Placement(sym.value, hidden))
            elif sym.type == STT_FUNC and sym.bind != STB_LOCAL and hidden and text and sym.shndx == text.index:
                hidden_functions.add(sym.name)
        return cls(sections, variables, frozenset(hidden_functions))

    @classmethod
    def of(cls, obj: ObjectSpec) -> ElfLayout:
        """The layout as far as an :class:`ObjectSpec` records it.

        Data sections are exact: their maps keep the section size and their
        variables the symbol offsets. A symbol counts as hidden where the
        spec calls a BTF-global variable or ``.text`` function not global
        (the reader folds hidden visibility into that). Other DATASECs
        (``.maps``, ``.struct_ops``, ``license``) are laid out the way clang
        emits them: in declaration order, each variable at the next offset
        its type's alignment allows; only :meth:`read` sees sections holding
        padding or reordered symbols (every fixture gives identical results).
        """
        sections: dict[str, int] = {}
        variables: dict[str, Placement] = {}
        for m in obj.maps.values():
            if m.name == m.section and is_data_section(m.section):
                sections[m.section] = m.value_size
        for v in obj.variables.values():
            if v.section in sections:
                variables.setdefault(v.name, Placement(v.offset, hidden=not v.is_global))
        # hidden globals only (a global's name is unique); a static of the same name in another file is not one
        hidden = frozenset(f.name for f in obj.functions.values() if f.section == TEXT and f.hidden)
        btf = obj.btf
        if btf is not None:
            for sec_id, sec in _datasecs(btf):
                if sec.name in sections or sec.name in (KCONFIG, KSYMS):
                    continue
                if sec.size:  # laid out by a linker: the symbols sit where the DATASEC says
                    for vsi in sec.vars:
                        var = _var(btf, sec_id, vsi)
                        if var.linkage == VarLinkage.GLOBAL_ALLOCATED:
                            variables.setdefault(var.name, Placement(vsi.offset))
                    continue
                end = 0
                for vsi in sec.vars:
                    var = _var(btf, sec_id, vsi)
                    if var.linkage == VarLinkage.GLOBAL_ALLOCATED:
                        offset = _align_up(end, graph.align_of(btf, var.type))
                        variables.setdefault(var.name, Placement(offset))
                        end = offset + vsi.size
                    else:
                        end = max(end, vsi.offset + vsi.size)
                sections[sec.name] = end
        return cls(sections, variables, hidden)


def fixup(
    obj: ObjectSpec,
    *,
    layout: ElfLayout | None = None,
    kconfig_offsets: Mapping[str, int] | None = None,
    kconfig_size: int = 0,
) -> Spec:
    """``obj.btf`` completed as libbpf completes it at open time (see the module docstring).

    ``layout`` defaults to :meth:`ElfLayout.of` the object. ``kconfig_offsets``
    gives each ``.kconfig`` variable's offset in the loader's kconfig map and
    ``kconfig_size`` that map's size; without them libbpf's own layout is
    computed (:func:`dynbpf._prepare.kconfig.layout`).
    """
    btf = obj.btf
    if btf is None:
        raise ObjectFormatError(f"object {obj.name!r} has no BTF to fix up", section=BTF)
    fix = _Fixup(btf, layout if layout is not None else ElfLayout.of(obj))
    fix.ksyms()
    if kconfig_offsets is None:
        placed = kconfig.layout(btf, obj.externs.values())
        kconfig_offsets, kconfig_size = placed.offsets, placed.size
    fix.kconfig(kconfig_offsets, kconfig_size)
    fix.datasecs()
    fix.hidden_functions()
    fix.extern_funcs()
    return rewrite(btf, fix.replace, fix.append)


class _Fixup:
    """The changes to one blob, collected by id before it is rewritten once."""

    def __init__(self, btf: Spec, layout: ElfLayout) -> None:
        self.btf = btf
        self.layout = layout
        self.replace: dict[int, Type] = {}
        self.append: list[Type] = []

    def current(self, type_id: int) -> Type | None:
        """The type as changed so far (several fixes may touch one FUNC_PROTO)."""
        found = self.replace.get(type_id)
        return found if found is not None else _type(self.btf, type_id)

    def fail(self, type_id: int, message: str) -> ObjectFormatError:
        section, offset = self.btf.locate(type_id)
        return ObjectFormatError(f"type [{type_id}]: {message}", section=section, offset=offset)

    def ksyms(self) -> None:
        found = find_datasec(self.btf, KSYMS)
        if found is None:
            return
        sec_id, sec = found
        dummy_id, int_id = 0, _int32(self.btf)
        if any(isinstance(self.current(vsi.type), Func) for vsi in sec.vars):
            dummy_id = len(self.btf) + len(self.append)
            self.append.append(Var(DUMMY_KSYM, int_id, VarLinkage.GLOBAL_ALLOCATED))
        slots = []
        for i, vsi in enumerate(sec.vars):
            t = self.current(vsi.type)
            if isinstance(t, Func):
                self.globalize(vsi.type, t)
                slots.append(VarSecinfo(dummy_id, i * KSYM_SLOT, KSYM_SLOT))
            elif isinstance(t, Var):
                self.replace[vsi.type] = Var(t.name, int_id, VarLinkage.GLOBAL_ALLOCATED)
                slots.append(VarSecinfo(vsi.type, i * KSYM_SLOT, KSYM_SLOT))
            else:
                raise self.fail(sec_id, f"{KSYMS} lists type [{vsi.type}], which is neither VAR nor FUNC")
        self.replace[sec_id] = Datasec(sec.name, len(slots) * KSYM_SLOT, tuple(slots))

    def globalize(self, func_id: int, func: Func) -> None:
        """An extern FUNC made loadable: global linkage, every typed parameter named."""
        self.replace[func_id] = Func(func.name, func.type, FuncLinkage.GLOBAL)
        proto = self.current(func.type)
        if not isinstance(proto, FuncProto):
            raise self.fail(func_id, f"FUNC {func.name!r} has type [{func.type}], which is not a FUNC_PROTO")
        if any(p.type and not p.name for p in proto.params):
            params = tuple(Param(DUMMY_KSYM, p.type) if p.type and not p.name else p for p in proto.params)
            self.replace[func.type] = replace(proto, params=params)

    def kconfig(self, offsets: Mapping[str, int], size: int) -> None:
        found = find_datasec(self.btf, KCONFIG)
        if found is None:
            return
        sec_id, sec = found
        variables = [(vsi, _var(self.btf, sec_id, vsi)) for vsi in sec.vars]
        for vsi, var in variables:
            if self.current(var.type) is None:
                raise self.fail(vsi.type, f"kconfig extern {var.name!r} is void")
        slots = []
        end = 0
        for vsi, var in variables:
            offset = offsets.get(var.name)
            if offset is None:
                raise self.fail(vsi.type, f"no offset in the kconfig map for extern {var.name!r}")
            self.replace[vsi.type] = Var(var.name, var.type, VarLinkage.GLOBAL_ALLOCATED)
            slots.append(VarSecinfo(vsi.type, offset, vsi.size))
            end = max(end, offset + _size(self.btf, var.type))
        self.replace[sec_id] = Datasec(sec.name, size or end, _by_offset(slots))

    def datasecs(self) -> None:
        for sec_id, sec in _datasecs(self.btf):
            if sec.name in (KCONFIG, KSYMS):
                continue
            size, place = sec.size, sec.size == 0
            if place:
                size = self.layout.sections.get(sec.name, 0)
                if not size:
                    raise self.fail(sec_id, f"DATASEC {sec.name!r}: no ELF section of that name gives its size")
            slots = []
            for vsi in sec.vars:
                var = _var(self.btf, sec_id, vsi)
                if var.linkage != VarLinkage.GLOBAL_ALLOCATED:
                    slots.append(vsi)
                    continue
                where = self.layout.variables.get(var.name)
                if where is None:
                    raise self.fail(vsi.type, f"no ELF symbol places global variable {var.name!r} ({sec.name})")
                slots.append(VarSecinfo(vsi.type, where.offset, vsi.size) if place else vsi)
                if where.hidden:
                    self.replace[vsi.type] = Var(var.name, var.type, VarLinkage.STATIC)
            fixed = Datasec(sec.name, size, _by_offset(slots))
            if fixed != sec:
                self.replace[sec_id] = fixed

    def hidden_functions(self) -> None:
        for name in sorted(self.layout.hidden_functions):
            for func_id in self.btf.find(name, Kind.FUNC):
                t = self.current(func_id)
                if isinstance(t, Func) and t.linkage == FuncLinkage.GLOBAL:
                    self.replace[func_id] = Func(t.name, t.type, FuncLinkage.STATIC)
                    break

    def extern_funcs(self) -> None:
        """Extern FUNCs outside ``.ksyms`` (libbpf refuses such objects; the kernel refuses the linkage)."""
        for type_id in range(self.btf.first_id, len(self.btf)):
            if self.btf.kind(type_id) == Kind.FUNC:
                t = self.current(type_id)
                if isinstance(t, Func) and t.linkage == FuncLinkage.EXTERN:
                    self.globalize(type_id, t)


def _type(btf: Spec, type_id: int) -> Type | None:
    try:
        return btf[type_id]
    except TypeNotFound:
        raise ObjectFormatError(f"reference to type [{type_id}], which does not exist", section=btf.section) from None


def _size(btf: Spec, type_id: int) -> int:
    _type(btf, type_id)  # a dangling id is the blob's fault, not the caller's
    return graph.size_of(btf, type_id)


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _int32(btf: Spec) -> int:
    """The first 32-bit INT (libbpf types ``.ksyms`` VARs with it); 0 if the blob has none."""
    for type_id in range(btf.first_id, len(btf)):
        if btf.kind(type_id) == Kind.INT:
            t = btf[type_id]
            if isinstance(t, Int) and t.bits == 32:
                return type_id
    return 0


def _datasecs(btf: Spec) -> Iterator[tuple[int, Datasec]]:
    for type_id in range(btf.first_id, len(btf)):
        if btf.kind(type_id) == Kind.DATASEC:
            t = btf[type_id]
            assert isinstance(t, Datasec)
            yield type_id, t


def _var(btf: Spec, sec_id: int, vsi: VarSecinfo) -> Var:
    t = _type(btf, vsi.type)
    if not isinstance(t, Var):
        section, offset = btf.locate(sec_id)
        raise ObjectFormatError(
            f"type [{sec_id}]: DATASEC lists type [{vsi.type}], which is not a VAR", section=section, offset=offset
        )
    return t


def _by_offset(slots: list[VarSecinfo]) -> tuple[VarSecinfo, ...]:
    return tuple(sorted(slots, key=lambda s: s.offset))
