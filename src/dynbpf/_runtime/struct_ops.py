"""struct_ops maps: a kernel ops struct implemented by BPF programs, registered with the kernel as a whole.

An object declares a struct_ops map as a global of a kernel struct
(``SEC(".struct_ops") struct tcp_congestion_ops my_cc = {.init = (void *)my_init, .name = "my_cc"}``).
:class:`StructOps` is its shadow, as libbpf's skeletons have one: the data
members hold the object's initial values and can be changed from Python
before registration, the function-pointer members name programs.

Registration is attaching (:meth:`StructOps.attach`, returning a
:class:`StructOpsLink`):

- the kernel's struct and its value type ``bpf_struct_ops_<struct>`` are
  looked up in the running kernel's BTF; the object's members are matched to
  the kernel's by name, as libbpf does (the kernel's struct may have other
  members, or the same ones elsewhere). A member the kernel lacks is skipped
  when the object leaves it zero, and refused (naming it) when it sets it;
- the map is created with ``btf_vmlinux_value_type_id``, its value laid out
  as the kernel's type: each function pointer holds its program's fd (the
  programs are loaded first if they are not), each data member the shadow's
  bytes;
- ``.struct_ops`` maps register when the value is written (map update of key
  0) and unregister when it is deleted; the kernel takes a value once per
  map, so each registration after an unregistration writes a fresh map.
  ``.struct_ops.link`` maps (``BPF_F_LINK``) are written once and registered
  by a ``BPF_LINK_CREATE`` of attach type ``BPF_STRUCT_OPS``; closing the link
  unregisters, and ``StructOpsLink.update(other)`` swaps the map behind the
  link (``BPF_LINK_UPDATE``) with no moment unregistered.

The runtime keeps registrations current: reloading a member program
re-registers its struct_ops with the new program (a link is updated in
place; a map-update registration is deleted and written anew, the kernel
offering nothing better), unloading one unregisters first.

A struct_ops map exists in the kernel only from its first attach or
association (``Program.associate_struct_ops``) to close; the map registry
never creates it.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dynbpf._attach.link import Link
from dynbpf._btf import graph
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import FuncProto, Ptr, Struct
from dynbpf._elf.spec import MapSpec
from dynbpf._probes import attach as attach_probes
from dynbpf._runtime import mapcreate
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr, MapCreateAttr
from dynbpf._sys.constants import AttachType, MapFlags, MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf.errors import AttachError, KernelUnsupported, NotFound, StateError, SyscallError

if TYPE_CHECKING:
    from dynbpf._maps.codec import Codec
    from dynbpf._runtime.collection import Collection
    from dynbpf._runtime.program import Program

#: the prefix of the kernel's value type of a struct_ops struct (``bpf_struct_ops_tcp_congestion_ops``)
VALUE_PREFIX = "bpf_struct_ops_"
_KEY0 = bytes(4)
_POINTER = 8
#: what a map was written with that no value equals: the next write takes a fresh map
_STALE: tuple[object, ...] = (None,)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the object's struct, placed where the kernel's value type has it.

    ``kernel_offset`` is None for a member the kernel's struct lacks (the
    object must leave it zero). ``index`` is the kernel member's position,
    what a struct_ops program's ``expected_attach_type`` must be.
    """

    name: str
    type_id: int  # in the object's BTF
    local_offset: int
    size: int
    function: bool
    kernel_offset: int | None
    index: int


@dataclass(frozen=True, slots=True)
class Layout:
    """The object's struct_ops struct against the running kernel's."""

    struct: str
    struct_id: int  # the kernel's struct, what member programs are loaded against (attach_btf_id)
    value_type_id: int  # the kernel's bpf_struct_ops_<struct>
    value_size: int
    members: tuple[Member, ...]


