"""Map definitions: BTF-defined (``.maps``), legacy (``maps``) and struct_ops.

A BTF map definition is a struct whose members encode numbers in types —
``__uint(max_entries, 64)`` is ``int (*max_entries)[64]`` — so reading one is
reading types, with the initial contents of prog arrays and maps of maps
given by relocations on the ``values`` member.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import replace

from dynbpf._btf import graph
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Array, Enum, Enum64, FuncProto, Member, Ptr, Struct, VarLinkage
from dynbpf._elf.datasec import placed_vars, require_datasec
from dynbpf._elf.image import R_BPF_64_ABS64, STT_FILE_OR_SECTION, Image, Section, Symbol
from dynbpf._elf.names import Named, file_of, unique_names
from dynbpf._elf.spec import MapSpec, Pinning
from dynbpf._sys.constants import MapFlags, MapType, type_name
from dynbpf.errors import ObjectFormatError

Found = list[tuple[int, int, MapSpec]]  # (section index, offset, map)
Fail = Callable[[str], ObjectFormatError]

_INT_FIELDS = ("type", "max_entries", "map_flags", "numa_node", "key_size", "value_size", "pinning", "map_extra")
_MAP_IN_MAP = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
_LEGACY_DEF = struct.Struct("<IIIII")


def read_btf_maps(
    image: Image, sec: Section, btf: Spec, functions: Mapping[tuple[int, int], str], files: Mapping[int, str]
) -> Found:
    """The maps of ``.maps``; static maps of one name (from different files of a linked object) named apart."""
    placed = placed_vars(image, sec, btf, require_datasec(btf, sec))
    names = unique_names(
        [
            Named(p.var.name, p.var.linkage != VarLinkage.STATIC, file_of(files, p.symbol), sec.name, p.offset)
            for p in placed
        ]
    )
    relocs = _relocs_by_offset(image, sec)
    reader = _BtfMaps(btf, sec, functions, {p.offset: name for p, name in zip(placed, names, strict=True)})
    found: Found = []
    for p, name in zip(placed, names, strict=True):
        own = {off: sym for off, sym in relocs.items() if p.offset <= off < p.offset + p.size}
        m = reader.definition(name, p.var.type, p.offset, own)
        found.append((sec.index, p.offset, replace(m, btf_var=p.var_id)))
    return found


class _BtfMaps:
    """Reads the map definition structs of one ``.maps`` section."""

    def __init__(
        self, btf: Spec, sec: Section, functions: Mapping[tuple[int, int], str], maps_at: Mapping[int, str]
    ) -> None:
        self.btf = btf
        self.sec = sec
        self.functions = functions  # (section index, offset) -> program name, for prog array contents
        self.maps_at = maps_at  # offset in .maps -> map name, for map-of-maps contents

    def definition(
        self, name: str, type_id: int, offset: int, relocs: Mapping[int, Symbol], *, inner: bool = False
    ) -> MapSpec:
        btf = self.btf

        def fail(why: str) -> ObjectFormatError:
            return ObjectFormatError(f"map {name!r}: {why}", section=self.sec.name, offset=offset)

        struct_t = btf[graph.resolve(btf, type_id)]
        if not isinstance(struct_t, Struct):
            raise fail("definition is not a struct")
        ints: dict[str, int] = {}
        types = {"key": 0, "value": 0}
        values_member: Member | None = None
        for m in struct_t.members:
            if m.name in _INT_FIELDS:
                ints[m.name] = _field_int(btf, m, fail)
            elif m.name in types:
                ptr = btf[graph.resolve(btf, m.type)]
                if not isinstance(ptr, Ptr):
                    raise fail(f"{m.name} must be declared with __type (a pointer)")
                types[m.name] = ptr.type
            elif m.name == "values":
                values_member = m
            else:
                raise fail(f"unknown field {m.name!r}")
        if "type" not in ints:
            raise fail("no map type (__uint(type, ...))")
        try:
            kind = MapType(ints["type"])
        except ValueError:
            raise fail(f"unknown map type {ints['type']}") from None
        pinning = ints.get("pinning", 0)
        if pinning not in (0, 1):
            raise fail(f"unsupported pinning {pinning} (only LIBBPF_PIN_NONE and LIBBPF_PIN_BY_NAME)")
        spec = MapSpec(
            name=name,
            type=kind,
            key_size=_sized(btf, types["key"], ints.get("key_size"), "key", fail),
            value_size=_sized(btf, types["value"], ints.get("value_size"), "value", fail),
            max_entries=ints.get("max_entries", 0),
            flags=ints.get("map_flags", 0),
            numa_node=ints.get("numa_node", 0),
            map_extra=ints.get("map_extra", 0),
            pinning=Pinning(pinning),
            key_type=types["key"],
            value_type=types["value"],
            section=self.sec.name,
        )
        if values_member is None:
            return spec
        if inner:
            raise fail("an inner map cannot have values")
        return self._with_values(spec, values_member, offset, relocs, fail)

    def _with_values(
        self, spec: MapSpec, member: Member, offset: int, relocs: Mapping[int, Symbol], fail: Fail
    ) -> MapSpec:
        """A prog array or map of maps whose ``values`` member declares the inner map and initial slots."""
        btf = self.btf
        arr = btf[graph.resolve(btf, member.type)]
        elem = btf[graph.resolve(btf, arr.type)] if isinstance(arr, Array) else None
        if not isinstance(elem, Ptr):
            raise fail("values must be declared with __array (an array of pointers)")
        pointee = btf[graph.resolve(btf, elem.type)]
        inner = None
        if spec.type in _MAP_IN_MAP:
            if not isinstance(pointee, Struct):
                raise fail("the inner map of a map of maps must be a map definition struct")
            inner = self.definition(f"{spec.name}.inner", elem.type, offset, {}, inner=True)
        elif spec.type == MapType.PROG_ARRAY:
            if not isinstance(pointee, FuncProto):
                raise fail("values of a prog array must be functions")
        else:
            kind = type_name(MapType, spec.type)
            raise fail(f"values (initial contents) are only for prog arrays and maps of maps, not a {kind}")
        if spec.value_size not in (0, 4):
            kind = type_name(MapType, spec.type)
            raise fail(f"value_size {spec.value_size} of a {kind} with values must be 4 (an fd)")
        base = offset + member.bit_offset // 8
        contents = []
        for rel_off, sym in relocs.items():
            slot, rem = divmod(rel_off - base, 8)
            if rel_off < base or rem:
                raise fail(f"initial value at {rel_off:#x} is not a slot of values")
            contents.append((slot, self._slot_target(spec.type, sym, fail)))
        max_entries = spec.max_entries or max((s for s, _ in contents), default=-1) + 1
        if any(slot >= max_entries for slot, _ in contents):
            raise fail(f"initial value beyond max_entries {max_entries}")
        return replace(spec, value_size=4, max_entries=max_entries, inner=inner, contents=tuple(sorted(contents)))

    def _slot_target(self, kind: MapType, sym: Symbol, fail: Fail) -> str:
        if kind == MapType.PROG_ARRAY:
            name = self.functions.get((sym.shndx, sym.value))
            if name is None:
                raise fail(f"initial value {sym.name!r} is not a program")
            return name
        name = self.maps_at.get(sym.value) if sym.shndx == self.sec.index else None
        if name is None:
            raise fail(f"initial value {sym.name!r} is not a map defined in {self.sec.name}")
        return name


def _field_int(btf: Spec, m: Member, fail: Fail) -> int:
    """The number a ``__uint``/``__ulong`` field encodes."""
    t = btf[graph.resolve(btf, m.type)]
    if isinstance(t, Ptr):
        arr = btf[graph.resolve(btf, t.type)]
        if isinstance(arr, Array):
            return arr.nelems
    if isinstance(t, Enum | Enum64) and len(t.values) == 1:
        return t.values[0].value
    raise fail(f"field {m.name!r} must be declared with __uint (a pointer to an array)")


def _sized(btf: Spec, type_id: int, declared: int | None, what: str, fail: Fail) -> int:
    if not type_id:
        return declared or 0
    size = graph.size_of(btf, type_id)
    if declared is not None and declared != size:
        raise fail(f"{what}_size {declared} disagrees with the size of its type ({size})")
    return size


def read_legacy_maps(image: Image, sec: Section) -> Found:
    """``SEC("maps")`` ``struct bpf_map_def`` arrays, as old objects declare them."""
    syms = sorted(
        (s for s in image.symbols if s.shndx == sec.index and s.name and s.type not in STT_FILE_OR_SECTION),
        key=lambda s: s.value,
    )
    if not syms:
        raise ObjectFormatError("legacy maps section has no map symbols", section=sec.name)
    def_size, rem = divmod(sec.size, len(syms))
    if rem or def_size < _LEGACY_DEF.size or def_size % 4:
        raise ObjectFormatError(f"cannot split {sec.size} bytes into {len(syms)} map definitions", section=sec.name)
    data = image.contents(sec)
    found: Found = []
    for sym in syms:
        if sym.value % def_size or sym.value + def_size > sec.size:
            raise ObjectFormatError(f"map {sym.name!r} is misaligned", section=sec.name, offset=sym.value)
        raw = data[sym.value : sym.value + def_size]
        map_type, key_size, value_size, max_entries, flags = _LEGACY_DEF.unpack_from(raw)
        if any(raw[_LEGACY_DEF.size :]):
            raise ObjectFormatError(
                f"map {sym.name!r} uses legacy definition fields dynbpf does not support",
                section=sec.name,
                offset=sym.value,
            )
        try:
            kind = MapType(map_type)
        except ValueError:
            raise ObjectFormatError(
                f"map {sym.name!r}: unknown map type {map_type}", section=sec.name, offset=sym.value
            ) from None
        found.append(
            (sec.index, sym.value, MapSpec(sym.name, kind, key_size, value_size, max_entries, flags, section=sec.name))
        )
    return found


def read_struct_ops(image: Image, sec: Section, btf: Spec, functions: Mapping[tuple[int, int], str]) -> Found:
    """struct_ops maps: a kernel ops struct whose function pointers name programs."""
    relocs = _relocs_by_offset(image, sec)
    data = image.contents(sec)
    found: Found = []
    for p in placed_vars(image, sec, btf, require_datasec(btf, sec)):
        var, offset = p.var, p.offset
        type_id = graph.resolve(btf, var.type)
        ops = btf[type_id]
        if not isinstance(ops, Struct):
            raise ObjectFormatError(f"struct_ops map {var.name!r} is not a struct", section=sec.name, offset=offset)
        if offset + ops.size > len(data):
            raise ObjectFormatError(
                f"struct_ops map {var.name!r} lies outside its section", section=sec.name, offset=offset
            )
        slots: list[tuple[str, str]] = []
        by_offset = {offset + m.bit_offset // 8: m for m in ops.members}
        for rel_off, sym in relocs.items():
            if not offset <= rel_off < offset + ops.size:
                continue
            member = by_offset.get(rel_off)
            prog = functions.get((sym.shndx, sym.value))
            if member is None or prog is None:
                raise ObjectFormatError(
                    f"struct_ops map {var.name!r}: relocation to {sym.name!r} does not set a "
                    "function pointer member to a program",
                    section=sec.name,
                    offset=rel_off,
                )
            slots.append((member.name, prog))
        flags = MapFlags.LINK if sec.name.endswith(".link") else 0
        found.append(
            (
                sec.index,
                offset,
                MapSpec(
                    name=var.name,
                    type=MapType.STRUCT_OPS,
                    key_size=4,
                    value_size=ops.size,
                    max_entries=1,
                    flags=int(flags),
                    value_type=type_id,
                    data=data[offset : offset + ops.size],
                    section=sec.name,
                    program_slots=tuple(slots),
                    btf_var=p.var_id,
                ),
            )
        )
    return found


def _relocs_by_offset(image: Image, sec: Section) -> dict[int, Symbol]:
    out: dict[int, Symbol] = {}
    for rel in image.relocations_for(sec):
        if rel.type != R_BPF_64_ABS64:
            raise ObjectFormatError(f"unexpected relocation type {rel.type}", section=sec.name, offset=rel.offset)
        out[rel.offset] = rel.symbol
    return out
