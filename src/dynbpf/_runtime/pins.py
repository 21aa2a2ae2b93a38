"""A running application pinned under one bpffs directory, so that it outlives its process.

``coll.pin(root)`` lays the collection out under ``root``::

    manifest              the manifest (below): a pinned one-entry BPF array holding JSON
    progs/<program>       every loaded program
    links/<program>/<n>   each of its links (a LinkGroup: a directory of its members)
    maps/<pin name>       every map the collection creates itself (libbpf's pin names)

bpffs holds BPF objects and directories only, so the manifest is a BPF
object too: a frozen array whose one value is the JSON text. It lives and
goes with the pins it describes, belongs to whoever may pin there, and no
program can write it (``BPF_F_RDONLY_PROG``) nor, once frozen, anyone else.
It says which object pinned the root and, per program, its id, tag and
links, each with the ``attach()`` keywords that made it (what a reload
re-attaches to); per map, its pin and id; and the state an
:class:`~dynbpf.Application` recorded. Nothing in it is trusted for
identity: adoption (``dynbpf._runtime.adopt``) checks every program's tag
and maps against the kernel; the manifest says where to look and how to
re-attach.

Ownership. The pins a collection made or adopted are its own while it
runs: when it detaches one of their links, unloads a program or frees an
on-demand map, the pin goes too (what the process drops stops running, as
without pins), and a reloaded program or re-created map is pinned again in
place. What it adds (a program loaded, a link attached) is pinned at the
next :meth:`RootPins.pin`. ``close()`` removes its pins;
``close(keep_pinned=True)`` pins what runs and leaves everything. Pins of an
earlier run that were not adopted are never touched unless asked
(``replace_pinned``, ``discard_pinned``).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dynbpf._sys import commands, fs
from dynbpf._sys.attrs import MapCreateAttr
from dynbpf._sys.constants import MapFlags, MapType, ProgType
from dynbpf._sys.fd import Fd, object_kind
from dynbpf.errors import AttachError, PinError, SyscallError

if TYPE_CHECKING:
    from dynbpf._attach.link import Link
    from dynbpf._runtime.collection import Collection

PROGS, LINKS, MAPS, MANIFEST = "progs", "links", "maps", "manifest"
FORMAT = 1
_MANIFEST_NAME = b"dynbpf_manifest"
_KEY0 = bytes(4)
#: what bpffs names may hold and a C identifier may not: a temporary pin never meets a program's or map's
_SWAP_SUFFIX = "-new"


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """One pinned link: its pin below ``links/``, kernel id, kind, and the ``attach()`` keywords that made it.

    ``target`` is None when those keywords were not JSON (an fd, a
    ``Program``): a later run can adopt the link but not re-make it.
    """

    pin: str
    id: int
    kind: str
    description: str
    target: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class ProgramRecord:
    id: int
    tag: str
    links: tuple[LinkRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class MapRecord:
    pin: str  # below maps/
    id: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a root holds (see the module docstring); read back by ``dynbpf.open(..., adopt=root)``."""

    object: str
    digest: str | None
    programs: Mapping[str, ProgramRecord] = field(default_factory=dict)
    maps: Mapping[str, MapRecord] = field(default_factory=dict)
    application: Mapping[str, Any] | None = None
    #: programs an earlier run pinned here that the writer did not adopt: they run on, left to the caller
    earlier: Mapping[str, ProgramRecord] = field(default_factory=dict)

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "dynbpf_pins": FORMAT,
            "object": self.object,
            "digest": self.digest,
            "programs": _programs_json(self.programs),
            "earlier": _programs_json(self.earlier),
            "maps": {name: {"pin": m.pin, "id": m.id} for name, m in self.maps.items()},
        }
        if self.application is not None:
            doc["application"] = self.application
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> Manifest:
        """The manifest in ``data``; anything else raises :class:`PinError` saying what is wrong at ``where``."""

        def bad(why: str) -> PinError:
            return PinError(f"{where} is not a manifest dynbpf can read: {why}", path=where)

        try:
            doc = json.loads(data.rstrip(b"\0"))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("dynbpf_pins") != FORMAT:
            found = doc.get("dynbpf_pins") if isinstance(doc, dict) else doc
            raise bad(f"not format {FORMAT} (dynbpf_pins is {found!r})")
        try:
            programs = _programs_of(doc["programs"])
            earlier = _programs_of(doc.get("earlier", {}))
            maps = {_str(name): MapRecord(_relative(m["pin"]), _int(m["id"])) for name, m in doc["maps"].items()}
            application = doc.get("application")
            if application is not None and not isinstance(application, dict):
                raise TypeError("application is not an object")
            return cls(_str(doc["object"]), doc.get("digest"), programs, maps, application, earlier)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise bad(f"{type(e).__name__}: {e}") from None


