"""A prepared object with its kernel state: maps, loaded programs. ``dynbpf.open`` returns one.

Every map gets a reserved fd number before prepare runs, so prepared
instructions stay valid whatever happens to the maps later: maps come and
go with their policy (the ``MapRegistry``), programs load, attach, unload
and reload one by one or many in parallel, and nothing is re-prepared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

from dynbpf import _section_names as section_names
from dynbpf._btf.spec import Spec
from dynbpf._elf.reader import read
from dynbpf._elf.spec import ObjectSpec
from dynbpf._prepare.btf_sanitize import BtfSupport
from dynbpf._prepare.object import PreparedObject, prepare
from dynbpf._prepare.prepared import PreparedProgram
from dynbpf._probes import kernel as kernel_features
from dynbpf._runtime import mapedit, parallel
from dynbpf._runtime.attach_targets import ProgramTarget
from dynbpf._runtime.attach_targets import resolve as attach_targets_of
from dynbpf._runtime.load import Loaded, LoadOptions
from dynbpf._runtime.mapedit import MapEdit
from dynbpf._runtime.mapregistry import MapRegistry
from dynbpf._runtime.program import Program
from dynbpf._runtime.state import MapPolicy, ProgramState
from dynbpf._sys.closing import Closing
from dynbpf._sys.constants import MapFlags, MapType, ProgType
from dynbpf.errors import AttributeNotFound, DynbpfError, KernelUnsupported, NotFound, OptionError, PinError, StateError

if TYPE_CHECKING:  # the map views and event readers load with their first use (docs/architecture.md)
    from dynbpf._attach.auto import Attached
    from dynbpf._attach.link import Link
    from dynbpf._attach.usdt import SpecIds
    from dynbpf._maps.map import Map
    from dynbpf._maps.perfbuf import PerfBuffer
    from dynbpf._maps.reader import EventReader
    from dynbpf._maps.ringbuf import RingBuffer
    from dynbpf._maps.variables import Variables
    from dynbpf._runtime.adopt import Adoption, Survey
    from dynbpf._runtime.pins import RootPins
    from dynbpf._runtime.struct_ops import StructOps
    from dynbpf._sys.fd import Fd

DISABLED = ProgramState.DISABLED
_R = TypeVar("_R", bound="EventReader")


class Collection(Closing):
    """Programs and maps of one BPF object, prepared for the running kernel; a context manager.

    Thread-safe: any thread may load, unload, attach or read maps at any time.
    """

    #: what ``adopt=`` found and took over; None when opened without it
    adoption: Adoption | None = None
    _pins: RootPins | None = None  # where pin() or adopt= put the application, and what of it is ours
    _feature_state: Callable[[], dict[str, Any]] | None = None  # what the Application records in a pinned root

    def __init__(
        self,
        spec: ObjectSpec,
        *,
        constants: Mapping[str, Any] | None = None,
        map_policy: MapPolicy | str = MapPolicy.EAGER,
        map_policies: Mapping[str, MapPolicy | str] | None = None,
        map_edits: Mapping[str, MapEdit] | None = None,
        pin_root: str | None = None,
        allow_shared_pin_root: bool = False,
        adopt: str | os.PathLike[str] | None = None,
        disabled: Iterable[str] = (),
        cache: bool | str | os.PathLike[str] | None = None,
        associate_struct_ops: bool | str = False,
        kernel: KernelView | None = None,
        attach_targets: Mapping[str, tuple[Any, str]] | None = None,
    ) -> None:
        """Prepare ``spec`` for this kernel and create the maps that always exist (``dynbpf.open`` reads it first).

        - ``constants``: ``.rodata`` values by name, set before the section is frozen;
        - ``map_policy``: every map's policy, ``"eager"`` (default, like libbpf),
          ``"on_demand"`` or ``"pinned"``; maps the object pins by name are pinned;
        - ``map_policies``: per-map policies, overriding the two above;
        - ``map_edits``: ``{map: MapEdit(...)}``, libbpf's ``bpf_map__set_*`` before creation (docs/maps.md);
        - ``pin_root``: the bpffs directory of pinned maps (default ``/sys/fs/bpf``),
          created with mode 0700 if missing; one that others may write is refused
          unless ``allow_shared_pin_root`` (docs/runtime.md, "Pins you can trust");
        - ``adopt``: a bpffs directory where an earlier process pinned this
          application (:meth:`pin`): the pinned programs, links and maps that
          are what this open would load and create are taken over instead of
          loaded (:attr:`adoption` says what was and why not); pins later go
          with this collection (docs/runtime.md, "Restart without a blind
          window"). A directory that does not exist yet is a first start;
        - ``disabled``: programs that must never load;
        - ``cache``: keep prepared programs on disk and take them from there
          on later opens (``True``: ``$XDG_CACHE_HOME/dynbpf``; or a directory),
          so a restarted agent skips preparing; a stale or corrupt entry is
          ignored, and the instructions loaded are byte-identical to a cold start's;
        - ``kernel``: a :class:`KernelView` standing in for what the running
          kernel would tell (tests);
        - ``attach_targets``: ``{program: (target, function)}``, libbpf's
          ``bpf_program__set_attach_target``: an fentry, fexit, fmod_ret or
          freplace program hooks ``function`` of the loaded BPF program
          ``target`` (a ``Program``, an ``Fd`` or an fd number), whatever its
          section names (docs/attach.md).
        """
        view = kernel if kernel is not None else KernelView()
        vmlinux, config, kallsyms, btf_support = view.vmlinux, view.config, view.kallsyms, view.btf_support
        self._lock = threading.RLock()
        self._closed = False
        self._constants_lock = threading.Lock()
        self._feature_owner: object = None  # the Application running this collection's programs, if any
        self._shared_pins = allow_shared_pin_root
        # Which constants loads see: set_constants bumps it (under _published, with choosing what to reload), and
        # a load publishes its program only if it did not change meanwhile, else loads again (Program._load).
        self._constants_generation = 0
        self._published = threading.Lock()
        self._in_flight = 0  # calls using reserved map numbers right now; close() waits for them
        self._idle = threading.Condition(threading.Lock())
        self._map_views: dict[str, Map] = {}
        self._variables: dict[str, Variables] = {}
        self._prepared: PreparedObject | None = None
        self._registry = MapRegistry(spec.name)
        self._readers: weakref.WeakSet[EventReader] = weakref.WeakSet()
        self._usdt_ids: SpecIds | None = None  # the USDT spec ids its usdt programs' links hold
        self._measured_seconds = 0.0
        self._measured_insns = 0
        self._struct_ops: dict[str, StructOps] = {}
        self._associations: dict[str, str] = {}  # program -> the struct_ops map each of its loads is tied to
        self._deferral = threading.local()  # depth of _deferring_follow on this thread
        self._attach_targets: dict[str, ProgramTarget] = {}
        off = _disabled(spec, disabled)
        default = MapPolicy.of(map_policy, where="map_policy")
        policies = {name: MapPolicy.of(p, where=f"map_policies[{name!r}]") for name, p in (map_policies or {}).items()}
        tie_to = _association_target(spec, associate_struct_ops)  # before anything is created
        edited = mapedit.apply(spec, map_edits or {})
        self._registry.adopt(edited.reused)
        spec = self.spec = edited.spec if kernel_features.mmapable_arrays() else mapedit.without_mmap(edited.spec)
        found: Survey | None = None
        try:
            self._attach_targets = attach_targets_of(spec, attach_targets or {})
            data = _constants(spec, constants or {})
            self._prepared = prepare(
                spec,
                self._registry.number,
                vmlinux=vmlinux,
                config=config,
                kallsyms=kallsyms,
                btf_support=btf_support,
                absent_maps=edited.absent,
                program_targets=frozenset(self._attach_targets),
                lazy=True,
                **_cache_options(cache, spec, edited.absent, vmlinux=vmlinux, config=config, kallsyms=kallsyms),
            )
            found = _survey(adopt, spec, shared=allow_shared_pin_root)
            self._registry.bind(
                self._prepared,
                default=default,
                policies=policies,
                pin_root=pin_root,
                shared_pin_root=allow_shared_pin_root,
                data=data,
                absent=edited.absent,
                from_pins=found.maps if found is not None else None,
            )
        except BaseException:
            if found is not None:
                found.close()  # (those bind took are closed again: harmless)
            self.close()
            raise
        self._bound = _bound_maps(self._prepared, edited.absent)
        self.programs: _ByName[Program] = _Named(
            f"object {spec.name!r}",
            "program",
            {name: Program(self, name, disabled=name in off) for name in spec.programs},
        )
        if tie_to is not None:
            for name, prog in spec.programs.items():
                if prog.kind.prog_type != ProgType.STRUCT_OPS:
                    self._associations[name] = tie_to
        self._adopt(found)

    # --- public -----------------------------------------------------------------------

    @property
    def pinned_root(self) -> str | None:
        """The root :meth:`pin` pins this application under (given to it, or to ``adopt=``); None until then."""
        pins = self._pins
        return pins.root if pins is not None else None

    @property
    def prepared(self) -> PreparedObject:
        self._require_open()
        assert self._prepared is not None
        return self._prepared

    @property
    def progs(self) -> _ByName[Program]:
        """:attr:`programs`, by its short name (``coll.progs.handle_exec``)."""
        return self.programs

    @property
    def maps(self) -> _ByName[Map]:
        """Dict-like views of the object's maps, decoded with their BTF types; by key, or as attributes.

        ``coll.maps.events`` is ``coll.maps["events"]`` for every name that
        is an identifier and not a method of the mapping. Only maps that
        exist now can be viewed: an on-demand map no loaded program needs
        raises ``StateError``.
        """
        return _MapViews(self)

    @property
    def struct_ops(self) -> Mapping[str, StructOps]:
        """The object's struct_ops maps by name: shadows of their members, registered by ``attach()``.

        See docs/struct_ops.md. They exist in the kernel from their first
        attach or association, not at open.
        """
        from dynbpf._runtime.struct_ops import StructOpsViews

        return StructOpsViews(self, self._struct_ops_named)

    def map_exists(self, name: str) -> bool:
        """Whether a kernel map sits behind ``name``'s reserved fd number now."""
        return self._registry.exists(name)

    def map_fd_number(self, name: str) -> int:
        """The fd number reserved for map ``name``: what the prepared instructions hold, stable until close."""
        self._registry.spec(name)
        return self._registry.number(name)

    def map_policy(self, name: str) -> MapPolicy:
        return self._registry.policy(name)

    def map_pin_path(self, name: str) -> str | None:
        """The bpffs path of a pinned map (libbpf's file name: ``.`` becomes ``_``); None for other policies."""
        return self._registry.pin_path(name)

    @property
    def bss(self) -> Variables:
        return self.variables(section_names.BSS)

    @property
    def data(self) -> Variables:
        return self.variables(section_names.DATA)

    @property
    def rodata(self) -> Variables:
        """Read-only once open (frozen): set values with ``dynbpf.open(..., constants=...)``."""
        return self.variables(section_names.RODATA)

    def variables(self, section: str) -> Variables:
        """The global variables of one data section (``.bss``, ``.data.foo``...), by name, typed.

        A section libbpf would mmap (``BPF_F_MMAPABLE``: it has a non-static
        variable) is read and written through its memory mapping, as a
        skeleton does: no syscall per access. The view belongs to the map as
        it exists now: once an on-demand map is freed, the view raises
        ``StateError``; ask again after it is re-created. Other sections go
        through the map fd (lookup/update of key 0). ``.rodata`` is frozen:
        reading works, writing raises.
        """
        prepared = self.prepared
        spec = prepared.maps.get(section)
        btf = self.spec.btf
        if spec is None or not mapedit.is_global_data(spec):
            have = [n for n, m in prepared.maps.items() if mapedit.is_global_data(m)]
            raise NotFound(f"object {self.spec.name!r}", "data section", section, have)
        if btf is None:
            raise OptionError(f"object {self.spec.name!r} has no BTF, so the variables of {section} have no names")
        own = [v for v in self.spec.variables.values() if v.section == section]
        from dynbpf._maps.variables import Variables

        if not spec.flags & MapFlags.MMAPABLE:
            return Variables.of_map(self._registry.view(section), btf, own)
        mapping = self._registry.mapping(section)
        with self._lock:
            view = self._variables.get(section)
            if view is None or view._mapping is not mapping:
                view = self._variables[section] = Variables.of_mapping(mapping, btf, own)
            return view

    def ring_buffer(
        self,
        name: str,
        *,
        record: str | int | None = None,
        strings: bool = False,
        callback: Callable[[Any], object] | None = None,
    ) -> RingBuffer:
        """A reader of ring buffer map ``name``; records decoded as type ``record`` (e.g. ``"struct event"``).

        ``record`` is looked up as :meth:`record_decoder` does (BTF, then
        DWARF); ``strings=True`` decodes its ``char`` arrays to ``str``. The
        reader counts as a user of the map until it is closed, so an
        on-demand ring buffer is created now and outlives unloads of its
        programs while it is read (docs/events.md).
        """
        from dynbpf._maps.ringbuf import RingBuffer

        return self._event_reader(
            name, record, strings, lambda fd, decode: RingBuffer(fd, decode=decode, callback=callback)
        )

    def perf_buffer(
        self,
        name: str,
        *,
        record: str | int | None = None,
        strings: bool = False,
        callback: Callable[[int, Any], object] | None = None,
        lost_callback: Callable[[int, int], object] | None = None,
        pages: int = 8,
    ) -> PerfBuffer:
        """A reader of perf event array ``name``, one ring of ``pages`` pages per CPU; like :meth:`ring_buffer`."""
        from dynbpf._maps.perfbuf import PerfBuffer

        return self._event_reader(
            name,
            record,
            strings,
            lambda fd, decode: PerfBuffer(
                fd, decode=decode, callback=callback, lost_callback=lost_callback, pages=pages
            ),
        )

    def record_decoder(
        self, record: str | int, *, exact: bool = False, strings: bool = False
    ) -> Callable[[bytes | bytearray | memoryview], Any]:
        """``bytes -> Record`` for the object's type ``record``: ``"struct event"``, ``"event"`` or a BTF id.

        A name is looked up in the object's BTF, then, if the BTF lacks it,
        in its DWARF (a ``-g`` build's ``.debug_info``, read on first need):
        a record struct used only as a local variable never reaches BTF.
        Either way the map codecs decode it. A record shorter than the type
        is decoded when only the type's trailing array is cut short; longer
        ones decode their leading bytes (``exact=True`` refuses them);
        ``strings=True`` decodes ``char`` arrays to ``str`` up to their NUL
        (docs/events.md).
        """
        from dynbpf._runtime.records import decoder

        return decoder(self.spec, record, exact=exact, strings=strings)

    def _event_reader(self, name: str, record: str | int | None, strings: bool, make: Callable[[int, Any], _R]) -> _R:
        self._registry.spec(name)  # an unknown map is NotFound before anything is made
        decode = None
        if record is not None:
            decode = self.record_decoder(record, strings=strings)
        elif strings:
            raise OptionError(f"strings=True: map {name!r} has no record= type whose char arrays it would decode")
        registry = self._registry
        registry.acquire([name])
        try:
            reader = make(registry.require(name), decode)
        except BaseException:
            registry.release([name])
            raise
        reader.on_close(lambda: registry.release([name]))
        self._readers.add(reader)
        return reader

    def load(
        self, programs: Iterable[str] | None = None, *, workers: int | None = None, atomic: bool = False
    ) -> dict[str, DynbpfError]:
        """Load programs in parallel; return the failures, each with its own error and verifier log.

        ``programs`` defaults to every program the object marks autoload and
        that is not disabled; one that cannot be prepared is among the
        failures. Already loaded ones are left as they are. Each worker
        prepares the programs it loads, if that was not done yet.
        ``workers`` threads verify at once (default: one per CPU); the
        longest-expected programs start first so the workers finish
        together. A failure does not stop the others; with ``atomic=True``
        any failure unloads every program this call loaded. An interrupt
        (Ctrl-C) stops scheduling at once: loads under way finish, the rest
        never start, ``atomic=True`` unloads what this call loaded, and the
        ``KeyboardInterrupt`` is re-raised.
        """
        if programs is None:
            chosen = [p for n, p in self.programs.items() if self.spec.programs[n].kind.autoload and not p._disabled]
        else:
            chosen = [self._program(name) for name in dict.fromkeys(_names(programs, "programs"))]
        self._require_open()
        todo = [p for p in chosen if not p.loaded]
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise OptionError(
                f"workers must be a whole number of threads, at least 1 (or None: one per CPU), not {workers!r}"
            )
        loaded: list[Program] = []
        try:
            _, failures = parallel.load(todo, workers=workers or os.cpu_count() or 1, cost=self._cost, loaded=loaded)
        except BaseException:
            if atomic:  # an interrupt rolls back like a failure: nothing this call loaded stays
                for program in loaded:
                    program.unload()
            raise
        if atomic and failures:
            for program in loaded:
                program.unload()
        self._save_cache()
        return failures

    def attach(self) -> Attached:
        """Attach every loaded program whose section names its hook, as libbpf's skeleton attach does.

        Returns the links made, by program. Programs whose hook only the
        caller can name (a bare ``SEC("uprobe")``, xdp, cgroup, perf_event,
        struct_ops...) and programs attached already are passed over, each
        with its reason in the result's ``skipped``; programs not loaded are
        left out. All or nothing: when one attach fails, the links this call
        made are detached again and that error, which names the program, is
        raised.
        """
        from dynbpf._attach.auto import Attached, needs_target

        self._require_open()
        links: dict[str, Link] = {}
        skipped: dict[str, str] = {}
        name = ""
        try:
            for name, program in self.programs.items():
                with program._lock:
                    if program._fd is None:
                        continue
                    reason = needs_target(self.spec.programs[name].kind)
                    if reason is None and program.links:
                        reason = f"attached already ({len(program.links)} live link(s))"
                    if reason is not None:
                        skipped[name] = reason
                        continue
                    links[name] = program._attach({})
        except BaseException as e:
            undone = ", ".join(links) or "none"
            e.add_note(f"coll.attach() stopped at program {name!r}; the links it had made ({undone}) are detached")
            for made, link in links.items():
                try:
                    link.detach()
                except Exception as failed:
                    e.add_note(f"detaching the link of {made!r} failed too: {failed}")
            raise
        return Attached(links, skipped)

    def set_constants(self, constants: Mapping[str, Any]) -> tuple[str, ...]:
        """Give ``.rodata`` globals new values while programs run; returns the programs reloaded.

        Read-only data is frozen, so the maps holding the changed values are
        made anew with them (taking the same fd numbers), every loaded
        program that reads them is loaded again, and only once all of them
        loaded does each take its old program's place, keeping its links
        (make before break, see :meth:`Program.reload`). Atomic: if a load
        fails, the new programs are dropped and the old maps come back; the
        kernel holds exactly what it held, and the error is raised. Later
        loads (and on-demand re-creations) use the new values.
        """
        self._require_open()
        with self._constants_lock:
            wanted = _constants(self.spec, constants, base=self._registry.data)
            changed = {n: d for n, d in wanted.items() if d != self._registry.data(n)}
            if not changed:
                return ()
            try:
                with self._deferring_follow():  # no program outside the swap reloads before the switch
                    users = self._swap_constants(changed)
            except BaseException:
                with contextlib.suppress(DynbpfError):  # (what fails to follow now follows at the next step)
                    self._follow_struct_ops()
                raise
            self._follow_struct_ops()  # a struct_ops map made while building: the programs tied to the old follow
            return tuple(p.name for p in users)

    def _swap_constants(self, changed: dict[str, bytes]) -> list[Program]:
        """set_constants' build and switch phases (caller holds ``_constants_lock``); returns the programs reloaded.

        Programs tied to a struct_ops whose map a build made follow only
        after the switch (the caller defers it): reloading them here would
        switch them before the others, and outside the rollback.
        """
        swapped: dict[str, tuple[bytes | None, Fd | None]] = {}
        users: list[Program] = []
        fresh: dict[Program, Loaded] = {}
        with contextlib.ExitStack() as held:
            try:
                for name, data in changed.items():
                    swapped[name] = (self._registry.data(name), self._registry.swap_data(name, data))
                users = self._readers_of(changed)
                for program in users:  # no load, unload or reload of these in between; one order, no deadlock
                    held.enter_context(program._lock)
                users = [p for p in users if p.loaded]
                for program in users:  # every new program loads before any old one is touched
                    fresh[program] = program._replacement(LoadOptions())
            except BaseException:
                for program, loaded in fresh.items():
                    program._discard(loaded)
                for name, (before, old) in swapped.items():
                    self._registry.restore_data(name, before, old)
                for program in self._readers_of(changed):
                    if program not in users:  # loaded meanwhile, on the values given up: load it again
                        program.reload()
                raise
            failed: list[DynbpfError] = []
            for program in users:
                try:
                    program._switch(fresh[program])
                except DynbpfError as e:  # the program switched, but a link could not be re-made
                    failed.append(e)
            for _, old in swapped.values():
                if old is not None:
                    old.close()
            if failed:
                raise failed[0]
        return users

    def _readers_of(self, maps: Iterable[str]) -> list[Program]:
        """The loaded programs that read ``maps``, chosen as the constants generation moves on.

        A load under way now publishes its program after this (and loads
        again, seeing the new generation) or before (and is chosen here).
        """
        wanted = set(maps)
        with self._published:
            self._constants_generation += 1
            return [p for p in self.programs.values() if p.loaded and set(p.prepared.maps) & wanted]

    def prepare(self) -> dict[str, DynbpfError]:
        """Prepare every program now (libbpf's contract) rather than each on first use; return those that cannot be.

        Programs are otherwise prepared when first loaded, cloned or asked
        about, once; preparing ahead moves that work out of the first loads.
        """
        self._require_open()
        return dict(self.prepared.failed)

    def unload(self, programs: Iterable[str] | None = None) -> None:
        """Unload the named programs (default: all), detaching their links first."""
        if programs is None:
            chosen: Iterable[Program] = self.programs.values()
        else:
            chosen = [self._program(name) for name in _names(programs, "programs")]
        for program in chosen:
            program.unload()

    def pin(self, root: str | os.PathLike[str] | None = None) -> None:
        """Pin the running application under ``root`` so that it outlives this process; see docs/runtime.md.

        Every loaded program (``root/progs/<name>``), each of its links
        (``root/links/<name>/<n>``) and every map the collection created
        (``root/maps/<pin name>``) is pinned, with a manifest a later
        ``dynbpf.open(..., adopt=root)`` reads. Call it again after changes
        you want a crash to keep (``close(keep_pinned=True)`` does it at the
        end). From the first call on these pins are the collection's: what
        it detaches, unloads or frees loses its pin, and :meth:`close`
        removes them all. ``root`` defaults to the one given before (or to
        ``adopt=``); it must be a private bpffs directory, made with mode
        0700 if missing, and one where nothing else is pinned. Raises
        :class:`PinError` naming what could not be pinned (a link without a
        kernel link object, an earlier run's program still pinned under the
        same name) after pinning the rest.
        """
        from dynbpf._runtime.pins import RootPins, holds_pins

        with self._lock:
            self._require_open()
            pins = self._pins
            if pins is None:
                if root is None:
                    raise OptionError("pin(): give the bpffs directory to pin under (nothing was pinned yet)")
                where = os.path.normpath(os.fspath(root))
                pins = RootPins.make(
                    where, object_name=self.spec.name, digest=self.spec.digest.hex() or None, shared=self._shared_pins
                )
                if os.path.isdir(where) and holds_pins(where):
                    raise PinError(
                        f"pin(): {where} holds pins already; open with adopt={where!r} to take over what an earlier "
                        "run pinned there, or give another directory",
                        path=where,
                    )
                self._pins = pins
                self._registry.on_change = self._pins_map_changed
            elif root is not None and os.path.normpath(os.fspath(root)) != pins.root:
                raise StateError(f"collection {self.spec.name!r} is pinned under {pins.root}, not {os.fspath(root)}")
        pins.pin(self)

    def replace_pinned(self, programs: Iterable[str] | None = None) -> dict[str, DynbpfError]:
        """Swap fresh loads in for pinned programs an earlier run left that were not adopted; returns the failures.

        ``programs`` defaults to every such program the object has
        (:attr:`adoption` ``.refused`` says why each was not adopted: most
        often, the object changed it). Each is loaded (a verifier
        rejection leaves everything as it was) and takes over the old one's
        links make-before-break: updated in place where the kernel can
        (``BPF_LINK_UPDATE``: cgroup, xdp, tcx, netns, iterator links: no
        moment without a program, none with two), else attached anew to the
        recorded target and only then the old link unpinned (both run for a
        moment; no event is missed). The old program ends with its last link.
        """
        from dynbpf._runtime.adopt import replace_pinned

        return replace_pinned(
            self, self._require_pins("replace_pinned()"), _names(programs, "programs") if programs is not None else None
        )

    def discard_pinned(self, programs: Iterable[str] | None = None) -> tuple[str, ...]:
        """Remove the pins an earlier run left that were not adopted; returns the paths removed.

        ``programs`` names programs of :attr:`adoption` ``.refused`` (their
        program and link pins go: they stop, unless something else holds
        them); by default every such pin goes, maps and the pins reported
        ``ignored`` too.
        """
        from dynbpf._runtime.adopt import discard_pinned

        return discard_pinned(
            self, self._require_pins("discard_pinned()"), _names(programs, "programs") if programs is not None else None
        )

    def close(self, *, keep_pinned: bool = False) -> None:
        """Close its event readers, detach and unload every program, free every map and number; idempotent.

        The pins of :meth:`pin` (or adopted with ``adopt=``) are removed
        first, so everything stops. ``keep_pinned=True`` pins what runs now
        instead (:meth:`pin`) and only closes this process's fds: programs
        stay loaded and attached, maps keep their contents, for a later
        ``dynbpf.open(..., adopt=root)``. struct_ops stay registered only
        while this process runs (they are unregistered either way). Pins
        made otherwise (pinned maps, ``Link.pin``) stay.
        """
        kept: PinError | None = None
        if keep_pinned:
            with self._lock:
                if self._closed:
                    return
                keeping = self._require_pins("close(keep_pinned=True)")
            try:
                keeping.pin(self)
            except PinError as e:
                kept = e  # what could be pinned is; the rest ends with this process, and the caller hears of it
            keeping.keeping = True
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._idle:  # calls already under way (a clone's load) finish with the maps they were given
            self._idle.wait_for(lambda: self._in_flight == 0)
        errors: list[BaseException] = []  # one step failing does not keep the others from freeing what they hold

        def step(do: Callable[[], object]) -> None:
            try:
                do()
            except Exception as e:
                errors.append(e)

        for reader in list(self._readers):
            step(reader.close)
        for ops in list(getattr(self, "_struct_ops", {}).values()):
            step(ops._close)  # unregistered before their programs go
        pins = self._pins
        if pins is not None and not pins.keeping:
            step(pins.release)  # the pins go first: detaching or unloading then ends each thing for good
        for program in getattr(self, "programs", {}).values():
            step(program._let_go if keep_pinned else program.unload)
        step(self._registry.close)
        for target in self._attach_targets.values():
            step(target.fd.close)
        if self._prepared is not None:
            step(self._save_cache)
            step(self._prepared.close)
        if errors:
            raise errors[0]
        if kept is not None:
            raise kept

    def _save_cache(self) -> None:
        """Keep newly prepared programs in the prepared cache; a cache that cannot be written only warns."""
        assert self._prepared is not None
        try:
            self._prepared.save_cache()
        except (OSError, DynbpfError) as e:
            warnings.warn(f"dynbpf: prepared cache not saved: {e}", RuntimeWarning, stacklevel=3)

    def __repr__(self) -> str:
        loaded = sum(p.loaded for p in getattr(self, "programs", {}).values())
        return f"<Collection {self.spec.name!r}: {len(self.spec.programs)} programs, {loaded} loaded>"

    # --- for Program ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    # --- pins (dynbpf._runtime.pins, adopt) ---------------------------------------------

    def _adopt(self, found: Survey | None) -> None:
        """Take over what ``found`` pins (``adopt=``), then pin the result: the root says what this process runs.

        A failure lets go of what was taken (fds closed, pins and kernel
        objects as they were) and closes the collection.
        """
        if found is None:
            return
        from dynbpf._runtime.adopt import adopt

        try:
            adoption, pins = adopt(self, found, shared=self._shared_pins)
            if found.manifest is not None:
                pins.pin(self)  # what was adopted through a link gets its pin; the manifest is this run's
        except BaseException:
            for program in self.programs.values():
                program._let_go()
            self.close()
            raise
        self.adoption, self._pins = adoption, pins
        self._registry.on_change = self._pins_map_changed

    def _require_pins(self, what: str) -> RootPins:
        pins = self._pins
        if pins is None:
            raise StateError(
                f"{what}: collection {self.spec.name!r} is pinned nowhere; call pin(root) first, "
                "or open with adopt=root"
            )
        return pins

    def _pins_link_dropped(self, link: Link) -> None:
        pins = self._pins
        if pins is not None:
            pins.link_dropped(link)

    def _pins_link_replaced(self, old: Link, new: Link) -> None:
        pins = self._pins
        if pins is not None:
            pins.link_replaced(old, new)

    def _pins_program_dropped(self, name: str) -> None:
        pins = self._pins
        if pins is not None:
            pins.program_dropped(name)

    def _pins_program_replaced(self, name: str, fd: int) -> None:
        pins = self._pins
        if pins is not None:
            pins.program_replaced(name, fd)

    def _pins_map_changed(self, name: str) -> None:
        pins = self._pins
        if pins is not None:
            pins.map_changed(self, name)

    def _load_options(self, program: str, options: LoadOptions) -> LoadOptions:
        """``options`` for loading ``program``, naming its BPF-program target (attach_targets=) unless given."""
        target = self._attach_targets.get(program)
        if target is None or options.attach_prog_fd or options.attach_btf_obj_fd is not None:
            return options
        btf_id = target.btf_id if options.attach_btf_id is None else options.attach_btf_id
        return dataclasses.replace(options, attach_prog_fd=target.fd.raw, attach_btf_id=btf_id)

    def _attach_btf_id(self, program: str, prepared: int) -> int:
        target = self._attach_targets.get(program)
        return target.btf_id if target is not None else prepared

    def _require_open(self) -> None:
        if self._closed:
            raise StateError(f"collection {self.spec.name!r} is closed")

    def _usdt_spec_ids(self) -> SpecIds:
        """The ids in use in this collection's ``__bpf_usdt_specs``, which all its usdt programs share."""
        from dynbpf._attach.usdt import SpecIds

        with self._lock:
            if self._usdt_ids is None:
                self._usdt_ids = SpecIds()
            return self._usdt_ids

    @contextlib.contextmanager
    def _using_numbers(self) -> Iterator[None]:
        """Hold off close() while a call uses reserved map numbers (a number freed mid-call names another map)."""
        with self._lock:
            self._require_open()
            with self._idle:
                self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _prepared_result(self, name: str) -> PreparedProgram | DynbpfError:
        """Program ``name`` prepared (now, if not yet); after close, only what was prepared before."""
        prepared = self._prepared
        assert prepared is not None
        if self._closed and not prepared.table.done(name):
            raise StateError(f"collection {self.spec.name!r} is closed; program {name!r} was never prepared")
        return prepared.result(name)

    def _btf_fd(self) -> int:
        fd = self.prepared.btf_fd
        return fd.raw if fd is not None else 0

    def _program(self, name: str) -> Program:
        return self.programs[name]

    # --- struct_ops (for StructOps and Program) ----------------------------------------

    def _struct_ops_named(self, name: str) -> StructOps:
        with self._lock:
            ops = self._struct_ops.get(name)
            if ops is None:
                self._require_open()
                from dynbpf._runtime.struct_ops import StructOps

                ops = self._struct_ops[name] = StructOps(self, self.spec.maps[name])
            return ops

    def _struct_ops_of(self, program: str) -> list[StructOps]:
        """The struct_ops (made so far) whose members ``program`` implements."""
        with self._lock:
            made = list(self._struct_ops.values())
        return [ops for ops in made if program in ops._programs.values()]

    def _struct_ops_attached(self, program: str) -> bool:
        return any(ops.attached for ops in self._struct_ops_of(program))

    def _struct_ops_switched(self, program: str) -> None:
        """Member ``program`` was reloaded: what registers it registers the new one."""
        for ops in self._struct_ops_of(program):
            ops._refresh()

    def _struct_ops_unloading(self, program: str) -> None:
        """Member ``program`` is about to unload: what registers it unregisters first."""
        for ops in self._struct_ops_of(program):
            ops.detach()

    def _struct_ops_replaced(self, ops: StructOps) -> None:
        """``ops`` has a new kernel map: loaded programs tied to an earlier one are reloaded and tied anew.

        The kernel ties a program to one map for its life, so following the
        map takes a new program (a reload keeps links and maps). Which
        programs are tied elsewhere the kernel says: tying one to the map it
        is tied to already answers 0, to another EBUSY.
        """
        from dynbpf._sys import commands
        from dynbpf.errors import SyscallError

        with self._lock:
            tied = [p for p, name in self._associations.items() if name == ops.map_name]
        for name in tied:
            program = self.programs[name]
            with program._lock:
                with ops._lock:
                    map_fd = ops._current_map()
                    fd = program._fd
                    if map_fd is None or fd is None:
                        continue
                    try:
                        commands.prog_assoc_struct_ops(fd.raw, map_fd)
                        continue  # tied to this map already
                    except SyscallError as e:
                        if e.errno != errno.EBUSY:
                            raise
                with self._deferring_follow():  # (this loop is the following: the reload does not start another)
                    program.reload()  # tied to an earlier map: a new program, tied to this one as it loads

    def _follow_struct_ops(self) -> None:
        """Programs tied to an earlier map of a struct_ops follow to its map now (after a load, an association)."""
        with self._lock:
            made = list(self._struct_ops.values())
        for ops in made:
            ops._follow()

    def _following_deferred(self) -> bool:
        return bool(getattr(self._deferral, "depth", 0))

    @contextlib.contextmanager
    def _deferring_follow(self) -> Iterator[None]:
        """Within: programs tied to a struct_ops do not follow its fresh maps (a build phase reloads nothing else)."""
        self._deferral.depth = getattr(self._deferral, "depth", 0) + 1
        try:
            yield
        finally:
            self._deferral.depth -= 1

    def _associate(self, program: str, struct_ops: str, prog_fd: int) -> None:
        """BPF_PROG_ASSOC_STRUCT_OPS of a loaded program with struct_ops ``struct_ops``'s map (made if needed).

        A map made here leaves the programs tied to the old one to follow,
        which the caller's step does once done (:meth:`_follow_struct_ops`).
        """
        ops = self._struct_ops_named(struct_ops)
        map_fd = ops._map_fd()
        from dynbpf._sys import commands
        from dynbpf.errors import SyscallError

        try:
            commands.prog_assoc_struct_ops(prog_fd, map_fd)
        except SyscallError as e:
            hint = _ASSOC_HINTS.get(e.errno, e.hint)
            raise SyscallError(
                e.command, e.errno, hint, detail=f"program {program!r} with struct_ops map {struct_ops!r}"
            ) from None

    def _associated(self, program: str) -> str | None:
        with self._lock:
            return self._associations.get(program)

    def _remember_association(self, program: str, struct_ops: str) -> None:
        with self._lock:
            self._associations[program] = struct_ops

    def _program_by_fd(self, fd: int) -> Program | None:
        for program in self.programs.values():
            own = program._fd
            if own is not None and not own.closed and own.raw == fd:
                return program
        return None

    def _measured(self, prepared: PreparedProgram, seconds: float) -> None:
        with self._lock:
            self._measured_seconds += seconds
            self._measured_insns += prepared.insn_count

    def _cost(self, program: Program) -> float:
        """Expected verification time: the program's last, else its size at the rate measured so far.

        The size is the entry function's, read without decoding anything,
        so scheduling prepares nothing: each worker prepares what it loads.
        """
        if program.seconds:
            return program.seconds
        insns = self.spec.programs[program.name].function.slot_count
        with self._lock:
            rate = self._measured_seconds / self._measured_insns if self._measured_insns else 1e-6
        return insns * rate


_V = TypeVar("_V")

#: what BPF_PROG_ASSOC_STRUCT_OPS's refusals mean (kernel/bpf/syscall.c, bpf_struct_ops.c)
_ASSOC_HINTS = {
    errno.EBUSY: "the program is tied to another struct_ops map already; the kernel ties a program "
    "once for its life: to tie it elsewhere, unload() it, associate_struct_ops() the other map, load() it",
    errno.EINVAL: "the kernel ties only a program that is not a struct_ops program to a struct_ops map, with flags 0",
}


class _ByName(Mapping[str, _V], Generic[_V]):
    """A read-only mapping whose names that are identifiers are attributes too (``coll.maps.events``).

    Names that are not identifiers, start with ``_`` or are the mapping's
    own methods (``keys``, ``get``...) stay reachable by key only; an
    unknown one is an :class:`AttributeNotFound` (a ``NotFound`` and an
    ``AttributeError``) naming the close matches.
    """

    def __getattr__(self, name: str) -> _V:
        if name.startswith("_"):  # private and special names: never a lookup (copy, pickle probe them)
            raise AttributeError(name)
        try:
            return self[name]
        except NotFound as e:
            raise AttributeNotFound(e.owner, e.kind, name, e.known) from None

    def __dir__(self) -> list[str]:
        names = {n for n in self if n.isidentifier() and not n.startswith("_") and not hasattr(type(self), n)}
        return sorted(set(super().__dir__()) | names)


class _Named(_ByName[_V]):
    """Named items whose missing names raise :class:`NotFound` listing those it has."""

    def __init__(self, owner: str, kind: str, items: dict[str, _V]) -> None:
        self._owner, self._kind, self._items = owner, kind, items

    def __getitem__(self, name: str) -> _V:
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name is not there either
            raise NotFound(self._owner, self._kind, name, self._items) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<{self._kind}s of {self._owner}: {', '.join(self._items)}>"


class _MapViews(_ByName["Map"]):
    def __init__(self, coll: Collection) -> None:
        self._coll = coll

    def __getitem__(self, name: str) -> Map:
        coll = self._coll
        prepared = coll.prepared
        spec = prepared.maps.get(name)
        if spec is None:
            raise NotFound(f"object {coll.spec.name!r}", "map", name, prepared.maps)
        fd = coll._registry.view(name)
        with coll._lock:
            view = coll._map_views.get(name)
            if view is None or view.closed:  # never made, or made for a map since freed and re-created
                from dynbpf._maps.map import Map

                btf = prepared.btf if prepared.btf is not None else coll.spec.btf  # DATASECs sized by the fix-up
                view = coll._map_views[name] = Map.with_btf(fd, btf, spec.key_type, spec.value_type)
            return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._coll.prepared.maps)

    def __len__(self) -> int:
        return len(self._coll.prepared.maps)


