"""Changing an object's maps before they are created: ``dynbpf.open(..., map_edits={name: MapEdit(...)})``.

Real tools leave sizes open in the object and fill them in from the command
line or the machine: a stack-trace map sized by ``--stack-depth``, one slot
per CPU, a map of ring buffers whose ring size is an option, a scratch
buffer in a custom data section (``.data.buf``) grown to what the user
asked. libbpf does this with ``bpf_map__set_max_entries`` and friends
between open and load; dynbpf takes the same edits as one option of
``open`` and applies them to the object's ``MapSpec``s before prepare, so
everything after (BTF fix-up, instructions, map creation, views) sees the
edited definition.

Everything here is checked before anything is created: an edit that does
not fit its map raises :class:`~dynbpf.errors.MapEditError` naming the map
and the field; an edit of a map the object does not have raises
:class:`~dynbpf.errors.NotFound`, like every unknown name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from dynbpf._btf import graph
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Array, Datasec, Var, VarSecinfo
from dynbpf._elf.names import source_name
from dynbpf._elf.spec import MapSpec, ObjectSpec, VariableSpec
from dynbpf._prepare.btf_rewrite import rewrite
from dynbpf._runtime import mapcreate
from dynbpf._section_names import is_data_section
from dynbpf._sys import commands
from dynbpf._sys.constants import MapFlags, MapType, type_name
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, MapEditError, NotFound, SyscallError

_U32 = 1 << 32
_MAPS_OF_MAPS = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
#: Map kinds whose definition has no key (key_size must stay 0) or no value.
_KEYLESS = frozenset(
    {
        MapType.RINGBUF,
        MapType.USER_RINGBUF,
        MapType.QUEUE,
        MapType.STACK,
        MapType.BLOOM_FILTER,
        MapType.ARENA,
    }
)
_DATA_EDITABLE = ("value_size", "flags", "numa_node")  # what a global-data map allows besides create/reuse


@dataclass(frozen=True, slots=True)
class MapEdit:
    """Changes to one map's definition, applied before the map is created (None: keep the object's).

    The fields are libbpf's setters: ``max_entries``, ``key_size``,
    ``value_size``, ``type``, ``flags``, ``numa_node``, ``map_extra``
    (``bpf_map__set_*``); ``inner`` edits the inner map template of a map
    of maps, ``inner_map_fd`` takes that template from an existing map
    instead (``bpf_map__set_inner_map_fd``). ``create=False`` leaves the map
    out (``bpf_map__set_autocreate``): loads of it are poisoned, so only a
    program that reaches one fails. ``reuse_fd`` / ``reuse_pin`` use an
    existing map instead of creating one (``bpf_map__reuse_fd``); it must
    match the (edited) definition.

    A global-data map (``.bss``, ``.data.buf``) is a one-element array: only
    ``value_size`` (which resizes its last variable, an array, as libbpf
    does), ``flags``, ``numa_node``, ``create`` and reuse apply.
    """

    max_entries: int | None = None
    key_size: int | None = None
    value_size: int | None = None
    type: MapType | int | None = None
    flags: int | None = None
    numa_node: int | None = None
    map_extra: int | None = None
    inner: MapEdit | None = None
    inner_map_fd: int | None = None
    create: bool = True
    reuse_fd: int | None = None
    reuse_pin: str | os.PathLike[str] | None = None

    def _set(self) -> list[str]:
        """The fields this edit sets (different from the defaults)."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]


@dataclass(frozen=True, slots=True)
class Edited:
    """An object with its edits applied: the spec to prepare, the maps left out, the maps reused.

    ``reused`` holds fds owned by whoever takes the ``Edited`` (dups of the
    caller's fds, or opened pins); a collection hands them to its map registry.
    """

    spec: ObjectSpec
    absent: frozenset[str]
    reused: Mapping[str, Fd]


def apply(obj: ObjectSpec, edits: Mapping[str, MapEdit]) -> Edited:
    """``obj`` with ``edits`` applied; raises :class:`MapEditError` (nothing opened) if one does not fit.

    Reused maps are opened and checked last, once every edit is known to
    fit, and closed again if one of them does not match.
    """
    maps = dict(obj.maps)
    variables = dict(obj.variables)
    btf = obj.btf
    absent: set[str] = set()
    for name, edit in edits.items():
        spec = maps.get(name)
        if spec is None:
            raise NotFound(f"object {obj.name!r}", "map", name, maps, option="map_edits=")
        if not isinstance(edit, MapEdit):
            raise MapEditError(name, None, f"expected a dynbpf.MapEdit, got {type(edit).__name__}")
        edited = _edit(spec, edit, name)
        if is_global_data(spec) and edit.value_size is not None and edit.value_size != spec.value_size:
            btf, edited, resized = _resize_section(obj, btf, edited, edit.value_size)
            variables[resized.name] = resized
        maps[name] = edited
        if not edit.create:
            absent.add(name)
    for name in sorted(absent):
        holders = [m.name for m in maps.values() if m.type in _MAPS_OF_MAPS and name in (t for _, t in m.contents)]
        if holders:
            raise MapEditError(
                name, "create", f"map {holders[0]!r} holds it in its initial slots, so it must be created"
            )
    out = replace(obj, maps=maps, variables=variables, btf=btf)
    return Edited(out, frozenset(absent), _open_reused(out, edits))


