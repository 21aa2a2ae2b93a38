"""Which maps exist, for whom, on which fd number: the collection's map registry.

Every map owns one reserved fd number (an ``FdSlot``) from before prepare
to close; prepared instructions hold that number. Whether a real map sits
behind it follows the map's policy: always (eager, pinned) or exactly while
a loaded program needs it (on demand). Programs acquire their maps before
their load and release them after their unload; the counts and the kernel
objects change together under one short lock, never across a verification.

A map also needs what it holds: a map of maps its declared inner maps, so
acquiring one acquires those first. Prog arrays hold programs, not maps:
their declared slots are filled with whichever of those programs is loaded
when the array is created, and as each loads or unloads afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import threading
from collections.abc import Callable, Iterable, Mapping

from dynbpf._btf import graph
from dynbpf._elf.spec import MapSpec, Pinning
from dynbpf._maps.mapping import ArrayMapping
from dynbpf._prepare.object import PreparedObject
from dynbpf._runtime import mapcreate
from dynbpf._runtime.state import MapPolicy
from dynbpf._sys import commands, fs
from dynbpf._sys.constants import MapFlags, MapType
from dynbpf._sys.fd import Fd, object_kind
from dynbpf._sys.placeholder import FdSlot, SlotView
from dynbpf.errors import DynbpfError, NotFound, ObjectFormatError, OptionError, PinError, StateError, SyscallError

#: Map kinds the registry never creates, with the reason callers are told.
NOT_CREATED = {
    MapType.STRUCT_OPS: "struct_ops maps are not map views: use coll.struct_ops[name] (created at its attach or "
    "association, not at open)"
}
_MAPS_OF_MAPS = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)


class MapRegistry:
    """The maps of one collection: reserved numbers, policies, users, kernel objects."""

    def __init__(self, object_name: str) -> None:
        self.object_name = object_name
        self._lock = threading.RLock()
        self._slots: dict[str, FdSlot] = {}
        self._prepared: PreparedObject | None = None
        self._policy: dict[str, MapPolicy] = {}
        self._users: dict[str, int] = {}
        self._closure: dict[str, tuple[str, ...]] = {}  # map -> maps it needs (itself last)
        self._data: Mapping[str, bytes] = {}
        self._pin_root = fs.DEFAULT_BPFFS
        self._tail_slots: dict[str, list[tuple[str, int]]] = {}  # program -> (prog array, index)
        self._program_fds: dict[str, int] = {}  # loaded programs that own prog-array slots
        self._absent: frozenset[str] = frozenset()  # maps left out by MapEdit(create=False)
        self._reused: dict[str, Fd] = {}  # maps taken from elsewhere (MapEdit(reuse_fd/reuse_pin)), owned here
        self._mappings: dict[str, ArrayMapping] = {}  # live memory mappings of mmap-able maps
        self._from_pins: dict[str, Fd] = {}  # maps an earlier run pinned, installed at their first creation
        self._adopted: tuple[str, ...] = ()
        #: told the name of a map freed or replaced by another (the collection's pins follow it), outside the lock
        self.on_change: Callable[[str], None] | None = None
        self._closed = False

    # --- before prepare ---------------------------------------------------------------

    def number(self, name: str) -> int:
        """The fd number reserved for map ``name``; reserved on first ask, stable until close."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                if self._closed:
                    raise StateError(f"object {self.object_name!r} is closed")
                slot = self._slots[name] = FdSlot(f"dynbpf:{name}")
            return slot.number

    def adopt(self, reused: Mapping[str, Fd]) -> None:
        """Take ownership of the fds of maps to reuse instead of creating them (closed at :meth:`close`)."""
        with self._lock:
            self._reused.update(reused)

    # --- after prepare ----------------------------------------------------------------

    def bind(
        self,
        prepared: PreparedObject,
        *,
        default: MapPolicy,
        policies: Mapping[str, MapPolicy],
        pin_root: str | None,
        data: Mapping[str, bytes],
        shared_pin_root: bool = False,
        absent: frozenset[str] = frozenset(),
        from_pins: Mapping[str, tuple[str, Fd]] | None = None,
    ) -> None:
        """Adopt the prepared maps and create those whose policy says they always exist.

        ``absent`` maps are never created; reused maps (:meth:`adopt`) exist
        from now to close, like eager ones, and are neither initialised nor
        pinned: they are someone else's. ``from_pins`` maps names to
        ``(pin path, fd)`` of maps an earlier run left pinned
        (``dynbpf.open(..., adopt=root)``): each is checked like a reused pin
        and then stands in for the map at its first creation, contents and
        all; the registry owns every fd given. One that differs from the
        object's map raises :class:`PinError` naming each difference, and
        none is adopted.
        """
        self._absent = absent
        for name in policies:
            if name not in prepared.maps:
                raise NotFound(f"object {self.object_name!r}", "map", name, prepared.maps, option="map_policies=")
        for name, policy in policies.items():
            if name in absent:
                raise OptionError(f"map {name!r} is not created (MapEdit(create=False)); it takes no policy")
            if name in self._reused and policy != MapPolicy.EAGER:
                raise OptionError(
                    f"map {name!r} is reused (MapEdit(reuse_...)): it exists until close; policy {policy}"
                )
        self._prepared, self._data = prepared, data
        if pin_root is not None:
            self._pin_root = pin_root
        for spec in prepared.maps.values():
            pinned_by_object = spec.pinning == Pinning.BY_NAME
            policy = policies.get(spec.name, MapPolicy.PINNED if pinned_by_object else default)
            if spec.name in self._reused:
                policy = MapPolicy.EAGER
            if spec.type in NOT_CREATED and spec.name in policies:
                raise OptionError(f"map {spec.name!r}: {NOT_CREATED[spec.type]}; it takes no policy")
            self._policy[spec.name] = policy
            self._users[spec.name] = 0
            self.number(spec.name)
        for name in prepared.maps:
            self._closure[name] = self._needs(name, ())
        for spec in prepared.maps.values():
            if spec.type == MapType.PROG_ARRAY:
                for index, program in spec.contents:
                    self._tail_slots.setdefault(program, []).append((spec.name, index))
        self._take_from_pins(from_pins or {})
        if any(p == MapPolicy.PINNED for p in self._policy.values()):
            fs.check_pin_root(self._pin_root, shared=shared_pin_root)
            fs.make_pin_dir(self._pin_root, what=f"use pin_root {self._pin_root}")
            fs.ensure_bpffs(self._pin_root)
        with self._lock:
            for name, policy in self._policy.items():
                if policy != MapPolicy.ON_DEMAND and self._creatable(name):
                    for needed in self._closure[name]:
                        if not self._slots[needed].installed:
                            self._create(needed)
                        if needed != name:
                            self._users[needed] += 1  # held for as long as the map that holds it: until close

    def _take_from_pins(self, found: Mapping[str, tuple[str, Fd]]) -> None:
        """Keep the pinned maps of an earlier run that this collection creates itself, once all are checked.

        Maps with a policy of their own pins (``pinned``), reused or left-out
        maps and struct_ops maps are not taken (their fds are closed): they
        come from where they always come from.
        """
        kept: dict[str, tuple[str, Fd]] = {}
        for name, (path, fd) in found.items():
            taken = (
                name in self._policy
                and self._policy[name] != MapPolicy.PINNED
                and name not in self._reused
                and self._creatable(name)
            )
            if taken:
                kept[name] = (path, fd)
            else:
                fd.close()
        wrong: list[str] = []
        for name, (path, fd) in kept.items():
            try:
                self.check_pinned(self.prepared.maps[name], fd.raw, path)
            except DynbpfError as e:
                wrong.append(str(e))
        if wrong:
            for _, fd in kept.values():
                fd.close()
            raise PinError(f"{'; '.join(wrong)}; nothing was adopted", path=next(iter(kept.values()))[0])
        self._from_pins = {name: fd for name, (_, fd) in kept.items()}
        self._adopted = tuple(kept)

    @property
    def adopted(self) -> tuple[str, ...]:
        """The maps taken from an earlier run's pins (``bind(from_pins=...)``)."""
        return self._adopted

    def pending(self, name: str) -> bool:
        """Whether map ``name`` is an earlier run's pinned map not installed yet (no loaded program needed it)."""
        with self._lock:
            return name in self._from_pins

    def own_map(self, name: str) -> bool:
        """Whether this collection creates map ``name`` itself (not pinned by policy, reused, left out, struct_ops)."""
        return self.policy(name) != MapPolicy.PINNED and name not in self._reused and self._creatable(name)

    def holding(self) -> threading.RLock:
        """The registry's lock, for a caller that must see no map created, freed or replaced for a moment."""
        return self._lock

    def kernel_id(self, name: str) -> int | None:
        """The kernel's id of map ``name`` as it exists now; None if it does not."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or not slot.installed:
                return None
            return int(commands.map_info(slot.number).id)

    @property
    def prepared(self) -> PreparedObject:
        if self._prepared is None:
            raise StateError(f"object {self.object_name!r}: maps are not prepared yet")
        return self._prepared

    def spec(self, name: str) -> MapSpec:
        spec = self.prepared.maps.get(name)
        if spec is None:
            raise NotFound(f"object {self.object_name!r}", "map", name, self.prepared.maps)
        return spec

    def pin_name(self, name: str) -> str:
        """The file name of a pinned map in ``pin_root`` (:func:`pin_name`)."""
        return pin_name(self.object_name, name)

    def pin_path(self, name: str) -> str | None:
        """Where map ``name`` is pinned, if its policy is ``pinned``."""
        if self.policy(name) != MapPolicy.PINNED:
            return None
        return fs.pin_path(self._pin_root, self.pin_name(name))

    def policy(self, name: str) -> MapPolicy:
        self.spec(name)
        return self._policy[name]

    def users(self, name: str) -> int:
        """How many loaded programs (and held acquisitions) need this map."""
        self.spec(name)
        return self._users[name]

    def exists(self, name: str) -> bool:
        spec = self.spec(name)
        slot = self._slots.get(spec.name)
        return slot is not None and slot.installed

    def view(self, name: str) -> SlotView:
        """The map's number as a view valid only while this very map exists: what user-facing views hold."""
        self.require(name)
        with self._lock:
            return self._slots[name].view()

    def require(self, name: str) -> int:
        """The fd number of a map that exists now; a StateError says why it does not."""
        spec = self.spec(name)
        reason = NOT_CREATED.get(spec.type)
        if reason is not None:
            raise StateError(f"map {name!r}: {reason}")
        if name in self._absent:
            raise StateError(f"map {name!r} is not created: the object was opened with MapEdit(create=False) for it")
        with self._lock:
            self._require_open()
            if not self._slots[name].installed:
                raise StateError(
                    f"map {name!r} is on demand and no loaded program needs it now; load a program that uses it, "
                    f"or open with map_policies={{{name!r}: 'eager'}}"
                )
            return self._slots[name].number

    # --- programs ---------------------------------------------------------------------

    def acquire(self, names: Iterable[str]) -> None:
        """Count one more user of each map (and what it holds), creating those that did not exist.

        All or nothing: if one map cannot be created, the counts and maps
        of this call are rolled back before the error propagates.
        """
        wanted = self._expand(names)
        with self._lock:
            self._require_open()
            done: list[str] = []
            try:
                for name in wanted:
                    if self._users[name] == 0 and not self._slots[name].installed:
                        self._create(name)
                    self._users[name] += 1
                    done.append(name)
            except BaseException:
                self._drop(done)
                raise

    def release(self, names: Iterable[str]) -> None:
        """Count one user fewer of each map; on-demand maps nobody needs any more are freed."""
        wanted = self._expand(names)
        with self._lock:
            freed = [] if self._closed else self._drop(wanted)
        self._changed(freed)

    def program_loaded(self, name: str, fd: int) -> None:
        """Fill the prog-array slots the object declares for this program, in arrays that exist."""
        slots = self._tail_slots.get(name)
        if not slots:
            return
        with self._lock:
            self._program_fds[name] = fd
            for array, index in slots:
                if self._slots[array].installed:
                    commands.map_update_elem(self._slots[array].number, _u32(index), _u32(fd))

    def program_unloaded(self, name: str) -> None:
        slots = self._tail_slots.get(name)
        if not slots:
            return
        with self._lock:
            self._program_fds.pop(name, None)
            if self._closed:
                return
            for array, index in slots:
                if self._slots[array].installed:
                    commands.map_delete_elem(self._slots[array].number, _u32(index))

    def data(self, name: str) -> bytes | None:
        """The initial bytes map ``name`` is (re)created with: the caller's constants, else the object's."""
        return self._data.get(name, self.spec(name).data)

    def swap_data(self, name: str, data: bytes) -> Fd | None:
        """Re-create read-only data map ``name`` with ``data``, in place of the one that exists now.

        The new map takes the reserved number at once; programs loaded
        before keep the old map until they are reloaded. Returns the old map
        (the caller's, to put back with :meth:`restore_data` or close), or
        None when the map did not exist (it will be created with ``data``).
        """
        spec = self.spec(name)
        with self._lock:
            self._require_open()
            if self._policy[name] == MapPolicy.PINNED:
                raise StateError(
                    f"map {name!r} is pinned at {self.pin_path(name)}: other processes read its frozen values, "
                    "so dynbpf does not swap it; unpin it (or open with another pin_root) to change constants"
                )
            slot = self._slots[name]
            old: Fd | None = None
            if slot.installed:
                fresh = self._kernel_map(spec)
                try:
                    mapcreate.initialise(fresh.raw, spec, data)
                    old = slot.replace(fresh)
                except BaseException:
                    fresh.close()  # (replace closed it already if it got that far; closing twice is harmless)
                    raise
                self._unmap(name, "its constants were changed; take a new view")
                replaced = True
            else:
                earlier = self._from_pins.pop(name, None)  # an earlier run's map holds the values given up
                if earlier is not None:
                    earlier.close()
                replaced = earlier is not None
            self._data = {**self._data, name: data}  # only now: a failure above leaves the old values in force
        if replaced:
            self._changed([name])
        return old

    def restore_data(self, name: str, data: bytes | None, old: Fd | None) -> None:
        """Undo :meth:`swap_data`: ``data`` as the initial bytes again and ``old`` back at the number."""
        with self._lock:
            self._data = {k: v for k, v in self._data.items() if k != name}
            if data is not None:
                self._data[name] = data
            if old is not None:
                self._unmap(name, "its constants were changed back; take a new view")
                self._slots[name].replace(old).close()
        if old is not None:
            self._changed([name])

    def mapping(self, name: str) -> ArrayMapping:
        """The memory mapping of mmap-able map ``name`` as it exists now; it ends when the map is freed.

        A frozen map (``.rodata``) is mapped read-only, as the kernel allows.
        """
        spec = self.spec(name)
        with self._lock:
            number = self.require(name)
            mapping = self._mappings.get(name)
            if mapping is None or mapping.closed:
                frozen = mapcreate.is_frozen_data(spec) and spec.flags & MapFlags.RDONLY_PROG
                mapping = ArrayMapping(
                    number,
                    spec.value_size,
                    spec.max_entries,
                    writable=not frozen,
                    name=f"{self.object_name}:{name}",
                    read_only="set its values before it is created: dynbpf.open(..., constants={...})",
                )
                self._mappings[name] = mapping
            return mapping

    def close(self) -> None:
        """Free every map (pins stay) and release every reserved number; idempotent."""
        with self._lock:
            self._closed = True
            for name in list(self._mappings):
                self._unmap(name, f"object {self.object_name!r} is closed")
            for slot in self._slots.values():
                slot.close()
            for fd in self._reused.values():
                fd.close()
            for fd in self._from_pins.values():
                fd.close()
            self._from_pins.clear()

    # --- internals --------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise StateError(f"object {self.object_name!r} is closed")

    def _creatable(self, name: str) -> bool:
        return self.prepared.maps[name].type not in NOT_CREATED and name not in self._absent

    def _unmap(self, name: str, why: str) -> None:
        mapping = self._mappings.pop(name, None)
        if mapping is not None:
            mapping.close(f"map {name!r} of {self.object_name!r}: {why}; this view is stale")

    def _needs(self, name: str, path: tuple[str, ...]) -> tuple[str, ...]:
        if name in path:
            raise ObjectFormatError(f"object {self.object_name!r}: maps of maps hold each other: {' -> '.join(path)}")
        spec = self.prepared.maps[name]
        out: list[str] = []
        if spec.type in _MAPS_OF_MAPS:
            for _, inner in spec.contents:
                for needed in self._needs(inner, (*path, name)):
                    if needed not in out:
                        out.append(needed)
        out.append(name)
        return tuple(out)

    def _expand(self, names: Iterable[str]) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for name in names:
            for needed in self._closure[name]:
                if needed not in seen and self._creatable(needed):
                    seen.add(needed)
                    out.append(needed)
        return out

    def _drop(self, names: list[str]) -> list[str]:
        """Count one user fewer of each of ``names``; returns the on-demand maps this freed."""
        freed: list[str] = []
        for name in reversed(names):  # holders before what they hold
            self._users[name] -= 1
            if self._users[name] == 0 and self._policy[name] == MapPolicy.ON_DEMAND:
                self._unmap(name, "it was freed (on demand, and no loaded program needs it now); take a new view")
                self._slots[name].vacate()
                freed.append(name)
        return freed

    def _changed(self, names: list[str]) -> None:
        hook = self.on_change
        if hook is not None:
            for name in names:
                hook(name)

    def check_pinned(self, spec: MapSpec, map_fd: int, path: str) -> None:
        """Raise unless the map pinned at ``path`` (open as ``map_fd``) is the map ``spec`` declares.

        libbpf's check (type, sizes, flags), the shape of key and value types
        where both sides have BTF, and the values of read-only data.
        """
        if object_kind(map_fd) != "map":
            raise PinError(f"map {spec.name!r}: {path} pins a BPF {object_kind(map_fd)}, not a map", path=path)
        mapcreate.check_compatible(spec, map_fd, f"the map pinned at {path}")
        self._check_btf(spec, map_fd, path)
        self._check_constants(spec, map_fd, path)

    def _check_constants(self, spec: MapSpec, map_fd: int, path: str) -> None:
        """A pinned read-only data section must hold what this open asks for: its values are frozen there.

        Writable sections keep their state when reused (that is what pinning
        them is for); a ``.rodata`` pinned by an earlier run with other
        ``constants=`` would silently give the programs other values.
        """
        if not (spec.flags & MapFlags.RDONLY_PROG and spec.name == spec.section):
            return
        expected = self._data.get(spec.name, spec.data)
        if expected is not None and not _read_only_data_matches(expected, map_fd):
            raise PinError(
                f"map {spec.name!r}: the read-only data pinned at {path} holds other values than this open's "
                "constants= (frozen there by an earlier run)",
                path=path,
            )

    def _check_btf(self, spec: MapSpec, map_fd: int, path: str) -> None:
        btf = self.prepared.btf
        info = commands.map_info(map_fd)
        if btf is None or not info.btf_id:
            return  # a side without types: only sizes can be compared, as libbpf does
        from dynbpf._maps.map import btf_by_id  # the map views' module: imported only when a pin is reused

        theirs = btf_by_id(int(info.btf_id))
        for what, mine, their_id in (
            ("key", spec.key_type, int(info.btf_key_type_id)),
            ("value", spec.value_type, int(info.btf_value_type_id)),
        ):
            if not mine or not their_id:
                continue
            if graph.shape(btf, mine) != graph.shape(theirs, their_id):
                raise PinError(
                    f"map {spec.name!r}: the map pinned at {path} has {what} type "
                    f"{graph.format_type(theirs, their_id)!r}, the object declares {graph.format_type(btf, mine)!r} "
                    "(same sizes, other fields)",
                    path=path,
                )

    def _create(self, name: str) -> None:
        spec = self.prepared.maps[name]
        slot = self._slots[name]
        earlier = self._from_pins.pop(name, None)
        if earlier is not None:
            slot.install(earlier)  # what an earlier run left in it is the state: not initialised
            return
        reused = self._reused.get(name)
        if reused is not None:
            slot.install(reused.dup())
            return
        if self._policy[name] == MapPolicy.PINNED:
            path = fs.pin_path(self._pin_root, self.pin_name(name))
            if fs.pinned(path):
                slot.install(self._reuse(spec, path))
                return
            self._create_new(spec, slot)
            fs.make_pin_dirs(path)
            try:
                commands.obj_pin(slot.number, path)
            except SyscallError as e:
                slot.vacate()
                if e.errno != errno.EEXIST:
                    raise
                # another process opening the same object pinned it first: use theirs, as if it had been there
                slot.install(self._reuse(spec, path))
            except BaseException:
                slot.vacate()
                raise
            return
        self._create_new(spec, slot)

    def _create_new(self, spec: MapSpec, slot: FdSlot) -> None:
        slot.install(self._kernel_map(spec))
        try:
            mapcreate.initialise(slot.number, spec, self._data.get(spec.name))
            if spec.type in _MAPS_OF_MAPS:
                for index, inner in spec.contents:
                    commands.map_update_elem(slot.number, _u32(index), _u32(self._slots[inner].number))
            if spec.type == MapType.PROG_ARRAY:
                for program, fd in self._program_fds.items():
                    for array, index in self._tail_slots[program]:
                        if array == spec.name:
                            commands.map_update_elem(slot.number, _u32(index), _u32(fd))
        except BaseException:
            slot.vacate()
            raise

    def _kernel_map(self, spec: MapSpec) -> Fd:
        prepared = self.prepared
        btf, btf_fd = prepared.btf, prepared.btf_fd
        if spec.inner is None:
            return mapcreate.create(spec, object_name=self.object_name, btf=btf, btf_fd=btf_fd)
        with mapcreate.create(spec.inner, object_name=self.object_name, btf=btf, btf_fd=btf_fd) as template:
            return mapcreate.create(spec, object_name=self.object_name, btf=btf, btf_fd=btf_fd, inner_fd=template.raw)

    def _reuse(self, spec: MapSpec, path: str) -> Fd:
        """The pinned map at ``path``, if it is the map the object declares.

        libbpf's check (type, sizes, flags), and more: the pin belongs to root
        or this user, and where both sides have BTF, key and value types have
        the same shape (a pin of another program's map with equal sizes is
        not reused).
        """
        fs.check_pin_owner(path)
        fd = commands.obj_get(path)
        try:
            self.check_pinned(spec, fd.raw, path)
        except DynbpfError as e:
            fd.close()
            raise PinError(f"{e}; remove the pin (rm {path}) or give the map another pin_root", path=path) from None
        except BaseException:
            fd.close()
            raise
        return fd


def _read_only_data_matches(expected: bytes, map_fd: int) -> bool:
    value = bytearray(len(expected))
    found = commands.map_lookup_elem(map_fd, _u32(0), (ctypes.c_char * len(value)).from_buffer(value))
    return found and bytes(value) == expected


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def pin_name(object_name: str, map_name: str) -> str:
    """The file name a map of ``object_name`` is pinned under: libbpf's, so both find each other's pins.

    Like libbpf, global-data maps use the name the kernel shows
    (``<object>.data``, shortened) with ``.`` replaced by ``_``, which
    bpffs accepts in names; other maps use their own name, with the same
    replacement for the static maps of a linked object (``stats@left.bpf.c``),
    which libbpf does not open at all.
    """
    if not map_name.startswith("."):
        return map_name.replace(".", "_")
    return mapcreate.kernel_name(object_name, map_name).replace(".", "_")