def _association_target(spec: ObjectSpec, which: bool | str) -> str | None:
    """``associate_struct_ops=``: the struct_ops map every program that is not a struct_ops program is tied to."""
    if which is False:
        return None
    names = [n for n, m in spec.maps.items() if m.type == MapType.STRUCT_OPS]
    if which is True:
        if len(names) != 1:
            raise OptionError(
                f"associate_struct_ops=True: object {spec.name!r} has {len(names)} struct_ops maps "
                f"({', '.join(names) or 'none'}); name the one to associate with"
            )
        target = names[0]
    elif isinstance(which, str):
        if which not in names:
            raise NotFound(f"object {spec.name!r}", "struct_ops map", which, names, option="associate_struct_ops=")
        target = which
    else:
        raise TypeError(f"associate_struct_ops= takes True or a struct_ops map's name, not {which!r}")
    from dynbpf._probes import attach as attach_probes

    support = attach_probes.struct_ops_assoc()
    if not support:
        raise KernelUnsupported(f"{support.name} (associate_struct_ops={which!r})", support.how)
    return target


def _disabled(spec: ObjectSpec, disabled: Iterable[str]) -> frozenset[str]:
    off = frozenset(_names(disabled, "disabled"))
    unknown = sorted(off - set(spec.programs))
    if unknown:  # the first is named; the message lists the programs there are
        raise NotFound(f"object {spec.name!r}", "program", unknown[0], spec.programs, option="disabled=")
    return off


