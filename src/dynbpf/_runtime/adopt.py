"""Adopting what an earlier process pinned (``dynbpf.open(..., adopt=root)``), and what is left of it.

A restarted agent must not reload what runs: a reload costs a verification
and, where the kernel cannot swap a link's program in place, a moment with
two programs (or none) on the hook. Instead it takes the pinned kernel
objects as its own, after checking each is what it would load itself:

- **maps** (``maps/``): libbpf's check (type, key/value size, max_entries,
  flags), the shape of BTF key and value types, the values of read-only
  data. One that differs refuses the whole adoption: :class:`PinError`
  names each map and difference; nothing is adopted, nothing unpinned.
- **programs** (``progs/``): the kernel's tag of the pinned program must be
  the tag of the instructions this process prepared
  (``dynbpf._asm.tag``), and its type, name, BTF attach target and the
  maps it uses (by kernel id) those of this collection. One that differs
  (the object changed) is not adopted: it runs on, pinned, untouched, and
  :attr:`Adoption.refused` says why; ``coll.replace_pinned()`` swaps a fresh
  load in without a gap, ``coll.discard_pinned()`` ends it.
- **links** (``links/``): adopted with their program when they still run it.

A pin the manifest lists but which is gone is *stale*: reported, skipped.
A process that could not adopt a root (a map differed) and runs its own
application instead ends the earlier one with :func:`discard_root`.
A program whose own pin is gone while a link of it remains is found
through that link. Adopted objects are the collection's from then on, pins
included (``dynbpf._runtime.pins``, "Ownership").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dynbpf._elf.sections import Attacher
from dynbpf._elf.spec import ObjectSpec
from dynbpf._runtime.load import prog_name
from dynbpf._runtime.pins import (
    LINKS,
    MANIFEST,
    MAPS,
    PROGS,
    Manifest,
    ProgramRecord,
    RootPins,
    holds_pins,
    kernel_tag,
    open_pinned,
    read_manifest,
)
from dynbpf._sys import commands, fs
from dynbpf._sys.constants import ProgType, type_name
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, NotFound, PinError, StateError

if TYPE_CHECKING:
    from dynbpf._attach.link import Link
    from dynbpf._runtime.collection import Collection
    from dynbpf._runtime.program import Program


def _frozen(items: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class Adoption:
    """What ``dynbpf.open(..., adopt=root)`` found under ``root`` and took over (``coll.adoption``).

    - ``programs``: the programs adopted: loaded (the same kernel programs,
      same ids, not verified again), attached through ``links``;
    - ``links``: per adopted program, the descriptions of the links adopted;
    - ``maps``: the maps adopted, contents and all;
    - ``refused``: pinned programs not adopted, and why (the object changed
      them, the object lacks them...); they run on, pinned, untouched;
    - ``replaced``: programs ``coll.replace_pinned()`` loaded in place of
      refused ones since, their links moved onto them: an
      :class:`~dynbpf.Application` made afterwards runs them as it runs
      adopted ones;
    - ``stale``: pins the manifest lists that are gone (skipped);
    - ``ignored``: other pins under the root left alone, and why;
    - ``object``, ``digest``: the object that pinned the root, and its
      sha256 (None: nothing was pinned there);
    - ``application``: what an :class:`~dynbpf.Application` running it
      recorded (its features' states and chosen variants), if one did.
    """

    root: str
    object: str | None = None
    digest: str | None = None
    programs: tuple[str, ...] = ()
    links: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen)
    maps: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=_frozen)
    stale: tuple[str, ...] = ()
    ignored: Mapping[str, str] = field(default_factory=_frozen)
    application: Mapping[str, Any] | None = None
    replaced: tuple[str, ...] = ()


@dataclass(slots=True)
class Survey:
    """What a root holds, read before the collection's maps exist: the manifest and the pinned maps, open."""

    root: str
    manifest: Manifest | None
    maps: dict[str, tuple[str, Fd]]
    stale: list[str]

    def close(self) -> None:
        for _, fd in self.maps.values():
            fd.close()


def survey(root: str | os.PathLike[str], spec: ObjectSpec, *, shared: bool) -> Survey:
    """Read ``root``'s manifest and open the maps it pins that ``spec`` has; nothing there is a first start.

    A root holding pins but no manifest is refused: dynbpf did not pin it,
    so nothing there can be checked against what it claims to be.
    """
    path = os.path.normpath(os.fspath(root))
    fs.check_pin_root(path, shared=shared)
    if not os.path.lexists(path):
        return Survey(path, None, {}, [])
    fs.ensure_bpffs(path)
    manifest = read_manifest(path)
    if manifest is None:
        if holds_pins(path):
            raise PinError(
                f"cannot adopt {path}: it holds pins but no dynbpf manifest ({path}/{MANIFEST}), so it is not an "
                "application dynbpf pinned; give another root, or remove what is there",
                path=path,
            )
        return Survey(path, None, {}, [])
    found = Survey(path, manifest, {}, [])
    try:
        for name, record in manifest.maps.items():
            if name not in spec.maps:
                continue
            pin = fs.pin_path(path, MAPS, *record.pin.split("/"))
            if fs.pinned(pin):
                found.maps[name] = (pin, open_pinned(pin, "map"))
            else:
                found.stale.append(pin)
    except BaseException:
        found.close()
        raise
    return found


def adopt(coll: Collection, found: Survey, *, shared: bool) -> tuple[Adoption, RootPins]:
    """Take over ``found``'s programs and links that are what ``coll`` would load (its maps are adopted already).

    All or nothing on a failure that is not a refusal (a syscall error):
    what was adopted is let go (fds closed, kernel objects and pins left as
    they were) and the error raised.
    """
    manifest = found.manifest
    pins = RootPins.make(
        found.root,
        object_name=coll.spec.name,
        digest=coll.spec.digest.hex() or None,
        shared=shared,
        application_root=manifest is not None,
    )
    if manifest is None:
        return Adoption(found.root), pins
    stale = list(found.stale)
    adopted: dict[str, tuple[str, ...]] = {}
    refused: dict[str, str] = {}
    ignored: dict[str, str] = {}
    try:
        # the programs the last run ran, then what it left of earlier runs (a replace that could not move a link)
        for name, record in [*manifest.programs.items(), *manifest.earlier.items()]:
            if name in adopted:
                if not any(os.path.lexists(pins.path(LINKS, *link.pin.split("/"))) for link in record.links):
                    continue
                refused[name] = "an earlier version of it still runs on links pinned beside it"
            else:
                outcome = _adopt_program(coll, pins, name, record, stale=stale, ignored=ignored)
                if isinstance(outcome, tuple):
                    adopted[name] = outcome
                    continue
                if outcome is None:
                    continue
                refused[name] = outcome
            had = pins.foreign.get(name)
            pins.foreign[name] = record if had is None else dataclasses.replace(had, links=had.links + record.links)
    except BaseException:
        for name in adopted:
            coll.programs[name]._let_go()
        raise
    registry = coll._registry
    for name in registry.adopted:
        map_id = registry.kernel_id(name)
        pins.own_map(name, manifest.maps[name].pin, map_id if map_id is not None else manifest.maps[name].id)
    for name, pinned_map in manifest.maps.items():
        path = pins.path(MAPS, *pinned_map.pin.split("/"))
        if name not in registry.adopted and fs.pinned(path):
            pins.foreign_maps[name] = pinned_map
            why = "the object has no such map" if name not in coll.spec.maps else "the object's map is not created here"
            ignored[path] = f"map {name!r}: {why}"
    pins.application = manifest.application
    _unknown_pins(pins, manifest, ignored)
    report = Adoption(
        found.root,
        manifest.object,
        manifest.digest,
        tuple(adopted),
        _frozen(adopted),
        registry.adopted,
        _frozen(refused),
        tuple(stale),
        _frozen(ignored),
        manifest.application,
    )
    return report, pins


def _adopt_program(
    coll: Collection,
    pins: RootPins,
    name: str,
    record: ProgramRecord,
    *,
    stale: list[str],
    ignored: dict[str, str],
) -> tuple[str, ...] | str | None:
    """Adopt program ``name``: the descriptions of its links adopted, a refusal's reason, or None (all stale)."""
    path = pins.program_pin(name)
    has_pin = fs.pinned(path)
    if not has_pin:
        stale.append(path)
    links: list[tuple[str, str]] = []  # (pin below links/, its path), for those still there
    for entry in record.links:
        where = pins.path(LINKS, *entry.pin.split("/"))
        if os.path.lexists(where):
            links.append((entry.pin, where))
        else:
            stale.append(where)
    if not has_pin and not links:
        return None
    if name not in coll.programs:
        return "the object has no such program"
    program = coll.programs[name]
    refusal = _unadoptable(coll, program)
    if refusal is not None:
        return refusal
    try:
        fd = open_pinned(path, "prog") if has_pin else _program_of_link(links[0][1])
    except PinError as e:
        return str(e)  # a pin of something else where the program should be: not ours to touch
    try:
        why = _differs(coll, program, fd)
        if why is None:
            why = _install(coll, program, fd)
    except BaseException:
        fd.close()
        raise
    if why is not None:
        fd.close()
        return why
    prog_id = program.id
    if has_pin:
        pins.own_program(name, prog_id)
    from dynbpf._attach.link import Link, LinkGroup

    targets = {entry.pin: entry.target for entry in record.links}
    taken: list[str] = []
    for pin, where in links:
        link = Link.from_pin(where)
        members = link.links if isinstance(link, LinkGroup) else (link,)
        runs = {member.program_id for member in members}
        if runs != {prog_id}:
            link.detach()  # (our fd only: the pin holds it)
            ignored[where] = f"a link of {name!r} that runs program id {min(runs)}, not {name!r} (id {prog_id})"
            continue
        with program._lock:
            program._adopt(link)
            target = targets.get(pin)
            if target is not None:
                program._targets[id(link)] = dict(target)
        pins.own_link(link)
        taken.append(link.description)
    return tuple(taken)


def _unadoptable(coll: Collection, program: Program) -> str | None:
    """Why ``program`` cannot be adopted whatever is pinned (disabled, unpreparable, a kind not adopted)."""
    if program._disabled:
        return "it is disabled in this open (disabled=)"
    got = coll._prepared_result(program.name)
    if isinstance(got, DynbpfError):
        return f"this object cannot prepare it here: {str(got).splitlines()[0]}"
    if got.prog_type == ProgType.STRUCT_OPS:
        return "struct_ops programs run registered through their struct_ops map, which is not adopted"
    if got.kind.attacher is Attacher.USDT:
        return "usdt links hold spec ids in __bpf_usdt_specs that adoption does not recover"
    return None


def _program_of_link(path: str) -> Fd:
    """The program a pinned link runs (its own pin is gone): what the link holds alive."""
    from dynbpf._attach.link import Link

    with Link.from_pin(path) as link:  # leaving closes our fd of it; the pin stays
        return commands.fd_by_id(commands.ObjKind.PROG, link.program_id)


def _differs(coll: Collection, program: Program, fd: Fd) -> str | None:
    """Why the kernel program behind ``fd`` is not the one ``program`` would load, or None if it is."""
    prepared = program.prepared
    info = commands.prog_info(fd.raw)
    if info.type != prepared.prog_type:
        ours = type_name(ProgType, prepared.prog_type)
        return f"the pinned program is a {type_name(ProgType, info.type)} program, this object's a {ours} one"
    want = prog_name(program.name)
    if want and bytes(info.name) != want:
        return f"the pinned program is named {bytes(info.name).decode(errors='replace')!r}, not {want.decode()!r}"
    tag, mine = kernel_tag(fd.raw), program.expected_tag
    if tag != mine:
        return f"the pinned program has tag {tag}, this object's instructions tag {mine} (the program changed)"
    btf_id = coll._attach_btf_id(program.name, prepared.attach_btf_id)
    if btf_id and int(info.attach_btf_id) != btf_id:
        return f"the pinned program hooks BTF id {info.attach_btf_id}, this object's BTF id {btf_id}"
    return None


def _install(coll: Collection, program: Program, fd: Fd) -> str | None:
    """Make ``fd`` the loaded ``program`` if it uses exactly the collection's maps; why not, otherwise."""
    registry = coll._registry
    with program._lock:
        if program._fd is not None:
            return "the program is loaded already"
        registry.acquire(program.maps)  # the adopted maps are installed now (created, for those not pinned)
        try:
            want = {m: registry.kernel_id(m) for m in program.maps}
            ids = {m: i for m, i in want.items() if i is not None}
            used = set(commands.prog_map_ids(fd.raw))
            if used != set(ids.values()):
                registry.release(program.maps)
                return _other_maps(ids, used)
            fd.kind = "program"
            program._fd = fd
            program.log, program.seconds = "", 0.0
            registry.program_loaded(program.name, fd.raw)
        except BaseException:
            if program._fd is fd:
                program._fd = None
            registry.release(program.maps)
            raise
    return None


def _other_maps(ours: Mapping[str, int], used: set[int]) -> str:
    parts = []
    missing = [name for name, map_id in ours.items() if map_id not in used]
    if missing:
        parts.append(f"not this collection's {', '.join(missing)}")
    for map_id in sorted(used - set(ours.values())):
        try:
            with commands.fd_by_id(commands.ObjKind.MAP, map_id) as fd:
                label = bytes(commands.map_info(fd.raw).name).decode(errors="replace")
        except DynbpfError:
            label = "?"
        parts.append(f"map id {map_id} ({label}) that this collection does not have")
    return f"the pinned program uses other maps: {'; '.join(parts)}"


def _unknown_pins(pins: RootPins, manifest: Manifest, ignored: dict[str, str]) -> None:
    """Pins under the root that the manifest does not list: left alone, and reported."""
    known = {pins.path(MANIFEST)}
    known.update(pins.program_pin(name) for name in (*manifest.programs, *manifest.earlier))
    for record in (*manifest.programs.values(), *manifest.earlier.values()):
        known.update(pins.path(LINKS, *link.pin.split("/")) for link in record.links)
    known.update(pins.path(MAPS, *m.pin.split("/")) for m in manifest.maps.values())
    for directory, _, files in os.walk(pins.root):
        for file in files:
            path = os.path.join(directory, file)
            if path not in known and directory not in known and path not in ignored:
                ignored[path] = "not in the manifest"


# --- what is left of an earlier run (Collection.replace_pinned / discard_pinned) ------------------------------


def replace_pinned(coll: Collection, pins: RootPins, names: Iterable[str] | None) -> dict[str, DynbpfError]:
    """Load each named program (default: every program of the object an earlier run left pinned, not adopted)
    fresh and move the old one's links onto it, make before break; returns the failures.

    Each link is updated in place where the kernel can (``BPF_LINK_UPDATE``:
    no moment without a program, none with two); otherwise the new program
    is attached to the target the manifest recorded and only then the old
    link unpinned (both run for a moment, none is missed). A link that
    cannot be re-made stays as it was, the old program on it.
    """
    chosen = list(names) if names is not None else [n for n in pins.foreign if n in coll.programs]
    failures: dict[str, DynbpfError] = {}
    loaded: list[str] = []
    try:
        for name in chosen:
            program = coll.programs[name]  # NotFound for a name the object lacks
            record = pins.foreign.get(name)
            if record is None:
                raise StateError(f"program {name!r} has no pins of an earlier run under {pins.root} to replace")
            try:
                _replace(coll, pins, program, record)
            except DynbpfError as e:
                failures[name] = e
            if program.loaded:
                loaded.append(name)
    finally:
        adoption = coll.adoption
        if adoption is not None and loaded:
            taken = (*adoption.replaced, *(n for n in loaded if n not in adoption.replaced))
            coll.adoption = dataclasses.replace(adoption, replaced=taken)
    pins.pin(coll)
    return failures


def _replace(coll: Collection, pins: RootPins, program: Program, record: ProgramRecord) -> None:
    from dynbpf._attach.link import Link

    old: list[tuple[Mapping[str, Any] | None, str, Link]] = []
    try:
        for entry in record.links:
            where = pins.path(LINKS, *entry.pin.split("/"))
            if os.path.lexists(where):
                old.append((entry.target, entry.pin, Link.from_pin(where)))
        program.load()  # a verifier rejection leaves everything as it was
    except BaseException:
        for _, _, link in old:
            link.detach()  # (our fds only: the pins hold the links)
        raise
    kept = []
    failed: list[DynbpfError] = []
    with program._lock:
        for target, pin, link in old:
            try:
                link.update(program.fd)  # no gap, no overlap
            except DynbpfError:
                pass
            else:
                program._adopt(link)
                if target is not None:
                    program._targets[id(link)] = dict(target)
                pins.own_link(link)
                continue
            try:
                if target is None:
                    raise StateError(
                        f"link {link.description} of {program.name!r}: the kernel cannot swap its program and the "
                        "attach() keywords that made it were not recorded (not JSON), so it cannot be re-made"
                    )
                program._attach(dict(target))  # the new link first...
            except DynbpfError as e:
                failed.append(e)
                kept.append(pin)
                link.detach()  # (our fd only: the pin keeps the old program on the hook)
                continue
            link.detach()
            link.unpin()  # ...then the old one ends
    path = pins.program_pin(program.name)
    if not pins.owns_program(program.name) and fs.pinned(path):
        os.unlink(path)  # the old program lives on only through the links that could not move
    if kept:
        pins.foreign[program.name] = dataclasses.replace(
            record, links=tuple(entry for entry in record.links if entry.pin in kept)
        )
    else:
        pins.foreign.pop(program.name, None)
    if failed:
        raise failed[0]


def discard_pinned(coll: Collection, pins: RootPins, names: Iterable[str] | None) -> tuple[str, ...]:
    """Remove the pins an earlier run left that were not adopted (default: all, maps too); returns their paths.

    What they held ends: a program and link held by nothing else stop.
    """
    removed: list[str] = []
    chosen = list(names) if names is not None else list(pins.foreign)
    for name in chosen:
        record = pins.foreign.pop(name, None)
        if record is None:
            raise NotFound(f"the earlier run's pins under {pins.root}", "program", name, pins.foreign)
        removed.extend(_remove_links(pins, record))
        path = pins.program_pin(name)
        if not pins.owns_program(name) and fs.pinned(path):
            os.unlink(path)
            removed.append(path)
    if names is None:
        for kept_map in list(pins.foreign_maps.values()):
            removed.extend(_remove_tree(pins.path(MAPS, *kept_map.pin.split("/"))))
        pins.foreign_maps.clear()
        adoption = coll.adoption
        for path in adoption.ignored if adoption is not None else ():
            removed.extend(_remove_tree(path))
    pins.pin(coll)
    return tuple(removed)


def discard_root(root: str | os.PathLike[str], *, shared: bool = False) -> tuple[str, ...]:
    """Remove what an earlier run pinned under ``root`` and its manifest lists; returns the paths removed.

    For a process that could not adopt ``root`` (``adopt=`` refused a map)
    and runs its own application now, so the earlier one can end. Pins the
    manifest does not list stay (and ``pin()`` then refuses the root); a
    root holding pins but no manifest is refused, as ``adopt=`` refuses it.
    """
    path = os.path.normpath(os.fspath(root))
    fs.check_pin_root(path, shared=shared)
    if not os.path.lexists(path):
        return ()
    manifest = read_manifest(path)
    if manifest is None:
        if holds_pins(path):
            raise PinError(f"cannot discard {path}: it holds pins but no dynbpf manifest ({MANIFEST})", path=path)
        return ()
    pins = RootPins.make(path, object_name=manifest.object, digest=manifest.digest, shared=shared)
    removed: list[str] = []
    for name, record in [*manifest.programs.items(), *manifest.earlier.items()]:
        removed.extend(_remove_links(pins, record))
        removed.extend(_remove_tree(pins.program_pin(name)))
    for pinned_map in manifest.maps.values():
        removed.extend(_remove_tree(pins.path(MAPS, *pinned_map.pin.split("/"))))
    removed.extend(_remove_tree(pins.path(MANIFEST)))
    for sub in (LINKS, PROGS, MAPS):
        _rmdir_empty(pins.path(sub))
    _rmdir_empty(path)
    return tuple(removed)


def _remove_links(pins: RootPins, record: ProgramRecord) -> list[str]:
    """Unpin the links ``record`` lists (and their program's directory below ``links/`` once empty)."""
    removed: list[str] = []
    for entry in record.links:
        where = pins.path(LINKS, *entry.pin.split("/"))
        removed.extend(_remove_tree(where))
        _rmdir_empty(os.path.dirname(where))
    return removed


def _remove_tree(path: str) -> list[str]:
    """Unpin ``path`` (a pin, or a directory of them: a link group); the paths removed."""
    if not os.path.lexists(path):
        return []
    if os.path.isdir(path) and not os.path.islink(path):
        out: list[str] = []
        for entry in os.listdir(path):
            out.extend(_remove_tree(os.path.join(path, entry)))
        os.rmdir(path)
        return out
    os.unlink(path)
    return [path]


def _rmdir_empty(path: str) -> None:
    with contextlib.suppress(OSError):  # not empty (other links of the program), or gone
        os.rmdir(path)