def layout(spec: MapSpec, btf: Spec, vmlinux: Spec) -> Layout:
    """Match the object's members to the kernel's by name (libbpf's rule); see the module docstring."""
    local = btf[graph.resolve(btf, spec.value_type)]
    assert isinstance(local, Struct)  # the ELF reader checked it
    what = f"struct_ops map {spec.name!r}"
    ids = vmlinux.find(local.name, Kind.STRUCT)
    if not ids:
        raise KernelUnsupported(
            f"struct {local.name} (the type of {what})",
            f"no struct {local.name} in the kernel's BTF (vmlinux; struct_ops of modules are not supported yet)",
        )
    values = vmlinux.find(VALUE_PREFIX + local.name, Kind.STRUCT)
    if not values:
        raise KernelUnsupported(
            f"struct_ops of struct {local.name} ({what})",
            f"the kernel's BTF has struct {local.name} but no {VALUE_PREFIX}{local.name}: no subsystem registers it",
        )
    kernel = vmlinux[ids[0]]
    assert isinstance(kernel, Struct)
    data_offset = graph.member(vmlinux, values[0], "data").bit_offset // 8
    by_name = {m.name: (i, m) for i, m in enumerate(kernel.members) if m.name}
    members: list[Member] = []
    for m in local.members:
        size = graph.size_of(btf, m.type)
        start = m.bit_offset // 8
        function = _is_function_pointer(btf, m.type)
        found = by_name.get(m.name)
        if found is None:
            members.append(Member(m.name, m.type, start, size, function, None, -1))
            continue
        index, theirs = found
        if m.bitfield_size or theirs.bitfield_size:
            raise AttachError(f"{what}: member {m.name!r} is a bitfield, which struct_ops values cannot carry")
        if function != _is_function_pointer(vmlinux, theirs.type):
            kinds = ("a function pointer", "data") if function else ("data", "a function pointer")
            raise AttachError(
                f"{what}: member {m.name!r} is {kinds[0]} in the object but {kinds[1]} in the kernel's "
                f"struct {local.name}"
            )
        kernel_size = graph.size_of(vmlinux, theirs.type)
        if kernel_size != size:
            raise AttachError(
                f"{what}: member {m.name!r} is {size} bytes in the object but {kernel_size} in the kernel's "
                f"struct {local.name}"
            )
        members.append(Member(m.name, m.type, start, size, function, data_offset + theirs.bit_offset // 8, index))
    return Layout(local.name, ids[0], values[0], graph.size_of(vmlinux, values[0]), tuple(members))


def _is_function_pointer(spec: Spec, type_id: int) -> bool:
    t = spec[graph.resolve(spec, type_id)]
    return isinstance(t, Ptr) and isinstance(spec[graph.resolve(spec, t.type)], FuncProto)


class StructOps:
    """A struct_ops map of a collection: its shadow (members by attribute), registration and association.

    Data members read and write the object's values (``ops.flags``,
    ``ops.name = "my_cc"``: a ``char[]`` reads as ``str`` and takes ``str`` or
    ``bytes``); members whose names clash with this class's own attributes
    are reachable as ``ops["member"]``;
    function-pointer members are the :class:`~dynbpf.Program` that
    implements them, or None, and can be set to another struct_ops program
    of the collection made for the same member. Writes are refused while
    registered; they apply at the next :meth:`attach`.
    """

    _collection: Collection
    _spec: MapSpec
    _btf: Spec
    _struct: Struct
    _data: bytearray
    _programs: dict[str, str | None]
    _codecs: dict[str, Codec]
    _lock: threading.RLock
    _layout: Layout | None
    _map: Fd | None
    _written: tuple[object, ...] | None
    _dead: bool
    _link: StructOpsLink | None
    _tried: bool
    _settling: bool
    _generation: int
    _followed: int

    def __init__(self, collection: Collection, spec: MapSpec) -> None:
        btf = collection.spec.btf
        assert btf is not None  # the ELF reader needs it for a struct_ops map
        assert spec.data is not None
        struct = btf[graph.resolve(btf, spec.value_type)]
        assert isinstance(struct, Struct)
        d = self.__dict__  # __setattr__ is the shadow's: set our own state through the dict
        d["_collection"] = collection
        d["_spec"] = spec
        d["_btf"] = btf
        d["_struct"] = struct
        d["_data"] = bytearray(spec.data)
        d["_programs"] = dict(spec.program_slots)
        d["_codecs"] = {}
        d["_lock"] = threading.RLock()
        d["_layout"] = None
        d["_map"] = None  # the kernel map now (Fd), made at the first attach or association
        d["_written"] = None  # what its value was written with (None: nothing yet, the kernel takes one value)
        d["_dead"] = False  # a map-update registration was deleted: the map takes no value any more
        d["_link"] = None
        d["_tried"] = False  # trial maps held member programs (see _culprit)
        d["_settling"] = False  # _settle is reloading member programs
        d["_generation"] = 0  # kernel maps made so far: programs tied to an earlier one must follow (_follow)
        d["_followed"] = 0  # the generation the tied programs were last made to follow

    # --- what it is ---------------------------------------------------------------------

    @property
    def map_name(self) -> str:
        """The map's name in the object (``ops.name`` is the struct's member ``name``, where it has one)."""
        return self._spec.name

    @property
    def struct(self) -> str:
        """The kernel struct it implements (``tcp_congestion_ops``)."""
        return self._struct.name

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(m.name for m in self._struct.members if m.name)

    @property
    def programs(self) -> dict[str, Program]:
        """The function-pointer members that are set, with their programs."""
        return {member: self._collection.programs[p] for member, p in self._programs.items() if p is not None}

    @property
    def uses_link(self) -> bool:
        """Whether it registers through a BPF link (``.struct_ops.link``) rather than a map update."""
        return bool(self._spec.flags & MapFlags.LINK)

    @property
    def link(self) -> StructOpsLink | None:
        """The registration now, if registered."""
        link = self._link
        return link if link is not None and not link.closed else None

    @property
    def attached(self) -> bool:
        return self.link is not None

    @property
    def map_id(self) -> int | None:
        """The kernel id of the map behind it now (None before its first attach or association)."""
        with self._lock:
            fd = self._map
            return None if fd is None or fd.closed else int(commands.map_info(fd.raw).id)

    def __repr__(self) -> str:
        state = "registered" if self.attached else "not registered"
        return f"<StructOps {self.map_name!r} (struct {self.struct}) {state}>"

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.members]

    # --- the shadow ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except NotFound:
            raise AttributeError(f"struct {self.struct} ({self.map_name!r}) has no member {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.members:
            if name in dir(type(self)) or name.startswith("_"):
                raise AttributeError(f"{name!r} of StructOps {self.map_name!r} cannot be set")
            raise AttributeError(f"struct {self.struct} ({self.map_name!r}) has no member {name!r}")
        self[name] = value

    def __getitem__(self, name: str) -> Any:
        member = self._member(name)
        if self._is_function(member.name):
            program = self._programs.get(member.name)
            return None if program is None else self._collection.programs[program]
        return self._codec(member.name, member.type).unpack_from(self._data, member.bit_offset // 8)

    def __setitem__(self, name: str, value: Any) -> None:
        member = self._member(name)
        with self._lock:
            if self.attached:
                raise StateError(
                    f"struct_ops {self.map_name!r} is registered: detach() it before changing {name!r} "
                    "(the change applies at the next attach)"
                )
            if self._is_function(member.name):
                self._programs[member.name] = self._program_for(member.name, value)
                return
            codec = self._codec(member.name, member.type)
            codec.pack_into(self._data, member.bit_offset // 8, value, path=f"{self.map_name}.{name}")

    def _member(self, name: str) -> Any:
        for m in self._struct.members:
            if m.name == name and name:
                return m
        raise NotFound(f"struct_ops {self.map_name!r} (struct {self.struct})", "member", name, self.members)

    def _is_function(self, name: str) -> bool:
        return _is_function_pointer(self._btf, self._member(name).type)

    def _codec(self, name: str, type_id: int) -> Codec:
        codec = self._codecs.get(name)
        if codec is None:
            from dynbpf._maps.codec import codec_for

            codec = self._codecs[name] = codec_for(self._btf, type_id, strings=True)  # a char[] is a name: str
        return codec

    def _program_for(self, member: str, value: Any) -> str | None:
        if value is None:
            return None
        from dynbpf._runtime.program import Program

        coll = self._collection
        name = value.name if isinstance(value, Program) else value
        if isinstance(value, Program) and value._collection is not coll:
            raise ValueError(f"{self.map_name}.{member}: program {name!r} belongs to another collection")
        if not isinstance(name, str):
            raise TypeError(f"{self.map_name}.{member} takes a Program of this collection or None, not {value!r}")
        program = coll.programs[name]  # NotFound for a name the object lacks
        if program.prepared.kind.prog_type != ProgType.STRUCT_OPS:
            raise ValueError(f"{self.map_name}.{member}: program {name!r} is not a struct_ops program")
        return program.name

    # --- registration -------------------------------------------------------------------

    def attach(self) -> StructOpsLink:
        """Register with the kernel; loads the member programs that are not loaded yet.

        Returns the registration; ``detach()`` on it (or on this object)
        unregisters. A value the kernel refuses raises :class:`AttachError`
        naming the member, where the kernel's answer allows knowing it.
        """
        coll = self._collection
        coll._require_open()
        if self.attached:
            raise StateError(f"struct_ops {self.map_name!r} is registered already: {self.link}")
        self._check_members()  # what the kernel lacks is named before anything is loaded
        loaded_now = [p for p in self.programs.values() if p.load()]  # outside our lock: a reload takes its own
        try:
            with self._lock:
                if self.attached:
                    raise StateError(f"struct_ops {self.map_name!r} is registered already: {self.link}")
                value, written = self._value()
                self._write(value, written)
                map_fd = self._map
                assert map_fd is not None
                if self.uses_link:
                    try:
                        fd = commands.link_create(
                            LinkCreateAttr(prog_fd=map_fd.raw, attach_type=AttachType.STRUCT_OPS),
                            detail=f"struct_ops {self.map_name!r}",
                        )
                    except SyscallError as e:
                        raise self._refused(e, value) from None
                    link = StructOpsLink(self, fd, legacy=False)
                else:
                    link = StructOpsLink(self, Fd(_dup(map_fd.raw), "struct_ops map"), legacy=True)
                self.__dict__["_link"] = link
        except BaseException:
            if not self.attached:  # another attach won meanwhile: its programs stay (unloading unregisters it)
                for program in loaded_now:  # nothing half done: what this call loaded goes again
                    program.unload()
            self._settle(failing=True)
            raise
        self._settle()
        return link

    def detach(self) -> None:
        """Unregister (a no-op if not registered)."""
        link = self.link
        if link is not None:
            link.detach()

    # --- for the runtime ----------------------------------------------------------------

    def _layout_now(self) -> Layout:
        found: Layout | None = self._layout
        if found is None:
            vmlinux = self._collection.prepared.vmlinux
            if vmlinux is None:
                raise KernelUnsupported(f"struct_ops ({self.map_name!r})", "the running kernel has no BTF")
            found = self.__dict__["_layout"] = layout(self._spec, self._btf, vmlinux)
        return found

    def _check_members(self) -> None:
        """Raise KernelUnsupported for what the running kernel lacks: a member the object sets that its struct
        does not have, or struct_ops links for a ``.struct_ops.link`` map (6.4); before anything is loaded."""
        if self.uses_link:
            support = attach_probes.struct_ops_link()
            if not support:
                raise KernelUnsupported(f"{support.name} (needed by struct_ops map {self.map_name!r})", support.how)
        shape = self._layout_now()
        for m in shape.members:
            if m.kernel_offset is not None:
                continue
            program_name = self._programs.get(m.name) if m.function else None
            if program_name is not None or any(self._data[m.local_offset : m.local_offset + m.size]):
                raise KernelUnsupported(
                    f"member {m.name!r} of struct {shape.struct} (set by struct_ops map {self.map_name!r})",
                    f"the running kernel's struct {shape.struct} (BTF) has no member {m.name!r}; "
                    "leave it unset to load on this kernel",
                )

    def _value(self) -> tuple[bytes, tuple[object, ...]]:
        """The kernel's value from the shadow, and what it depends on (data, each program's Fd object)."""
        shape = self._layout_now()
        value = bytearray(shape.value_size)
        used: list[object] = [bytes(self._data)]
        for m in shape.members:
            program_name = self._programs.get(m.name) if m.function else None
            local = bytes(self._data[m.local_offset : m.local_offset + m.size])
            if m.kernel_offset is None:
                continue  # unset (_check_members)
            if not m.function:
                value[m.kernel_offset : m.kernel_offset + m.size] = local
                continue
            if program_name is None:
                continue
            program = self._collection.programs[program_name]
            prepared = program.prepared
            if (prepared.attach_btf_id, prepared.expected_attach_type) != (shape.struct_id, m.index):
                raise AttachError(
                    f"struct_ops {self.map_name!r}: program {program_name!r} was made for another member than "
                    f"{m.name!r} of struct {shape.struct}; a struct_ops program serves the member whose slot the "
                    "object gave it"
                )
            fd = program._fd
            if fd is None:
                raise StateError(f"struct_ops {self.map_name!r}: program {program_name!r} was unloaded meanwhile")
            value[m.kernel_offset : m.kernel_offset + _POINTER] = fd.raw.to_bytes(_POINTER, "little")
            used.append(fd)
        return bytes(value), tuple(used)

    def _write(self, value: bytes, written: tuple[object, ...]) -> None:
        """Put ``value`` in a map that takes it: the one there is if it can, else a fresh one. Caller holds the lock.

        For a map-update registration, this registers. Whatever happens, the
        caller calls :meth:`_settle` once it has released the lock: a fresh
        map leaves the programs tied to the old one to follow, a refusal may
        leave member programs held by trial maps.
        """
        current = self._written
        reusable = self._map is not None and not self._dead and (current is None or _same(current, written))
        if not reusable:
            self._replace_map()
        if self._written is None:
            assert self._map is not None
            try:
                commands.map_update_elem(self._map.raw, _KEY0, value)
            except SyscallError as e:
                raise self._refused(e, value) from None
            self.__dict__["_written"] = written

    def _settle(self, *, failing: bool = False) -> None:
        """What a step that wrote a value leaves to do once the lock is released, for every caller of :meth:`_write`.

        Member programs that trial maps held are reloaded (a kernel with
        BPF_PROG_ASSOC_STRUCT_OPS marks them ambiguous for good), and the
        programs tied to an earlier map follow to the one there is now
        (:meth:`_follow`). ``failing``: the caller is raising an error of its
        own; one of these steps failing then leaves its work to the next
        step (the generation stays unfollowed) rather than hiding that error.
        """
        try:
            if self._tried and not self._settling:  # (a reload re-registers, which settles again: not twice)
                self.__dict__.update(_tried=False, _settling=True)
                try:
                    for program in self.programs.values():
                        if program.loaded:
                            program.reload()
                except BaseException:
                    self.__dict__["_tried"] = True  # not all reloaded: the next step tries again
                    raise
                finally:
                    self.__dict__["_settling"] = False
            self._follow()
        except Exception:
            if not failing:
                raise

    def _follow(self) -> None:
        """Programs tied to an earlier kernel map of this struct_ops are loaded anew and tied to the one now.

        Done after the step that made the map, never inside a build phase
        (``set_constants`` defers it until its programs switched), and again
        by the next step if it failed: until the tied programs followed, the
        generation stays unfollowed.
        """
        if self._collection._following_deferred():
            return
        with self._lock:
            generation = self._generation
        if generation == self._followed:
            return
        self._collection._struct_ops_replaced(self)
        with self._lock:
            if self._followed < generation:
                self.__dict__["_followed"] = generation

    def _current_map(self) -> int | None:
        """The map programs are tied to now, or None if there is none worth following (none, or unregistered)."""
        fd = self._map
        return None if fd is None or fd.closed or self._dead else fd.raw

    def _replace_map(self) -> bool:
        """A fresh kernel map in place of the one there is (closed); returns whether there was one."""
        shape = self._layout_now()
        prepared = self._collection.prepared
        btf_fd = prepared.btf_fd
        if btf_fd is None:  # prepare refuses struct_ops objects whose BTF the kernel does not load
            raise StateError(f"struct_ops {self.map_name!r}: the object's BTF is not loaded in the kernel")
        attr = MapCreateAttr(
            map_type=int(MapType.STRUCT_OPS),
            key_size=4,
            value_size=shape.value_size,
            max_entries=1,
            map_flags=self._spec.flags,
            map_name=mapcreate.kernel_name(self._collection.spec.name, self._spec.name).encode(),
            btf_fd=btf_fd.raw,
            btf_vmlinux_value_type_id=shape.value_type_id,
        )
        try:
            fd = commands.map_create(attr)
        except SyscallError as e:
            raise SyscallError(e.command, e.errno, e.hint, detail=f"struct_ops map {self.map_name!r}") from None
        old: Fd | None = self._map
        self.__dict__.update(_map=fd, _written=None, _dead=False, _generation=self._generation + 1)
        if old is not None:
            old.close()
            return True
        return False

    def _map_fd(self) -> int:
        """The map's fd now, made if there is none or it took its last value (associations; callers follow later)."""
        with self._lock:
            if self._map is None or self._dead:
                self._replace_map()
            assert self._map is not None
            return self._map.raw

    def _refresh(self) -> None:
        """Register again with the programs as they are now (a member program was reloaded).

        The registration (the :class:`StructOpsLink` the caller holds) stays
        the same object. A link is updated in place, with no moment
        unregistered; a map-update registration is deleted and a fresh map
        written, the kernel offering nothing better (and refusing two of the
        same identity at once).
        """
        try:
            with self._lock:
                link = self.link
                if link is None:
                    return
                value, written = self._value()
                if link._legacy:
                    self._reregister(link, value, written)
                else:
                    self._swap_map(link, value, written)
        except BaseException:
            self._settle(failing=True)
            raise
        self._settle()

    def _reregister(self, link: StructOpsLink, value: bytes, written: tuple[object, ...]) -> None:
        """Unregister, then register a fresh map behind the same ``link``; if that fails, ``link`` is detached."""
        try:
            with link._lock:
                try:
                    commands.map_delete_elem(link._fd.raw, _KEY0)
                finally:
                    link._fd.close()
                    self.__dict__["_dead"] = True
                self._write(value, written)
                assert self._map is not None
                link._fd = Fd(_dup(self._map.raw), "struct_ops map")
        except BaseException:
            self.__dict__["_link"] = None
            link._notify("detach", None)
            raise

    def _swap_map(self, link: StructOpsLink, value: bytes, written: tuple[object, ...]) -> None:
        old = self._map
        self.__dict__.update(_map=None, _written=None)
        try:
            self._write(value, written)
            assert self._map is not None
            with link._lock:  # the link's fd is the link's: a detach at once must not close it under us
                commands.link_update(link._open_fd(), self._map.raw)
        except BaseException as e:
            if self._map is not None:
                self._map.close()
            self.__dict__.update(_map=old, _written=_STALE)  # its value holds programs now gone: never reused
            if isinstance(e, SyscallError):
                raise AttachError(
                    f"struct_ops {self.map_name!r} stays registered with the programs it had: the kernel "
                    f"refused the new value ({_answer(e)})"
                ) from None
            raise
        if old is not None:
            old.close()

    def _unregistered(self, link: StructOpsLink) -> None:
        with self._lock:
            if self._link is link:
                self.__dict__["_link"] = None
            if link._legacy:
                self.__dict__["_dead"] = True

    def _moved(self, link: StructOpsLink, to: StructOps) -> None:
        """``link`` now registers ``to`` (StructOpsLink.update)."""
        with self._lock:
            if self._link is link:
                self.__dict__["_link"] = None
        with to._lock:
            to.__dict__["_link"] = link

    def _ready_for_update(self) -> int:
        """A link map with its value written, not registered: what a link update swaps in; returns its fd."""
        if not self.uses_link:
            raise AttachError(
                f"struct_ops {self.map_name!r} registers by map update (.struct_ops): only .struct_ops.link maps can "
                "be swapped in behind a link"
            )
        if self.attached:
            raise StateError(f"struct_ops {self.map_name!r} is registered already: {self.link}")
        self._check_members()
        for program in self.programs.values():
            program.load()
        try:
            with self._lock:
                value, written = self._value()
                self._write(value, written)
                assert self._map is not None
                fd = self._map.raw
        except BaseException:
            self._settle(failing=True)
            raise
        self._settle()
        return fd

    def _refused(self, e: SyscallError, value: bytes) -> AttachError:
        """An AttachError for a value the kernel refused, naming the member where trial maps can tell which."""
        shape = self._layout_now()
        set_members = [m.name for m in shape.members if m.kernel_offset is not None and _set(m, value)]
        culprit = self._culprit(value) if e.errno == errno.EINVAL else None
        if culprit is not None:
            shown = self[culprit]
            why = f"the kernel refused member {culprit!r} (= {shown!r})"
        elif e.errno == errno.EEXIST:
            why = "the kernel has one registered under the same identity already"
            if "name" in self.members and not self._is_function("name"):
                why += f" (name {self['name']!r})"
        elif e.errno == errno.EINVAL:
            unset = [m.name for m in shape.members if m.function and m.kernel_offset is not None and not _set(m, value)]
            why = (
                "the kernel refused the struct as a whole; a member it requires may be unset "
                f"(unset: {', '.join(unset) or 'none'})"
            )
        else:
            why = "the kernel refused it"
        return AttachError(
            f"cannot register struct_ops {self.map_name!r} (struct {shape.struct}): {why}; members set: "
            f"{', '.join(set_members)} ({_answer(e)})"
        )

    def _culprit(self, value: bytes) -> str | None:
        """The one data member whose value the kernel refuses, found by trial maps the kernel does not register.

        A ``BPF_F_LINK`` map runs every check of a registration (each member,
        then the subsystem's validation) when written, without registering;
        the data member whose zeroing makes the value pass is the one refused.
        A kernel with ``BPF_PROG_ASSOC_STRUCT_OPS`` marks a struct_ops program
        written into two maps as ambiguous for good, so :meth:`_settle` then
        reloads the member programs (``_tried``), whichever step wrote.
        """
        if not attach_probes.struct_ops_link():
            return None
        self.__dict__["_tried"] = bool(attach_probes.struct_ops_assoc())
        shape = self._layout_now()
        prepared = self._collection.prepared
        assert prepared.btf_fd is not None
        for m in shape.members:
            if m.function or m.kernel_offset is None or not _set(m, value):
                continue
            trial = bytearray(value)
            trial[m.kernel_offset : m.kernel_offset + m.size] = bytes(m.size)
            attr = MapCreateAttr(
                map_type=int(MapType.STRUCT_OPS),
                key_size=4,
                value_size=shape.value_size,
                max_entries=1,
                map_flags=int(MapFlags.LINK),
                btf_fd=prepared.btf_fd.raw,
                btf_vmlinux_value_type_id=shape.value_type_id,
            )
            fd, _ = commands.map_create_raw(attr)
            if fd is None:
                return None
            with fd:
                try:
                    commands.map_update_elem(fd.raw, _KEY0, bytes(trial))
                except SyscallError:
                    continue
                return m.name
        return None

    def _close(self) -> None:
        try:
            self.detach()
        finally:  # the map goes even if unregistering failed (closing it is what unregistering comes to)
            with self._lock:
                if self._map is not None:
                    self._map.close()


def _answer(e: SyscallError) -> str:
    return f"{e.command} answered {errno.errorcode.get(e.errno, e.errno)}"


def _set(m: Member, value: bytes) -> bool:
    assert m.kernel_offset is not None
    size = _POINTER if m.function else m.size
    return any(value[m.kernel_offset : m.kernel_offset + size])


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and a[0] == b[0] and all(x is y for x, y in zip(a[1:], b[1:], strict=True))


def _dup(fd: int) -> int:
    import os

    from dynbpf._sys.syscall import good_fd

    return good_fd(os.dup(fd))


class StructOpsLink(Link):
    """The registration of a :class:`StructOps`: a BPF link, or (``.struct_ops``) the registered map itself.

    ``detach()`` unregisters. ``update(other)`` swaps another
    ``.struct_ops.link`` StructOps of the same struct in behind the link.
    """

    def __init__(self, ops: StructOps, fd: Fd, *, legacy: bool) -> None:
        how = "map update" if legacy else "link"
        super().__init__(fd, kind="struct_ops", description=f"struct_ops {ops.map_name!r} (struct {ops.struct}, {how})")
        self._ops = ops
        self._legacy = legacy

    @property
    def struct_ops(self) -> StructOps:
        """What the link registers now."""
        return self._ops

    def update(self, new_program: Any) -> None:
        """Register ``new_program``, another :class:`StructOps` of the same struct, in this one's place, atomically."""
        new = new_program
        if not isinstance(new, StructOps):
            raise TypeError(f"a struct_ops link is updated with another StructOps, not {new!r}")
        if self._legacy:
            raise AttachError(
                f"cannot update {self.description}: it is registered by map update (.struct_ops), which the "
                "kernel cannot swap; detach it and attach the other, or declare both in .struct_ops.link"
            )
        if new.struct != self._ops.struct:
            raise AttachError(
                f"cannot update {self.description} with struct_ops {new.map_name!r} of struct {new.struct}"
            )
        map_fd = new._ready_for_update()
        with self._lock:
            fd = self._open_fd()
            try:
                commands.link_update(fd, map_fd)
            except SyscallError as e:
                raise AttachError(
                    f"cannot update {self.description} to struct_ops {new.map_name!r}: the kernel refused "
                    f"({_answer(e)}); its subsystem may require the same identity (a tcp_congestion_ops: the "
                    "same name) and both must be of one struct"
                ) from None
        old = self._ops
        old._moved(self, new)
        self._ops = new
        self.description = f"struct_ops {new.map_name!r} (struct {new.struct}, link)"

    def pin(self, path: str) -> None:
        if self._legacy:
            raise AttachError(
                f"cannot pin {self.description}: a map-update registration has no link object; declare the "
                "map in .struct_ops.link to register it through a link that can be pinned"
            )
        super().pin(path)

    def detach(self) -> None:
        """Unregister; idempotent.

        Takes the struct_ops' lock before the link's, the order re-registering
        (a member program's reload) takes them in: the other order deadlocks.
        """
        while True:
            ops = self._ops
            with ops._lock, self._lock:
                if self._ops is not ops:  # update() moved the link to another struct_ops meanwhile
                    continue
                if self.closed:
                    return
                try:
                    self._close()
                finally:
                    ops._unregistered(self)
            break
        self._notify("detach", None)

    def _close(self) -> None:
        try:
            if self._legacy:
                commands.map_delete_elem(self._fd.raw, _KEY0)  # unregisters; the kernel never takes this map again
        finally:
            self._fd.close()


class StructOpsViews(Mapping[str, StructOps]):
    """``coll.struct_ops``: the object's struct_ops maps by name; an unknown name is :class:`NotFound`."""

    def __init__(self, collection: Collection, make: Callable[[str], StructOps]) -> None:
        self._collection = collection
        self._make = make

    def _names(self) -> list[str]:
        return [n for n, m in self._collection.spec.maps.items() if m.type == MapType.STRUCT_OPS]

    def __getitem__(self, name: str) -> StructOps:
        if name not in self._names():
            raise NotFound(f"object {self._collection.spec.name!r}", "struct_ops map", name, self._names())
        return self._make(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())