def _bound_maps(prepared: PreparedObject, absent: frozenset[str]) -> tuple[str, ...]:
    """Like libbpf, every loaded program holds the .rodata maps (BPF_PROG_BIND_MAP), used or not."""
    if not kernel_features.prog_bind_map():
        return ()
    return tuple(
        n
        for n, m in prepared.maps.items()
        if mapedit.is_global_data(m) and section_names.is_read_only_data(n) and n not in absent
    )


def _survey(adopt: str | os.PathLike[str] | None, spec: ObjectSpec, *, shared: bool) -> Survey | None:
    """What ``adopt=`` holds, read before any map is created (None: not asked)."""
    if adopt is None:
        return None
    from dynbpf._runtime.adopt import survey

    return survey(adopt, spec, shared=shared)


def _names(names: Iterable[str], what: str) -> list[str]:
    """Program names as a list; a lone string is refused rather than read as its letters."""
    if isinstance(names, str | bytes):
        raise TypeError(f"{what} takes a list of program names, not the string {names!r} (write [{names!r}])")
    out = list(names)
    bad = [n for n in out if not isinstance(n, str)]
    if bad:
        raise TypeError(f"{what} takes program names (str), not {bad[0]!r}")
    return out


def _constants(
    spec: ObjectSpec, constants: Mapping[str, Any], base: Callable[[str], bytes | None] | None = None
) -> dict[str, bytes]:
    """Initial bytes of read-only data sections with the caller's constants written in (over ``base``'s bytes)."""
    if not isinstance(constants, Mapping):
        raise TypeError(f"constants= takes a mapping of .rodata names to values, not {type(constants).__name__}")
    if not constants:
        return {}
    if spec.btf is None:
        raise OptionError(f"constants=: object {spec.name!r} has no BTF, so its constants cannot be set by name")
    readonly = {v.name: v for v in spec.variables.values() if section_names.is_read_only_data(v.section)}
    buffers: dict[str, bytearray] = {}
    for name, value in constants.items():
        var = readonly.get(name)
        if var is None:
            raise NotFound(f"object {spec.name!r}", "read-only global", name, sorted(readonly), option="constants=")
        section = spec.maps[var.section]
        if var.section not in buffers:
            start = base(var.section) if base is not None else section.data
            buffers[var.section] = bytearray(start or bytes(section.value_size))
        buf = buffers[var.section]
        from dynbpf._maps.variables import Variables

        Variables.of_buffer(buf, spec.btf, [var])[name] = value
    return {name: bytes(buf) for name, buf in buffers.items()}


