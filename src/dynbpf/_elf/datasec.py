"""The variables of a data-carrying section, placed by BTF and the symbol table together.

``.maps``, ``.struct_ops`` and the global data sections are all described by a
BTF DATASEC. clang leaves the final placement to the linker, so a variable's
offset and size are taken from its ELF symbol when there is one (as libbpf's
DATASEC fix-up does), and from the DATASEC record otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynbpf import _section_names as section_names
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Datasec, Var
from dynbpf._elf.image import STT_FILE_OR_SECTION, Image, Section, Symbol
from dynbpf.errors import ObjectFormatError


@dataclass(frozen=True, slots=True)
class PlacedVar:
    var: Var
    var_id: int  # the BTF VAR
    offset: int
    size: int
    hidden: bool = False  # the symbol has hidden visibility: libbpf makes such a variable static
    symbol: Symbol | None = None  # the ELF symbol of the variable, where there is one


def find_datasec(btf: Spec, name: str) -> tuple[int, Datasec] | None:
    for type_id in btf.find(name, Kind.DATASEC):
        t = btf[type_id]
        if isinstance(t, Datasec):
            return type_id, t
    return None


def placed_vars(image: Image, sec: Section, btf: Spec, datasec: Datasec) -> list[PlacedVar]:
    """Each variable of ``datasec`` with its place in ``sec``.

    A DATASEC with a size was laid out already (libbpf's linker does it), so
    its offsets are final and a symbol is matched by place and name: a linked
    object may have several static variables of one name. Otherwise (clang's
    own output) the symbol of that name gives the place.
    """
    symbols = [s for s in image.symbols if s.shndx == sec.index and s.name and s.type not in STT_FILE_OR_SECTION]
    by_name = {s.name: s for s in symbols}
    by_place = {(s.value, s.name): s for s in symbols}
    laid_out = datasec.size != 0
    out = []
    for vsi in datasec.vars:
        var = btf[vsi.type]
        if not isinstance(var, Var):
            raise ObjectFormatError(
                f"DATASEC {sec.name} lists type {vsi.type}, which is not a VAR", section=section_names.BTF
            )
        if laid_out:
            sym = by_place.get((vsi.offset, var.name))
            offset, size = vsi.offset, vsi.size
        else:
            sym = by_name.get(var.name)
            offset, size = (sym.value, sym.size or vsi.size) if sym else (vsi.offset, vsi.size)
        if offset + size > sec.size:
            raise ObjectFormatError(f"variable {var.name!r} lies outside its section", section=sec.name, offset=offset)
        out.append(PlacedVar(var, vsi.type, offset, size, sym is not None and sym.hidden, sym))
    return out


def require_datasec(btf: Spec, sec: Section) -> Datasec:
    found = find_datasec(btf, sec.name)
    if found is None:
        raise ObjectFormatError(f"no BTF DATASEC describes section {sec.name}", section=section_names.BTF)
    return found[1]