def _programs_json(programs: Mapping[str, ProgramRecord]) -> dict[str, Any]:
    return {
        name: {
            "id": p.id,
            "tag": p.tag,
            "links": [
                {"pin": k.pin, "id": k.id, "kind": k.kind, "description": k.description, "target": k.target}
                for k in p.links
            ],
        }
        for name, p in programs.items()
    }


def _programs_of(doc: Any) -> dict[str, ProgramRecord]:
    return {
        _str(name): ProgramRecord(
            _int(p["id"]),
            _str(p["tag"]),
            tuple(
                LinkRecord(
                    _relative(k["pin"]),
                    _int(k["id"]),
                    _str(k["kind"]),
                    _str(k["description"]),
                    _target(k["target"]),
                )
                for k in p["links"]
            ),
        )
        for name, p in doc.items()
    }


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _relative(pin: object) -> str:
    """A pin path below a root's subdirectory: names joined by '/', none escaping it."""
    parts = _str(pin).split("/")
    fs.pin_path("/", *parts)  # refuses '', '.', '..' and NULs
    return "/".join(parts)


def _target(value: object) -> Mapping[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"link target {value!r} is not an object")
    return value


def read_manifest(root: str) -> Manifest | None:
    """The manifest pinned under ``root``; None if there is none."""
    path = fs.pin_path(root, MANIFEST)
    if not fs.pinned(path):
        return None
    fs.check_pin_owner(path)
    with commands.obj_get(path) as fd:
        kind = object_kind(fd.raw)
        info = commands.map_info(fd.raw) if kind == "map" else None
        if info is None or info.type != MapType.ARRAY or info.key_size != 4 or info.max_entries != 1:
            raise PinError(f"{path} pins a BPF {kind} that is not a dynbpf manifest", path=path)
        value = ctypes.create_string_buffer(int(info.value_size))
        commands.map_lookup_elem(fd.raw, _KEY0, value)
        return Manifest.decode(value.raw, path)


def write_manifest(root: str, manifest: Manifest) -> None:
    """Pin ``manifest`` under ``root``, replacing the one there in a single rename (a reader sees one or the other)."""
    data = manifest.encode()
    attr = MapCreateAttr(
        map_type=MapType.ARRAY,
        key_size=4,
        value_size=len(data),
        max_entries=1,
        map_flags=MapFlags.RDONLY_PROG,
        map_name=_MANIFEST_NAME,
    )
    path = fs.pin_path(root, MANIFEST)
    with commands.map_create(attr) as fd:
        commands.map_update_elem(fd.raw, _KEY0, data)
        commands.map_freeze(fd.raw)
        _pin_over(fd.raw, path)


def bpffs_name(name: str) -> str:
    """``name`` as bpffs takes it: bpffs refuses a '.' in a name (a static's ``helper@a.c``); '_' stands in."""
    return name.replace(".", "_")


def _pin_over(fd: int, path: str) -> None:
    """Pin ``fd`` at ``path``, in place of whatever is pinned there, with no moment without a pin."""
    swap = path + _SWAP_SUFFIX
    _unlink(swap)  # left by a run that died between its pin and its rename
    commands.obj_pin(fd, swap)
    try:
        os.replace(swap, path)
    except OSError as e:
        _unlink(swap)
        raise SyscallError("rename", e.errno or errno.EIO, "cannot replace the pin", path) from None