def _cache_options(
    cache: bool | str | os.PathLike[str] | None,
    spec: ObjectSpec,
    absent: Iterable[str],
    *,
    vmlinux: Spec | None,
    config: Mapping[str, str] | None,
    kallsyms: Mapping[str, int] | None,
) -> dict[str, Any]:
    """prepare()'s cache arguments: the directory, and a key covering what instructions depend on."""
    if cache is None or cache is False:
        return {}
    from dynbpf._prepare import cache as prepare_cache  # pickle and tempfile only for those who cache

    if vmlinux is not None or not spec.digest:
        raise OptionError("cache=: a prepared cache needs the running kernel's BTF and an object read from its bytes")
    directory = prepare_cache.default_directory() if cache is True else Path(cache)
    parts = [
        spec.digest,
        repr([(name, p.kind) for name, p in spec.programs.items()] + list(spec.maps)).encode(),  # a spec edited
        prepare_cache.code_identity(),
        prepare_cache.kernel_identity(),
        "\0".join(sorted(absent)).encode(),
        repr(sorted((config or {}).items())).encode(),
        repr(sorted((kallsyms or {}).items())).encode(),
    ]
    return {"cache_dir": directory, "cache_key": prepare_cache.PreparedCache.key(parts)}


@dataclass(frozen=True, slots=True)
class KernelView:
    """What the running kernel would otherwise tell, given instead (tests; preparing for another kernel).

    ``vmlinux``: its BTF; ``config``: its kconfig values; ``kallsyms``:
    its symbol addresses; ``btf_support``: which BTF kinds it loads.
    """

    vmlinux: Spec | None = None
    config: Mapping[str, str] | None = None
    kallsyms: Mapping[str, int] | None = None
    btf_support: BtfSupport | None = None


Source = str | os.PathLike[str] | bytes | bytearray | memoryview
_P = ParamSpec("_P")


def _reading(make: Callable[Concatenate[ObjectSpec, _P], Collection]) -> Callable[Concatenate[Source, _P], Collection]:
    """``make`` taking a path or an object's bytes (read lazily) where it takes a spec; its options stay typed."""

    def from_source(source: Source, /, *args: _P.args, **options: _P.kwargs) -> Collection:
        return make(read(source, lazy=True), *args, **options)

    return from_source


open = _reading(Collection)
open.__name__ = open.__qualname__ = "open"
open.__doc__ = """Read a BPF object (a path, or its bytes) and prepare it for this kernel; programs load on demand.

The options are :class:`Collection`'s, keyword-only and typed; see its constructor.
"""