def is_global_data(spec: MapSpec) -> bool:
    """A map the object's data section ``spec.section`` (``.bss``, ``.rodata.str1.1``...) becomes."""
    return spec.name == spec.section and is_data_section(spec.section)


def without_mmap(obj: ObjectSpec) -> ObjectSpec:
    """``obj`` with ``BPF_F_MMAPABLE`` dropped from its global-data maps, for kernels without mmap-able arrays.

    libbpf does the same (``bpf_object__sanitize_maps``) when its probe says
    the kernel refuses the flag.
    """
    maps = {n: replace(m, flags=m.flags & ~MapFlags.MMAPABLE) if is_global_data(m) else m for n, m in obj.maps.items()}
    return replace(obj, maps=maps)


def _edit(spec: MapSpec, edit: MapEdit, name: str) -> MapSpec:
    def fail(field: str | None, why: str) -> MapEditError:
        return MapEditError(name, field, why)

    for field in ("max_entries", "key_size", "value_size", "flags", "numa_node"):
        value = getattr(edit, field)
        if value is not None and (not _is_int(value) or not 0 <= value < _U32):
            raise fail(field, f"must be an int from 0 to 2**32 - 1, not {value!r}")
    if edit.map_extra is not None and (not _is_int(edit.map_extra) or not 0 <= edit.map_extra < 1 << 64):
        raise fail("map_extra", f"must be an int from 0 to 2**64 - 1, not {edit.map_extra!r}")
    kind = spec.type
    if edit.type is not None:
        try:
            kind = MapType(edit.type)
        except ValueError:
            raise fail("type", f"{edit.type!r} is not a map type (dynbpf._sys.constants.MapType)") from None
    if spec.type == MapType.STRUCT_OPS:
        wrong = [f for f in edit._set() if f != "create"]
        if wrong:
            raise fail(wrong[0], "struct_ops maps are defined by the kernel struct they implement; only create applies")
    if is_global_data(spec):
        wrong = [f for f in edit._set() if f not in (*_DATA_EDITABLE, "create", "reuse_fd", "reuse_pin")]
        if wrong:
            raise fail(
                wrong[0],
                "a global-data map is a one-element array with 4-byte keys: only value_size (its last variable, "
                "an array, grows or shrinks), flags, numa_node, create and reuse_fd/reuse_pin apply",
            )
    if edit.key_size and kind in _KEYLESS:
        raise fail("key_size", f"{type_name(MapType, kind)} maps have no keys (key_size must be 0)")
    if edit.value_size and kind in mapcreate.NO_VALUES:
        raise fail("value_size", f"{type_name(MapType, kind)} maps have no values (value_size must be 0)")
    if (edit.inner is not None or edit.inner_map_fd is not None) and kind not in _MAPS_OF_MAPS:
        field = "inner" if edit.inner is not None else "inner_map_fd"
        raise fail(field, f"only maps of maps have an inner map; this one is a {type_name(MapType, kind)}")
    if edit.inner is not None and edit.inner_map_fd is not None:
        raise fail("inner", "give inner (edits of the declared template) or inner_map_fd (another map's), not both")
    if edit.reuse_fd is not None and edit.reuse_pin is not None:
        raise fail("reuse_fd", "give reuse_fd or reuse_pin, not both")
    if not edit.create and (edit.reuse_fd is not None or edit.reuse_pin is not None):
        raise fail("create", "a map that is not created cannot reuse one either")
    inner = spec.inner
    if edit.inner is not None:
        if inner is None:
            raise fail("inner", "the object declares no inner map template (__array(values, ...)); use inner_map_fd")
        wrong = [f for f in edit.inner._set() if f in ("inner", "inner_map_fd", "create", "reuse_fd", "reuse_pin")]
        if wrong:
            raise MapEditError(f"{name}.inner", wrong[0], "an inner map template only takes definition fields")
        inner = _edit(inner, edit.inner, f"{name}.inner")
    elif edit.inner_map_fd is not None:
        inner = _template_of(edit.inner_map_fd, name)
    out = replace(
        spec,
        type=kind,
        max_entries=_pick(edit.max_entries, spec.max_entries),
        key_size=_pick(edit.key_size, spec.key_size),
        value_size=_pick(edit.value_size, spec.value_size),
        flags=_pick(edit.flags, spec.flags),
        numa_node=_pick(edit.numa_node, spec.numa_node),
        map_extra=_pick(edit.map_extra, spec.map_extra),
        inner=inner,
    )
    resized = (out.key_size, out.value_size) != (spec.key_size, spec.value_size)
    if resized and not is_global_data(spec):
        out = replace(out, key_type=0, value_type=0)  # the declared types no longer fit: like libbpf, no BTF types
    return out


