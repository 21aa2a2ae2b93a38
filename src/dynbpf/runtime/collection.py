"""A prepared object with its kernel state: maps, loaded programs. ``dynbpf.open`` returns one.

Every map gets a reserved fd number before prepare runs (``FdSlot``), so
prepared instructions stay valid whatever happens to the maps later. In
this first runtime every map is created eagerly at open, like libbpf;
programs load one by one, on demand.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

from dynbpf.btf.spec import Spec
from dynbpf.elf.reader import read
from dynbpf.elf.spec import MapSpec, ObjectSpec
from dynbpf.errors import DynbpfError, StateError
from dynbpf.maps.map import Map
from dynbpf.maps.variables import Variables
from dynbpf.prepare.btf_sanitize import BtfSupport
from dynbpf.prepare.object import PreparedObject, prepare
from dynbpf.runtime import mapcreate
from dynbpf.runtime.program import Program
from dynbpf.sys import commands
from dynbpf.sys.constants import MapType
from dynbpf.sys.fd import Fd
from dynbpf.sys.placeholder import FdSlot

_NOT_CREATED = {MapType.STRUCT_OPS: "struct_ops maps are created when registered (attach), not at open"}


class Collection:
    """Programs and maps of one BPF object, prepared for the running kernel; a context manager."""

    def __init__(
        self,
        spec: ObjectSpec,
        *,
        constants: Mapping[str, Any] | None = None,
        vmlinux: Spec | None = None,
        config: Mapping[str, str] | None = None,
        kallsyms: Mapping[str, int] | None = None,
        btf_support: BtfSupport | None = None,
    ) -> None:
        self.spec = spec
        self._lock = threading.RLock()
        self._slots: dict[str, FdSlot] = {}
        self._closed = False
        self._map_views: dict[str, Map] = {}
        self._prepared: PreparedObject | None = None
        try:
            data = _constants(spec, constants or {})
            self._prepared = prepare(
                spec, self._slot_number, vmlinux=vmlinux, config=config, kallsyms=kallsyms, btf_support=btf_support
            )
            self._create_maps(data)
        except BaseException:
            self.close()
            raise
        prepared = self._prepared
        self._tail_slots: dict[str, list[tuple[str, int]]] = {}  # program -> prog-array slots declared for it
        for m in prepared.maps.values():
            if m.type == MapType.PROG_ARRAY and self._slots[m.name].installed:
                for index, name in m.contents:
                    self._tail_slots.setdefault(name, []).append((m.name, index))
        self.programs: Mapping[str, Program] = MappingProxyType(
            {
                name: Program(self, name, prepared.programs.get(name), prepared.failed.get(name))
                for name in spec.programs
            }
        )

    # --- public -----------------------------------------------------------------------

    @property
    def prepared(self) -> PreparedObject:
        self._require_open()
        assert self._prepared is not None
        return self._prepared

    @property
    def maps(self) -> Mapping[str, Map]:
        """Dict-like views of the object's maps, decoded with their BTF types."""
        return _MapViews(self)

    @property
    def bss(self) -> Variables:
        return self.variables(".bss")

    @property
    def data(self) -> Variables:
        return self.variables(".data")

    @property
    def rodata(self) -> Variables:
        """Read-only once open (frozen): set values with ``dynbpf.open(..., constants=...)``."""
        return self.variables(".rodata")

    def variables(self, section: str) -> Variables:
        """The global variables of one data section (``.bss``, ``.data.foo``...), by name, typed."""
        prepared = self.prepared
        spec = prepared.maps.get(section)
        if spec is None or self.spec.btf is None:
            have = ", ".join(n for n, m in prepared.maps.items() if m.section == n) or "none"
            raise KeyError(f"object {self.spec.name!r} has no data section {section!r} (data sections: {have})")
        own = [v for v in self.spec.variables.values() if v.section == section]
        return Variables.of_map(self._slots[section].number, self.spec.btf, own)

    def load(self, names: Iterable[str] | None = None) -> dict[str, DynbpfError]:
        """Load the named programs (default: those the object marks autoload); return the failures.

        A program that fails does not stop the others.
        """
        chosen = list(names) if names is not None else [n for n, p in self.spec.programs.items() if p.kind.autoload]
        failures: dict[str, DynbpfError] = {}
        for name in chosen:
            program = self.programs[name]
            if program.loaded:
                continue
            try:
                program.load()
            except DynbpfError as e:
                failures[name] = e
        return failures

    def close(self) -> None:
        """Unload every program and free every map; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for program in getattr(self, "programs", {}).values():
            program.unload()
        for slot in self._slots.values():
            slot.close()
        if self._prepared is not None:
            self._prepared.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        loaded = sum(p.loaded for p in getattr(self, "programs", {}).values())
        return f"<Collection {self.spec.name!r}: {len(self.spec.programs)} programs, {loaded} loaded>"

    # --- for Program ------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise StateError(f"collection {self.spec.name!r} is closed")

    def _btf_fd(self) -> int:
        fd = self.prepared.btf_fd
        return fd.raw if fd is not None else 0

    def _program_loaded(self, name: str, fd: Fd) -> None:
        """Fill the prog-array slots the object declares for this program."""
        for map_name, slot in self._tail_slots.get(name, ()):
            commands.map_update_elem(self._slots[map_name].number, _u32(slot), _u32(fd.raw))

    def _program_unloaded(self, name: str) -> None:
        if self._closed:
            return  # the maps go away with the collection
        for map_name, slot in self._tail_slots.get(name, ()):
            commands.map_delete_elem(self._slots[map_name].number, _u32(slot))

    # --- internals --------------------------------------------------------------------

    def _slot_number(self, name: str) -> int:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = FdSlot(f"dynbpf:{name}")
            return slot.number

    def _create_maps(self, data: Mapping[str, bytes]) -> None:
        prepared = self.prepared
        for spec in prepared.maps.values():
            if spec.type in _NOT_CREATED:
                continue
            self._slot_number(spec.name)
            self._slots[spec.name].install(self._create_one(spec))
            mapcreate.initialise(self._slots[spec.name].number, spec, data.get(spec.name))
        for spec in prepared.maps.values():
            if spec.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
                for index, inner in spec.contents:
                    inner_fd = self._slots[inner].number
                    commands.map_update_elem(self._slots[spec.name].number, _u32(index), _u32(inner_fd))

    def _create_one(self, spec: MapSpec) -> Fd:
        prepared = self.prepared
        btf, btf_fd = prepared.btf, prepared.btf_fd
        if spec.inner is None:
            return mapcreate.create(spec, object_name=self.spec.name, btf=btf, btf_fd=btf_fd)
        with mapcreate.create(spec.inner, object_name=self.spec.name, btf=btf, btf_fd=btf_fd) as template:
            return mapcreate.create(spec, object_name=self.spec.name, btf=btf, btf_fd=btf_fd, inner_fd=template.raw)


class _MapViews(Mapping[str, Map]):
    def __init__(self, coll: Collection) -> None:
        self._coll = coll

    def __getitem__(self, name: str) -> Map:
        coll = self._coll
        prepared = coll.prepared
        spec = prepared.maps.get(name)
        if spec is None:
            raise KeyError(f"object {coll.spec.name!r} has no map {name!r} (maps: {', '.join(prepared.maps)})")
        reason = _NOT_CREATED.get(spec.type)
        if reason is not None:
            raise StateError(f"map {name!r}: {reason}")
        with coll._lock:
            view = coll._map_views.get(name)
            if view is None:
                fd = coll._slots[name].number
                btf = prepared.btf if prepared.btf is not None else coll.spec.btf  # DATASECs sized by the fix-up
                view = coll._map_views[name] = Map.with_btf(fd, btf, spec.key_type, spec.value_type)
            return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._coll.prepared.maps)

    def __len__(self) -> int:
        return len(self._coll.prepared.maps)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _constants(spec: ObjectSpec, constants: Mapping[str, Any]) -> dict[str, bytes]:
    """Initial bytes of read-only data sections with the caller's constants written in."""
    if not constants:
        return {}
    if spec.btf is None:
        raise DynbpfError(f"object {spec.name!r} has no BTF, so its constants cannot be set by name")
    readonly = {v.name: v for v in spec.variables.values() if v.section.startswith(".rodata")}
    buffers: dict[str, bytearray] = {}
    for name, value in constants.items():
        var = readonly.get(name)
        if var is None:
            have = ", ".join(sorted(readonly)) or "none"
            raise DynbpfError(f"object {spec.name!r}: no read-only global {name!r} to set (.rodata globals: {have})")
        section = spec.maps[var.section]
        buf = buffers.setdefault(var.section, bytearray(section.data or bytes(section.value_size)))
        Variables.of_buffer(buf, spec.btf, [var])[name] = value
    return {name: bytes(buf) for name, buf in buffers.items()}


def open(source: str | os.PathLike[str] | bytes, **options: Any) -> Collection:
    """Read and prepare a BPF object for this kernel; create its maps. Programs load on demand.

    Options: ``constants`` (``.rodata`` values by name, set before the
    section is frozen) and, for tests, ``vmlinux``/``config``/``kallsyms``.
    """
    return Collection(read(source), **options)
