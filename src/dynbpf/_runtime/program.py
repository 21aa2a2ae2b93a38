"""One program of a collection and its lifecycle: load, attach, detach, unload, reload, clone.

A program holds only what its load produced (the fd, the log, its links);
the bytes it loads come from the ``PreparedProgram``, which never changes,
so a reload loads exactly what the first load did. Each program has its own
lock: operations on one program are serialised, operations on different
programs run in parallel (the verifier runs outside every shared lock).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from dynbpf._prepare.prepared import PreparedProgram
from dynbpf._runtime.load import Loaded, LoadOptions, load_program
from dynbpf._runtime.state import ProgramState
from dynbpf._sys import commands
from dynbpf._sys.constants import AttachType
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, KernelUnsupported, StateError

if TYPE_CHECKING:
    from dynbpf._attach import Link
    from dynbpf._attach.usdt import UsdtContext
    from dynbpf._runtime.collection import Collection
    from dynbpf._runtime.struct_ops import StructOps

_CLONE_OPTIONS = (*(f.name for f in dataclasses.fields(LoadOptions)), "log_buffer")


class Program:
    """A program of a :class:`~dynbpf._runtime.collection.Collection`; see :attr:`state`."""

    def __init__(self, collection: Collection, name: str, *, disabled: bool = False) -> None:
        self._collection = collection
        self.name = name
        self._disabled = disabled
        self._fd: Fd | None = None
        self._links: list[Link] = []
        self._targets: dict[int, dict[str, Any]] = {}  # id(link) -> the attach() keywords that made it
        self._lock = threading.RLock()
        self._links_lock = threading.Lock()
        self.log = ""
        self.seconds = 0.0  # how long the kernel took to verify the last successful load

    def __repr__(self) -> str:
        try:
            state = self.state.value
        except StateError:  # its collection closed before it was ever prepared
            state = "closed"
        return f"<Program {self.name!r} {state}>"

    # --- what it is -------------------------------------------------------------------

    @property
    def state(self) -> ProgramState:
        """Where the program is in its lifecycle (asking prepares it, if that was not done yet)."""
        if self._disabled or isinstance(self._collection._prepared_result(self.name), DynbpfError):
            return ProgramState.DISABLED
        if self._fd is None:
            return ProgramState.PREPARED
        attached = self._links or self._collection._struct_ops_attached(self.name)
        return ProgramState.ATTACHED if attached else ProgramState.LOADED

    @property
    def prepared(self) -> PreparedProgram:
        """The final load request (made on first use); raises why, for a program that cannot be prepared."""
        got = self._collection._prepared_result(self.name)
        if isinstance(got, DynbpfError):
            raise got
        return got

    @property
    def maps(self) -> tuple[str, ...]:
        """The maps this program needs while loaded: those it uses (directly, through subprograms and
        externs) and, as libbpf binds them to every program, the object's ``.rodata`` maps."""
        used = self.prepared.maps
        return used + tuple(m for m in self._collection._bound if m not in used)

    @property
    def loaded(self) -> bool:
        return self._fd is not None

    @property
    def fd(self) -> int:
        fd = self._fd
        if fd is None:
            raise StateError(f"program {self.name!r} is {self.state.value}, not loaded; call load() first")
        return fd.raw

    @property
    def tag(self) -> str:
        """The kernel's tag: a hash of the loaded instructions with map fds left out."""
        return bytes(commands.prog_info(self.fd).tag).hex()

    @property
    def expected_tag(self) -> str:
        """The tag the kernel gives this program's prepared instructions, computed here without loading them.

        What :attr:`tag` reads back once it is loaded; adoption
        (``dynbpf.open(..., adopt=root)``) compares it with a pinned program's
        to know whether that program is the one this process would load.
        """
        from dynbpf._asm.tag import prog_tag
        from dynbpf._probes import kernel

        return prog_tag(self.prepared.code, "sha256" if kernel.sha256_tags() else "sha1")

    @property
    def id(self) -> int:
        return int(commands.prog_info(self.fd).id)

    @property
    def links(self) -> tuple[Link, ...]:
        with self._links_lock:
            return tuple(self._links)

    # --- lifecycle --------------------------------------------------------------------

    def load(self, *, log_level: int = 0, log_size: int = 0) -> bool:
        """Load into the kernel (creating on-demand maps it needs); a no-op if already loaded.

        Returns whether this call loaded it. A verifier failure raises
        ``VerifierError`` with this program's own log. ``log_level`` > 0
        keeps the log of a successful load in :attr:`log`.
        """
        with self._lock:
            self._loadable()
            if self._fd is not None:
                return False
            self._load(LoadOptions(log_level=log_level, log_size=log_size))
        self._collection._follow_struct_ops()  # the load may have made a struct_ops' map: others tied follow
        return True

    def unload(self) -> None:
        """Detach every link, release the program and the maps it held; a no-op if not loaded.

        The kernel frees the program when nothing else (a pinned link, a
        clone, a prog array of another object) holds it.
        """
        with self._lock:
            self._unload()

    def reload(self, *, log_level: int = 0, log_size: int = 0) -> None:
        """A fresh kernel program from the same instructions, swapped in without losing what the old one had.

        The new program is loaded before the old one goes (make before
        break): the maps stay held throughout, so an on-demand map only this
        program uses keeps its contents; its prog-array slots move to the new
        program; and each link moves too, updated in place where the kernel
        can (``BPF_LINK_UPDATE``: xdp, tcx, cgroup, iterator, netns links),
        else attached anew to the same target and only then detached
        (tracepoints, raw tracepoints, uprobes, fentry...: for a moment both
        programs run). A link that cannot be re-made is detached and its
        error raised once the swap is done. Not loaded: just loads.
        """
        with self._lock:
            self._reload(LoadOptions(log_level=log_level, log_size=log_size))
        self._collection._follow_struct_ops()  # the load may have made a struct_ops' map: others tied follow

    def _reload(self, options: LoadOptions) -> None:
        self._loadable()
        if self._fd is None:
            self._load(options)
            return
        coll = self._collection
        while True:
            generation = coll._constants_generation
            loaded = self._replacement(options)
            with coll._published:
                if coll._constants_generation == generation:
                    self._switch(loaded)
                    return
            self._discard(loaded)  # as in _load: loaded on .rodata that set_constants has replaced since

    def _switch(self, loaded: Loaded) -> None:
        """Put ``loaded`` (from :meth:`_replacement`) in the loaded program's place, its links and slots with it.

        Callers hold ``self._lock``.
        """
        old = self._fd
        assert old is not None
        moving = [(link, self._targets.get(id(link), {})) for link in self.links]
        try:
            self._install(loaded)  # _fd stays the old program until the new one is in (a registration reads it)
        except BaseException:  # the old program, its links and slots are untouched
            self._collection._registry.program_loaded(self.name, old.raw)
            raise
        failed: list[DynbpfError] = []
        for link, target in moving:
            failure = self._move(link, target)
            if failure is not None:
                failed.append(failure)
        try:
            self._collection._struct_ops_switched(self.name)  # what registers it now registers the new program
        except DynbpfError as e:
            failed.append(e)
        try:
            self._collection._pins_program_replaced(self.name, loaded.fd.raw)
        except DynbpfError as e:
            failed.append(e)
        old.close()
        self._collection._registry.release(self.maps)  # the old program's hold
        if failed:
            raise failed[0]

    def _move(self, link: Link, target: dict[str, Any]) -> DynbpfError | None:
        """Put ``link``'s hook on the new program; the error, if it could not be re-made (the link is then gone)."""
        assert self._fd is not None
        try:
            link.update(self._fd.raw)
            return None
        except DynbpfError:
            pass  # this kind of link cannot be updated: make a new one, then break the old
        try:
            new = self._attach(target)
        except BaseException as e:
            link.detach()
            if isinstance(e, DynbpfError):
                return e
            raise
        try:
            self._collection._pins_link_replaced(link, new)  # a pin of the old link holds the new one
        finally:
            link.detach()
        return None

    def attach(self, **target: Any) -> Link:
        """Attach to the hook the section names (``target`` completes or overrides it); see docs/attach.md.

        The program must be loaded. It stays ATTACHED while any of its links
        is live; :meth:`detach` or :meth:`unload` ends them.
        """
        with self._lock:
            self._collection._require_open()  # after close, "load() it" would be the wrong advice
            if self._fd is None:
                raise StateError(
                    f"program {self.name!r} is {self.state.value}: only a loaded program can be attached; load() it"
                )
            return self._attach(target)

    def _attach(self, target: dict[str, Any]) -> Link:
        from dynbpf._attach import attach

        assert self._fd is not None
        prepared = self.prepared
        btf_id = self._collection._attach_btf_id(self.name, prepared.attach_btf_id)
        link = attach(
            prepared.kind,
            self._fd.raw,
            self.name,
            attach_btf_id=btf_id,
            usdt_context=self._usdt_context(prepared),
            **target,
        )
        self._targets[id(link)] = dict(target)  # what reload() re-attaches it to
        self._adopt(link)
        return link

    def _usdt_context(self, prepared: PreparedProgram) -> UsdtContext | None:
        """For a usdt program: the spec map its ``usdt.bpf.h`` code reads (held while it is loaded), and its ids."""
        from dynbpf._attach.usdt import SPECS_MAP, UsdtContext
        from dynbpf._elf.sections import Attacher

        if prepared.kind.attacher is not Attacher.USDT:
            return None
        coll = self._collection
        return UsdtContext(
            specs_fd=coll._registry.require(SPECS_MAP) if SPECS_MAP in prepared.maps else None,
            ids=coll._usdt_spec_ids(),
            multi=prepared.expected_attach_type == AttachType.TRACE_UPROBE_MULTI,
        )

    def pin(self, path: str) -> None:
        """Pin the kernel program loaded now at ``path`` on bpffs, so it outlives this process (BPF_OBJ_PIN).

        The pin holds that kernel program, not this object: an unload
        leaves the pinned program in the kernel, a reload loads a new one
        beside it. Missing directories are created (mode 0700, on bpffs
        only); removing the file drops the pin's hold. The pin is the
        caller's: dynbpf neither tracks nor removes it (``coll.pin(root)``
        pins a whole application and keeps its pins current).
        """
        from dynbpf._sys import fs

        with self._lock:
            self._collection._require_open()
            if self._fd is None:
                raise StateError(
                    f"program {self.name!r} is {self.state.value}: only a loaded program can be pinned; load() it"
                )
            fs.make_pin_dirs(path)
            commands.obj_pin(self._fd.raw, path)

    def detach(self) -> None:
        """Detach every link of this program (pinned links stay in bpffs); it stays loaded.

        A struct_ops program's struct_ops is unregistered.
        """
        with self._lock:
            for link in self.links:
                link.detach()
            self._collection._struct_ops_unloading(self.name)

    def associate_struct_ops(self, struct_ops: StructOps | str) -> None:
        """Tie this program to a struct_ops map of the collection (BPF_PROG_ASSOC_STRUCT_OPS, kernel 7.0).

        For a program that is not a struct_ops program: kfuncs of the
        struct_ops' subsystem then find the struct_ops it serves (sched_ext's
        timers and tracers). Done now if the program is loaded, and again at
        every later load (a reload, a feature's variant switch) before it is
        attached: the runtime remembers it. The struct_ops map is created now
        if it does not exist yet. A kernel without the command raises
        :class:`KernelUnsupported` with the probe's evidence; one that
        refuses raises :class:`SyscallError` naming program and map (EBUSY:
        tied to another map already; EINVAL: a struct_ops program).
        """
        from dynbpf._probes import attach as attach_probes
        from dynbpf._runtime.struct_ops import StructOps

        coll = self._collection
        if isinstance(struct_ops, StructOps):
            if struct_ops._collection is not coll:
                raise ValueError(f"struct_ops {struct_ops.map_name!r} belongs to another collection than {self.name!r}")
            name = struct_ops.map_name
        elif isinstance(struct_ops, str):
            name = coll.struct_ops[struct_ops].map_name  # NotFound for a name the object lacks
        else:
            raise TypeError(f"associate_struct_ops() takes a StructOps or its name, not {struct_ops!r}")
        support = attach_probes.struct_ops_assoc()
        if not support:
            raise KernelUnsupported(f"{support.name} (program {self.name!r} with struct_ops map {name!r})", support.how)
        with self._lock:
            self._loadable()
            if self._fd is not None:
                coll._associate(self.name, name, self._fd.raw)
            coll._remember_association(self.name, name)
        coll._follow_struct_ops()  # the struct_ops' map may be new: programs tied to its old one follow

    @property
    def associated_struct_ops(self) -> str | None:
        """The struct_ops map this program is tied to at each load (:meth:`associate_struct_ops`), if any."""
        return self._collection._associated(self.name)

    def clone(self, **overrides: Any) -> Fd:
        """Load the prepared program again, as a separate kernel program the caller owns.

        Like libbpf's ``bpf_program__clone``: ``overrides`` are load options
        (``expected_attach_type``, ``attach_btf_id``, ``attach_btf_obj_fd``,
        ``attach_prog_fd``, ``prog_flags``, ``ifindex``, ``log_level``,
        ``log_size``) and ``log_buffer``, a ``bytearray`` that receives the
        verifier's log (NUL-terminated, truncated to its size). This
        program's own state does not change. The clone counts as a user of
        the program's maps until its fd is closed.
        """
        unknown = sorted(set(overrides) - set(_CLONE_OPTIONS))
        if unknown:
            raise TypeError(f"clone() got unknown options {', '.join(unknown)} (allowed: {', '.join(_CLONE_OPTIONS)})")
        buffer = overrides.pop("log_buffer", None)
        if buffer is not None:
            if not isinstance(buffer, bytearray):
                raise TypeError(f"clone(log_buffer=...) takes a bytearray, not {type(buffer).__name__}")
            overrides.setdefault("log_level", 1)
            overrides.setdefault("log_size", len(buffer))
        self._loadable()
        prepared = self.prepared
        registry = self._collection._registry
        with self._collection._using_numbers():  # close() waits for this load rather than freeing its maps under it
            registry.acquire(prepared.maps)
            try:
                options = self._collection._load_options(self.name, LoadOptions(**overrides))
                loaded = load_program(prepared, btf_fd=self._collection._btf_fd(), options=options)
            except BaseException:
                registry.release(prepared.maps)
                raise
        if buffer is not None:
            text = loaded.log.encode()[: max(0, len(buffer) - 1)] + b"\0"
            buffer[: len(text)] = text
        return ClonedProgram(loaded.fd.release(), lambda: registry.release(prepared.maps))

    # --- internals (callers hold self._lock) ------------------------------------------

    def _loadable(self) -> None:
        self.prepared  # noqa: B018 - raises why the program cannot be prepared
        if self._disabled:
            raise StateError(
                f"program {self.name!r} is disabled (dynbpf.open(..., disabled=...)): it can never be loaded, "
                "cloned or attached; open the object again without disabling it"
            )
        self._collection._require_open()

    def _load(self, options: LoadOptions) -> None:
        coll = self._collection
        while True:
            generation = coll._constants_generation
            loaded = self._replacement(options)
            with coll._published:  # set_constants chooses what to reload under this lock
                if coll._constants_generation == generation:
                    self._install(loaded)
                    return
            self._discard(loaded)  # .rodata changed under this load, after set_constants chose what to reload: again

    def _replacement(self, options: LoadOptions) -> Loaded:
        """A new kernel program from the prepared instructions, holding its maps, not yet this program's.

        Loading it changes nothing of what runs: :meth:`_install` or
        :meth:`_switch` then makes it this program, or :meth:`_discard` drops it.
        """
        prepared = self.prepared
        coll = self._collection
        needs = self.maps
        coll._registry.acquire(needs)
        try:
            options = coll._load_options(self.name, options)
            loaded: Loaded = load_program(prepared, btf_fd=coll._btf_fd(), options=options)
        except BaseException:
            coll._registry.release(needs)
            raise
        try:
            for bound in coll._bound:
                commands.prog_bind_map(loaded.fd.raw, coll._registry.require(bound))
            tied = coll._associated(self.name)
            if tied is not None:  # before anyone can attach it, as the first load was
                coll._associate(self.name, tied, loaded.fd.raw)
        except BaseException:
            self._discard(loaded)
            raise
        return loaded

    def _discard(self, loaded: Loaded) -> None:
        """Drop a :meth:`_replacement` that did not take this program's place."""
        loaded.fd.close()
        self._collection._registry.release(self.maps)

    def _install(self, loaded: Loaded) -> None:
        coll = self._collection
        try:
            coll._registry.program_loaded(self.name, loaded.fd.raw)
        except BaseException:
            self._discard(loaded)
            raise
        self._fd = loaded.fd
        self.log, self.seconds = loaded.log, loaded.seconds
        coll._measured(self.prepared, loaded.seconds)

    def _unload(self) -> None:
        if self._fd is None:
            return
        self._collection._struct_ops_unloading(self.name)
        for link in self.links:
            link.detach()
        fd, self._fd = self._fd, None
        registry = self._collection._registry
        try:
            registry.program_unloaded(self.name)
        finally:
            fd.close()
            registry.release(self.maps)
            self._collection._pins_program_dropped(self.name)

    def _let_go(self) -> None:
        """Close this process's fds of the program and its links, leaving the kernel objects to their pins.

        Nothing else is touched: prog-array slots keep the program, maps keep
        what they hold. For ``close(keep_pinned=True)`` and an adoption that
        failed half-way; a link that is not pinned ends with its fd.
        """
        with self._lock:
            for link in self.links:
                link.detach()
            fd, self._fd = self._fd, None
            if fd is not None:
                fd.close()
                self._collection._registry.release(self.maps)

    def _adopt(self, link: Link) -> None:
        with self._links_lock:
            self._links.append(link)
        link.add_listener(self._link_event)

    def _link_event(self, link: Link, event: str, new_prog_fd: int | None) -> None:
        """A link of this program was detached, or updated to run another program."""
        with self._links_lock:
            if link in self._links:
                self._links.remove(link)
        target = self._targets.pop(id(link), None)
        if event == "detach":
            self._collection._pins_link_dropped(link)  # a pin of it would keep it attached
        if event == "update" and new_prog_fd is not None:
            link.remove_listener(self._link_event)  # no longer ours (the new owner, maybe this program, adopts it)
            owner = self._collection._program_by_fd(new_prog_fd)
            if owner is not None:
                owner._adopt(link)
                if target is not None:
                    owner._targets[id(link)] = target


class ClonedProgram(Fd):
    """The fd of a clone; closing it also releases the maps the clone held on demand."""

    __slots__ = ("_on_close",)

    def __init__(self, raw: int, on_close: Any) -> None:
        super().__init__(raw, "program clone")
        self._on_close = on_close

    def close(self) -> None:
        was_open = not self.closed
        super().close()
        if was_open:
            self._release_maps()

    def release(self) -> int:
        raw = super().release()
        self._release_maps()  # the caller now owns the fd; the maps it needs live as long as it does
        return raw

    def _release_maps(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __del__(self) -> None:
        super().__del__()
        self._release_maps()