def _pick(value: int | None, default: int) -> int:
    return default if value is None else int(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _template_of(fd: int, name: str) -> MapSpec:
    """The definition of the map behind ``fd``, as an inner map template (libbpf's set_inner_map_fd)."""
    try:
        info = commands.map_info(fd)
    except SyscallError as e:
        raise MapEditError(name, "inner_map_fd", f"fd {fd} is not a map ({e})") from None
    try:
        kind = MapType(info.type)
    except ValueError:
        unknown = f"fd {fd} is a {type_name(MapType, info.type)}, which dynbpf does not know"
        raise MapEditError(name, "inner_map_fd", unknown) from None
    return MapSpec(
        name=f"{name}.inner",
        type=kind,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.map_flags,
        map_extra=info.map_extra,
    )


def _resize_section(obj: ObjectSpec, btf: Spec | None, spec: MapSpec, size: int) -> tuple[Spec, MapSpec, VariableSpec]:
    """A data section grown or shrunk to ``size`` bytes, its last variable (an array) resized to fill it.

    libbpf (1.2+, ``map_btf_datasec_resize``) makes the same change to BTF:
    a new ARRAY type of the new length becomes the last VAR's type, and the
    DATASEC entry of that VAR and the section's size follow. Where libbpf
    then drops the map's BTF types when the section cannot be resized
    (last variable no array, a size the elements do not divide), dynbpf
    refuses the edit: the variables would not match the section any more.
    """
    name = spec.name

    def fail(why: str) -> MapEditError:
        return MapEditError(name, "value_size", why)

    own = sorted((v for v in obj.variables.values() if v.section == name), key=lambda v: v.offset)
    if btf is None or not own:
        raise fail("resizing a data section needs the object's BTF and a variable in the section")
    last = own[-1]
    datasec_id = spec.value_type
    datasec = btf[datasec_id] if datasec_id else None
    if not isinstance(datasec, Datasec):
        raise fail(f"the object's BTF has no DATASEC for {name}")
    source = source_name(last.name)  # a linked object's static may be named apart (``buf@a.c``); BTF has ``buf``
    candidates = [vsi for vsi in datasec.vars if getattr(btf[vsi.type], "name", None) == source]
    # a linked DATASEC has final offsets, so the place tells same-named statics apart; clang's own has none yet
    placed = [vsi for vsi in candidates if vsi.offset == last.offset] if datasec.size else candidates
    var_id = placed[-1].type if placed else 0
    var = btf[var_id] if var_id else None
    if not isinstance(var, Var):
        raise fail(f"no BTF VAR for its last variable {last.name!r}")
    array = btf[graph.resolve(btf, var.type)]
    if not isinstance(array, Array):
        raise fail(f"its last variable {last.name!r} is not an array, so the section cannot change size")
    element = graph.size_of(btf, array.type)
    room = size - last.offset
    if element <= 0 or room < element or room % element:
        raise fail(
            f"{size} bytes leave {room} for the last variable {last.name!r} at offset {last.offset}, an array of "
            f"{element}-byte elements: give {last.offset} + n * {element} for some n >= 1"
        )
    new_array = Array(array.type, array.index_type, room // element)
    array_id = len(btf)
    vars_ = tuple(VarSecinfo(v.type, v.offset, room) if v.type == var_id else v for v in datasec.vars)
    new_datasec = Datasec(datasec.name, size if datasec.size else 0, vars_)  # 0: the fix-up places it
    resized_btf = rewrite(btf, {var_id: Var(var.name, array_id, var.linkage), datasec_id: new_datasec}, [new_array])
    initial = (last.initial + bytes(room))[:room]
    variable = replace(last, size=room, type_id=array_id, initial=initial)
    data = None if spec.data is None else (spec.data + bytes(size))[:size]
    return resized_btf, replace(spec, value_size=size, data=data), variable


def _open_reused(obj: ObjectSpec, edits: Mapping[str, MapEdit]) -> dict[str, Fd]:
    """The maps to reuse, opened (pins) or duplicated (fds) and checked against their edited definitions."""
    reused: dict[str, Fd] = {}
    try:
        for name, edit in edits.items():
            if edit.reuse_fd is None and edit.reuse_pin is None:
                continue
            field = "reuse_fd" if edit.reuse_fd is not None else "reuse_pin"
            try:
                if edit.reuse_pin is not None:
                    fd = commands.obj_get(os.fspath(edit.reuse_pin))
                else:
                    assert edit.reuse_fd is not None
                    fd = _dup(edit.reuse_fd)
            except (DynbpfError, OSError) as e:
                raise MapEditError(name, field, f"cannot open {getattr(edit, field)!r}: {e}") from None
            reused[name] = fd
            where = f"the map at {os.fspath(edit.reuse_pin)}" if edit.reuse_pin is not None else f"fd {edit.reuse_fd}"
            try:
                mapcreate.check_compatible(obj.maps[name], fd.raw, where)
            except DynbpfError as e:
                raise MapEditError(name, field, str(e)) from None
    except BaseException:
        for fd in reused.values():
            fd.close()
        raise
    return reused


def _dup(raw: int) -> Fd:
    borrowed = Fd(raw, "map")
    try:
        return borrowed.dup()
    finally:
        borrowed.release()
