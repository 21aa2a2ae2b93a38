"""One configured application running: its collection, its features, and what the API asks of it.

A :class:`RunningApp` owns a :class:`~dynbpf.Collection` and the
:class:`~dynbpf.Application` that switches its features; every change goes
through the features layer (atomic applies, make-before-break constants).
Its methods block (loads verify in the kernel): the service calls them off
the event loop, one change at a time.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynbpf import _section_names as section_names
from dynbpf._agent import takeover as takeovers
from dynbpf._agent.plan import Checked
from dynbpf._agent.takeover import Takeover
from dynbpf._features.application import Application, FeatureState
from dynbpf._runtime.collection import Collection
from dynbpf._sys import commands, fs
from dynbpf._sys.constants import MapType, type_name
from dynbpf._tools.plain import plain
from dynbpf.errors import DynbpfError, NotFound, PinError

log = logging.getLogger("dynbpf.agent")

#: entries a map read returns at most, whatever the client asks
READ_LIMIT = 10_000


class OutsideRootError(PinError):
    """A path the API was given lies outside the application's pin root (or it has none)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What :meth:`RunningApp.restore` puts back when a reload fails after this application changed."""

    checked: Checked
    features: Mapping[str, FeatureState]
    constants: Mapping[str, Any]


class RunningApp:
    """A configured application, opened and applied (see the module docstring)."""

    def __init__(
        self, checked: Checked, collection: Collection, application: Application, takeover: Takeover | None = None
    ) -> None:
        self.checked = checked
        self.collection = collection
        self.application = application
        self.takeover = takeover  # what its start found under the kept root (an earlier agent's pins), if it looked
        self.root = takeovers.root_of(checked.config)  # its kept root (pin_root/kept/<app>), None without pin_root
        self.holds_root = False  # whether it pins there: not while a reload runs it beside its older self
        self.constants: dict[str, Any] = dict(checked.config.constants)  # the file's, then what the API set
        self.open_seconds = 0.0
        self.apply_seconds = 0.0

    @property
    def name(self) -> str:
        return self.checked.config.name

    @classmethod
    def start(cls, checked: Checked, *, stats: bool, adopt: bool = True) -> RunningApp:
        """Open the object (taking over what an earlier agent kept, unless ``adopt`` is false: :mod:`takeover`),
        apply the configured features, end what is left of the earlier agent.

        On failure nothing of this start stays in the kernel, and what an
        earlier agent kept stays kept (pinned, running) for the next try.
        """
        config = checked.config
        began = time.monotonic()
        collection, takeover = takeovers.open_collection(checked, adopt=adopt)
        application: Application | None = None
        try:
            if takeover is not None:
                takeover.replace(collection)
            application = Application(collection, checked.features, workers=config.workers)
            running = cls(checked, collection, application, takeover)
            running.open_seconds = time.monotonic() - began
            if stats:
                application.collect_stats(True)
            running.apply(config.features)
            if takeover is not None:
                takeover.finish(collection)
                running.holds_root = True
                running.checkpoint()
        except BaseException:
            handing_back = takeover is not None and takeover.found and takeover.refused is None
            try:
                collection.close(keep_pinned=handing_back)
            except DynbpfError:
                log.exception("application did not close cleanly", extra={"fields": {"app": config.name}})
            finally:
                if application is not None:
                    application.close()  # the collection is closed: this only lets go of it
                takeovers.tidy(config.pin_root)
            raise
        return running

    def apply(self, features: Mapping[str, FeatureState | str]) -> dict[str, Any]:
        began = time.monotonic()
        decisions = self.application.apply(features)
        self.apply_seconds = time.monotonic() - began
        self.checkpoint()
        return decisions

    @property
    def took_over(self) -> bool:
        """Whether it started from an earlier agent's pins: a start rolled back then keeps it pinned, as it found it."""
        return self.takeover is not None and self.takeover.found

    def take_root(self) -> None:
        """Pin under the kept root from now on (a reload ran this beside its older self, which is gone now)."""
        if self.root is None or self.holds_root:
            return
        self.holds_root = True
        self.checkpoint()

    def checkpoint(self) -> None:
        """With ``keep_on_exit``, pin what runs now under the kept root, so that even a crash keeps it."""
        if self.root is None or not self.holds_root or not self.checked.config.keep_on_exit:
            return
        try:
            self.collection.pin(self.root)
        except DynbpfError as e:
            fields = {"app": self.name, "root": self.root, "error": str(e)}
            log.error("not everything is pinned for the next agent", extra={"fields": fields})

    def change(self, states: Mapping[str, FeatureState]) -> dict[str, Any]:
        """Some features to new states in one apply (atomic), the others as they are; the decisions taken."""
        features = self.application.features.features
        for feature in states:
            if feature not in features:
                raise NotFound(f"application {self.name!r}", "feature", feature, features)
        config: dict[str, FeatureState | str] = {**self.application.config, **states}
        return self.apply(config)

    def set_constants(self, constants: Mapping[str, Any]) -> tuple[str, ...]:
        reloaded = self.application.set_constants(constants)
        self.constants.update(constants)
        self.checkpoint()
        return reloaded

    # --- reconfiguring -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(self.checked, dict(self.application.config), dict(self.constants))

    def reconfigure(self, checked: Checked) -> None:
        """Make the application what its (changed) table says: constants, then features; the file wins."""
        config = checked.config
        wanted = dict(config.constants)
        for name in self.constants:
            if name not in wanted:
                wanted[name] = self._initial(name)
        changed = {k: v for k, v in wanted.items() if k not in self.constants or self.constants[k] != v}
        if changed:
            self.application.set_constants(changed)
        self.constants = dict(config.constants)
        self.apply(config.features)
        self.checked = checked

    def restore(self, snapshot: Snapshot) -> None:
        """Back to ``snapshot`` after a reload that failed elsewhere (best effort: each step is atomic)."""
        changed = {k: v for k, v in snapshot.constants.items() if self.constants.get(k) != v}
        for name in self.constants:
            if name not in snapshot.constants:
                changed[name] = self._initial(name)
        if changed:
            self.application.set_constants(changed)
        self.constants = dict(snapshot.constants)
        self.apply(snapshot.features)
        self.checked = snapshot.checked

    def _initial(self, name: str) -> Any:
        """A constant's value in the object (what it was before the file or the API set it)."""
        from dynbpf._maps.variables import Variables

        spec = self.collection.spec
        var = next(v for v in spec.variables.values() if v.name == name and section_names.is_read_only_data(v.section))
        section = spec.maps[var.section]
        assert spec.btf is not None  # constants were set by name, so the object has BTF
        data = bytearray(section.data or bytes(section.value_size))
        return Variables.of_buffer(data, spec.btf, [var])[name]

    def close(self, *, keep: bool = False) -> None:
        """Disable every feature and free the collection (its pins too).

        ``keep``: pin what runs under the kept root instead and leave it
        running for the next agent, features as they are (recorded there);
        :class:`PinError` names what could not be kept, after closing.
        """
        if keep and self.root is not None:
            try:
                self._close_keeping(self.root)
            finally:
                self.collection.close()  # (nothing left to do unless keeping failed before it closed)
                self.application.close()  # the collection is closed: this only lets go of it
            return
        try:
            self.application.close()
        finally:
            self.collection.close()
            takeovers.tidy(self.checked.config.pin_root)

    def _close_keeping(self, root: str) -> None:
        if self.collection.pinned_root is None:
            try:
                self.collection.pin(root)
            except PinError:
                if self.collection.pinned_root is None:
                    raise  # nothing could be pinned: it all ends with this process
                # pinned but for some of it, which close() names again
        self.collection.close(keep_pinned=True)

    # --- reading -------------------------------------------------------------------------
    # programs() and links() read programs' fds: the service calls them on its worker thread, so that no
    # change unloads a program between reading its fd and asking the kernel about it.

    def status(self) -> dict[str, Any]:
        config = self.checked.config
        out = self.application.status()
        out["object"] = config.object
        out["constants"] = plain(self.constants)
        out["open_seconds"] = round(self.open_seconds, 6)
        out["apply_seconds"] = round(self.apply_seconds, 6)
        out["keep_on_exit"] = config.keep_on_exit
        out["adoption"] = self.takeover.as_json() if self.takeover is not None else None
        return out

    def programs(self) -> list[dict[str, Any]]:
        hooks = {p: h.name for h in self.application.features.hooks.values() for v in h.variants for p in v.programs}
        out = []
        for name, program in self.collection.programs.items():
            links = program.links
            entry: dict[str, Any] = {
                "name": name,
                "section": self.collection.spec.programs[name].section,
                "hook": hooks.get(name),
                "state": "attached" if links else "loaded" if program.loaded else "not loaded",
                "links": len(links),
            }
            try:
                info = commands.prog_info(program.fd)
            except DynbpfError:  # not loaded
                entry["state"] = "attached" if links else "not loaded"
            else:
                entry.update(
                    id=int(info.id),
                    tag=bytes(info.tag).hex(),
                    verification_ms=round(program.seconds * 1000, 3),
                    run_cnt=int(info.run_cnt),
                    run_time_ns=int(info.run_time_ns),
                )
            out.append(entry)
        return out

    def maps(self) -> list[dict[str, Any]]:
        coll = self.collection
        out = []
        for name, spec in coll.spec.maps.items():
            entry: dict[str, Any] = {
                "name": name,
                "type": type_name(MapType, spec.type),
                "key_size": spec.key_size,
                "value_size": spec.value_size,
                "max_entries": spec.max_entries,
                "exists": coll.map_exists(name),
            }
            try:
                entry["policy"] = coll.map_policy(name).value
                entry["pin"] = coll.map_pin_path(name)
            except DynbpfError:
                entry["policy"] = None  # left out by a map edit
            if entry["exists"]:
                try:
                    info = commands.map_info(coll.map_fd_number(name))  # a map freed meanwhile raises
                    entry.update(id=int(info.id), max_entries=int(info.max_entries))
                except DynbpfError:
                    entry["exists"] = False
            out.append(entry)
        return out

    def links(self) -> list[dict[str, Any]]:
        out = []
        for name, program in self.collection.programs.items():
            for link in program.links:
                try:
                    facts = link.facts()
                except DynbpfError:
                    continue  # detached meanwhile
                out.append(
                    {
                        "program": name,
                        "id": facts.id,
                        "program_id": facts.prog_id,
                        "kind": link.kind,
                        "description": link.description,
                        "pinned": link.pinned,
                    }
                )
        return out

    def read_map(self, name: str, limit: int) -> dict[str, Any]:
        """Up to ``limit`` entries (at most :data:`READ_LIMIT`) of map ``name``, decoded with its BTF types."""
        view = self.collection.maps[name]
        limit = max(0, min(limit, READ_LIMIT))
        entries = list(itertools.islice(view.items(), limit + 1))
        return {
            "map": name,
            "type": type_name(MapType, view.type),
            "entries": [{"key": plain(k), "value": plain(v)} for k, v in entries[:limit]],
            "truncated": len(entries) > limit,
        }

    def entry_counts(self) -> dict[str, int]:
        """Entries of each existing map whose size is its content (hash-like maps), counted key by key."""
        out = {}
        for name, spec in self.collection.spec.maps.items():
            if spec.type not in _COUNTED or not self.collection.map_exists(name):
                continue
            try:
                out[name] = sum(1 for _ in self.collection.maps[name])
            except DynbpfError:
                continue  # freed meanwhile
        return out

    def pin_map(self, name: str, path: str) -> str:
        """Pin map ``name`` at ``path``, which must lie below the application's pin root; returns the path."""
        pin_root = self.checked.config.pin_root
        full = inside_root(pin_root, path, app=self.name)
        assert pin_root is not None
        kept = takeovers.kept_dir(pin_root)
        if os.path.commonpath([kept, full]) == kept:
            raise OutsideRootError(f"refused path {path!r}: {kept} holds what keep_on_exit pins", path=full)
        view = self.collection.maps[name]
        fs.make_pin_dirs(full)
        commands.obj_pin(view.fd, full)
        log.info("map pinned", extra={"fields": {"app": self.name, "map": name, "path": full}})
        return full

    def program(self, name: str) -> Any:
        programs = self.collection.programs
        if name not in programs:
            raise NotFound(f"application {self.name!r}", "program", name, programs)
        return programs[name]


def inside_root(root: str | None, path: str, *, app: str) -> str:
    """``path`` (absolute, or relative to ``root``) if it lies strictly below ``root``; else :class:`OutsideRootError`.

    Refused without looking at the file system: a path with ``..`` or NUL,
    or one that leaves ``root``. Symbolic links on the way are refused
    where the pin is made (:func:`dynbpf._sys.fs.make_pin_dirs`).
    """
    if root is None:
        raise OutsideRootError(f"application {app!r} has no pin_root: the API pins nothing for it", path=path)
    if not isinstance(path, str) or not path or "\0" in path or ".." in path.split("/"):
        raise OutsideRootError(f"refused path {path!r}: give a path below {root} without '..'", path=str(path))
    full = os.path.normpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root or full == root:
        raise OutsideRootError(f"refused path {path!r}: it is outside {root}, the pin root of {app!r}", path=full)
    return full


_COUNTED = frozenset(
    {
        MapType.HASH,
        MapType.PERCPU_HASH,
        MapType.LRU_HASH,
        MapType.LRU_PERCPU_HASH,
        MapType.LPM_TRIE,
        MapType.HASH_OF_MAPS,
        MapType.SOCKHASH,
        MapType.DEVMAP_HASH,
    }
)