def _unlink(path: str) -> bool:
    """Remove the pin at ``path``; whether there was one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise SyscallError("unlink", e.errno or errno.EIO, "cannot remove the pin", path) from None
    return True


def _rmdir_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise SyscallError("rmdir", e.errno or errno.EIO, "cannot remove the pin directory", path) from None


def holds_pins(root: str) -> bool:
    """Whether anything is pinned anywhere below ``root`` (directories alone do not count)."""
    return any(files for _, _, files in os.walk(root))


def kernel_tag(fd: int) -> str:
    return bytes(commands.prog_info(fd).tag).hex()


def json_target(target: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``target`` if a later process can re-attach with it: JSON, and no fd of this process; else None."""
    if target is None:
        return None
    from dynbpf._attach import FD_TARGETS

    given = {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in target.items()}
    if any(key in FD_TARGETS and not isinstance(value, str) for key, value in given.items()):
        return None
    try:
        text = json.dumps(given, sort_keys=True)
    except (TypeError, ValueError):
        return None
    value = json.loads(text)
    return value if value == given else None


class RootPins:
    """The pins of one collection under its root, and which of them it owns (see the module docstring).

    Thread-safe; every hook is a no-op once :attr:`keeping` is set
    (``close(keep_pinned=True)`` closes fds and must leave every pin).
    """

    def __init__(self, root: str, *, object_name: str, digest: str | None, created: bool) -> None:
        self.root = root
        self.object_name = object_name
        self.digest = digest
        self.keeping = False
        self._created = created
        # Lock order: a program's lock, then _lock (hooks run under the program's), then the map registry's.
        # _pinning serialises pin() and release(), which take programs' locks one at a time, never under _lock.
        self._lock = threading.RLock()
        self._pinning = threading.Lock()
        self._programs: dict[str, tuple[str, int]] = {}  # program -> (its pin, the id pinned there)
        self._links: set[Link] = set()  # links pinned here by this collection (each knows its path)
        self._maps: dict[str, tuple[str, int]] = {}  # map -> (its pin, the id pinned there)
        #: programs and maps an earlier run pinned here that were not adopted: left as they are, kept in the manifest
        self.foreign: dict[str, ProgramRecord] = {}
        self.foreign_maps: dict[str, MapRecord] = {}
        self.application: Mapping[str, Any] | None = None  # recorded for the next run if no Application says more

    @classmethod
    def make(
        cls, root: str, *, object_name: str, digest: str | None, shared: bool = False, application_root: bool = False
    ) -> RootPins:
        """Pins of a collection at ``root``, a private bpffs directory (made with mode 0700 at the first pin).

        The directory goes with the last pin when dynbpf made it, or when it
        is an ``application_root`` (an earlier run's, adopted).
        """
        fs.check_pin_root(root, shared=shared)
        created = application_root or not os.path.lexists(root)
        return cls(os.path.normpath(root), object_name=object_name, digest=digest, created=created)

    def path(self, *parts: str) -> str:
        return fs.pin_path(self.root, *parts)

    def program_pin(self, name: str) -> str:
        return self.path(PROGS, bpffs_name(name))

    # --- what adoption hands over --------------------------------------------------------

    def own_program(self, name: str, prog_id: int) -> None:
        with self._lock:
            self._programs[name] = (self.program_pin(name), prog_id)

    def own_link(self, link: Link) -> None:
        with self._lock:
            self._links.add(link)

    def own_map(self, name: str, pin: str, map_id: int) -> None:
        with self._lock:
            self._maps[name] = (self.path(MAPS, pin), map_id)

    def owns_program(self, name: str) -> bool:
        with self._lock:
            return name in self._programs

    def owned_links(self) -> Iterator[Link]:
        with self._lock:
            return iter(list(self._links))

    # --- pinning what runs ----------------------------------------------------------------

    def pin(self, coll: Collection) -> None:
        """Pin every loaded program, its links and every map the collection made; write the manifest.

        What is pinned already stays; a pin of something the collection
        dropped since goes. Raises :class:`PinError` naming what could not
        be pinned (a link attached without a kernel link object, a link the
        caller pinned elsewhere, an earlier run's program of the same name
        still pinned), after pinning the rest.
        """
        with self._pinning:
            fs.make_pin_dir(self.root, what=f"pin under {self.root}")
            fs.ensure_bpffs(self.root)
            for sub in (PROGS, LINKS, MAPS):
                fs.make_pin_dir(self.path(sub), what=f"pin under {self.root}")
            problems: list[str] = []
            programs = self._pin_programs(coll, problems)
            with self._lock:
                maps = self._pin_maps(coll)
                write_manifest(self.root, self._manifest(coll, programs, maps))
        if problems:
            raise PinError(f"pinned under {self.root}, except: {'; '.join(problems)}", path=self.root)

    def _pin_programs(self, coll: Collection, problems: list[str]) -> dict[str, ProgramRecord]:
        records: dict[str, ProgramRecord] = {}
        pinned_links: set[Link] = set()
        for name, program in coll.programs.items():
            with program._lock, self._lock:
                fd = program._fd
                if fd is None or coll.spec.programs[name].kind.prog_type == ProgType.STRUCT_OPS:
                    continue  # (a struct_ops program runs registered through its map, which is not kept)
                info = commands.prog_info(fd.raw)
                try:
                    self._pin_own(self._programs, name, fd.raw, self.program_pin(name), int(info.id))
                except PinError as e:
                    problems.append(f"program {name!r}: {e} (an earlier run's, not adopted: see coll.adoption)")
                    continue
                links: list[LinkRecord] = []
                for link in program.links:
                    record = self._pin_link(name, link, program._targets.get(id(link)), problems)
                    if record is not None:
                        links.append(record)
                        pinned_links.add(link)
                records[name] = ProgramRecord(int(info.id), bytes(info.tag).hex(), tuple(links))
        with self._lock:  # what the collection dropped without a hook saying so (a link detached by the kernel)
            for name in [n for n in self._programs if n not in records]:
                _unlink(self._programs.pop(name)[0])
            for link in self._links - pinned_links:
                self._links.discard(link)
                self._unpin_link(link)
        return records

    def _pin_link(
        self, program: str, link: Link, target: Mapping[str, Any] | None, problems: list[str]
    ) -> LinkRecord | None:
        links = self.path(LINKS)
        if link.closed:
            return None
        if link not in self._links:
            if link.pinned is not None:
                problems.append(f"link {link.description} of {program!r} is pinned at {link.pinned} by the caller")
                return None
            directory = self.path(LINKS, bpffs_name(program))
            n = 0
            while os.path.lexists(os.path.join(directory, str(n))):
                n += 1
            try:
                link.pin(os.path.join(directory, str(n)))
            except (AttachError, PinError, SyscallError) as e:
                problems.append(f"link {link.description} of {program!r}: {e}")
                return None
            self._links.add(link)
        assert link.pinned is not None
        pin = os.path.relpath(link.pinned, links)
        return LinkRecord(pin, link.facts().id, link.kind, link.description, json_target(target))

    def _pin_maps(self, coll: Collection) -> dict[str, MapRecord]:
        registry = coll._registry
        records: dict[str, MapRecord] = {}
        for name in coll.prepared.maps:
            if not registry.own_map(name):
                continue
            pin = bpffs_name(registry.pin_name(name))
            with registry.holding():  # the map stays what it is between its id and its pin
                map_id = registry.kernel_id(name)
                if map_id is not None:
                    self._pin_own(self._maps, name, registry.require(name), self.path(MAPS, pin), map_id)
                elif name in self._maps and registry.pending(name):
                    map_id = self._maps[name][1]  # an earlier run's map no program has needed yet: the state
                else:
                    if name in self._maps:
                        _unlink(self._maps.pop(name)[0])
                    continue
            records[name] = MapRecord(pin, map_id)
        return records

    def _pin_own(self, owned: dict[str, tuple[str, int]], name: str, fd: int, path: str, obj_id: int) -> None:
        """Pin ``fd`` (kernel id ``obj_id``) at ``path`` for ``name``, unless that is pinned there already.

        A pin at ``path`` the collection does not own is somebody else's:
        refused rather than replaced.
        """
        had = owned.get(name)
        if had is not None and had[1] == obj_id and fs.pinned(path):
            return
        if had is None and fs.pinned(path):
            raise PinError(f"{path} is pinned already, by something this collection does not own", path=path)
        if had is not None:
            _pin_over(fd, path)
        else:
            commands.obj_pin(fd, path)
        owned[name] = (path, obj_id)

    def _manifest(
        self, coll: Collection | None, programs: Mapping[str, ProgramRecord], maps: Mapping[str, MapRecord]
    ) -> Manifest:
        application = self.application
        recorder = coll._feature_state if coll is not None else None
        if recorder is not None:
            application = recorder()
        return Manifest(
            self.object_name,
            self.digest,
            programs,
            {**self.foreign_maps, **maps},
            application,
            dict(self.foreign),
        )

    # --- following the collection (hooks) ---------------------------------------------

    def link_dropped(self, link: Link) -> None:
        """A link of the collection was detached: if it is pinned here, the pin goes, so the link really ends."""
        if self.keeping:
            return
        with self._lock:
            if link not in self._links:
                return
            self._links.discard(link)
        self._unpin_link(link)

    def link_replaced(self, old: Link, new: Link) -> None:
        """A reload re-made link ``old`` as ``new`` (the kernel could not swap its program): ``old``'s pin holds
        ``new`` from now on."""
        if self.keeping:
            return
        with self._lock:
            if old not in self._links:
                return
            self._links.discard(old)
            path = old.pinned
            old.unpin()  # (the caller detaches it: it ends)
            if path is not None:
                new.pin(path)
                self._links.add(new)

    def _unpin_link(self, link: Link) -> None:
        path = link.pinned
        link.unpin()
        if path is not None:
            _rmdir_empty(os.path.dirname(path))  # links/<program>, once its last link is gone

    def program_dropped(self, name: str) -> None:
        if self.keeping:
            return
        with self._lock:
            had = self._programs.pop(name, None)
        if had is not None:
            _unlink(had[0])

    def program_replaced(self, name: str, fd: int) -> None:
        """Program ``name`` was reloaded: its pin holds the new program from now on (the old one is freed)."""
        if self.keeping:
            return
        with self._lock:
            had = self._programs.get(name)
            if had is not None:
                _pin_over(fd, had[0])
                self._programs[name] = (had[0], int(commands.prog_info(fd).id))

    def map_changed(self, coll: Collection, name: str) -> None:
        """Map ``name`` was freed (on demand) or replaced (new constants): its pin follows."""
        if self.keeping:
            return
        registry = coll._registry
        with self._lock:
            had = self._maps.get(name)
            if had is None:
                return
            map_id = registry.kernel_id(name)
            if map_id is None:
                del self._maps[name]
                _unlink(had[0])
            else:
                _pin_over(registry.require(name), had[0])
                self._maps[name] = (had[0], map_id)

    # --- the end ------------------------------------------------------------------------

    def release(self) -> None:
        """Remove every pin this collection owns (``close()``); an earlier run's pins not adopted stay, with
        a manifest listing only them."""
        with self._pinning, self._lock:
            for link in list(self._links):
                self._unpin_link(link)
            self._links.clear()
            for path, _ in [*self._programs.values(), *self._maps.values()]:
                _unlink(path)
            self._programs.clear()
            self._maps.clear()
            if self.foreign or self.foreign_maps:
                write_manifest(self.root, self._manifest(None, {}, {}))
            else:
                _unlink(self.path(MANIFEST))
            links = self.path(LINKS)
            if os.path.isdir(links):
                for entry in os.listdir(links):
                    _rmdir_empty(os.path.join(links, entry))
            for sub in (LINKS, PROGS, MAPS):
                _rmdir_empty(self.path(sub))
            if self._created:
                _rmdir_empty(self.root)


def open_pinned(path: str, kind: str) -> Fd:
    """The fd of the BPF ``kind`` (``prog``, ``map``) pinned at ``path``; a pin of another kind or owner raises."""
    fs.check_pin_owner(path)
    fd = commands.obj_get(path)
    found = object_kind(fd.raw)
    if found != kind:
        fd.close()
        raise PinError(f"{path} pins a BPF {found}, not a {kind}", path=path)
    return fd


__all__ = [
    "FORMAT",
    "LINKS",
    "MANIFEST",
    "MAPS",
    "PROGS",
    "LinkRecord",
    "Manifest",
    "MapRecord",
    "ProgramRecord",
    "RootPins",
    "holds_pins",
    "json_target",
    "kernel_tag",
    "open_pinned",
    "read_manifest",
    "write_manifest",
]
