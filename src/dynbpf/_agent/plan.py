"""A configuration checked against its objects, and what applying it changes.

:func:`check` reads an application's object and feature map and checks
what the file says of them (features, maps, constants, record types, the
pin root) without touching the kernel, so that a reload checks every
application before it changes any. :func:`diff` says which applications
start, change in place, stop or stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dynbpf import _section_names as section_names
from dynbpf._agent.config import AgentConfig, AppConfig, ConfigError
from dynbpf._elf.reader import read
from dynbpf._elf.spec import ObjectSpec
from dynbpf._features import toml
from dynbpf._features.model import FeatureMap
from dynbpf._sys import fs
from dynbpf._sys.constants import MapType, type_name
from dynbpf.errors import DynbpfError, MapEditError, NotFound, PinError

EVENT_MAPS = (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY)

Stamp = tuple[tuple[int, int, int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class Checked:
    """An application's configuration, checked against what its object and feature map declare."""

    config: AppConfig
    spec: ObjectSpec
    features: FeatureMap
    stamp: Stamp  # the files it was read from: a changed object or feature map opens the application anew


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[Checked, ...]  # new applications, and those opened anew (their running one stops after)
    change: tuple[Checked, ...]  # changed in place: features, constants, event maps
    stop: tuple[str, ...]  # no longer configured
    keep: tuple[str, ...]  # as they were

    @property
    def empty(self) -> bool:
        return not (self.start or self.change or self.stop)


def stamp(app: AppConfig) -> Stamp:
    """Which files ``app`` reads, as they are now (device, inode, size, mtime; None for a missing one)."""
    return tuple(_file_stamp(p) for p in (app.object, app.feature_map, _beside(app)))


def diff(config: AgentConfig, running: Mapping[str, tuple[AppConfig, Stamp]]) -> Plan:
    """What moving from ``running`` (each application's configuration and stamp) to ``config`` takes.

    Every application that starts or changes is checked first; the first
    mistake raises :class:`ConfigError`, and nothing has changed.
    """
    start: list[Checked] = []
    change: list[Checked] = []
    keep: list[str] = []
    for name, app in config.apps.items():
        now = stamp(app)
        old = running.get(name)
        if old is not None and old == (app, now):
            keep.append(name)
            continue
        checked = check(config, name, now)
        if old is None or old[0].open_options() != app.open_options() or old[1] != now:
            start.append(checked)
        else:
            change.append(checked)
    stop = tuple(name for name in running if name not in config.apps)
    return Plan(tuple(start), tuple(change), stop, tuple(keep))


def check(config: AgentConfig, name: str, files: Stamp | None = None) -> Checked:
    """``config.apps[name]`` checked against its object and feature map; :class:`ConfigError` names the key."""
    app = config.apps[name]
    at = ("apps", name)
    try:
        spec = read(app.object, lazy=True)
    except DynbpfError as e:
        raise config.error(f"cannot read the object: {e}", *at, "object") from None
    features = _feature_map(config, app, spec)
    for feature in app.features:
        if feature not in features.features:
            message = _unknown("feature", feature, features.features, features.source)
            raise config.error(message, *at, "features", feature)
    maps = spec.maps
    for key in ("map_policies", "map_edits", "events"):
        for map_name in getattr(app, key):
            if map_name not in maps:
                raise config.error(_unknown("map", map_name, maps, spec.name), *at, key, map_name)
    for map_name, record in app.events.items():
        kind = maps[map_name].type
        if kind not in EVENT_MAPS:
            raise config.error(
                f"map {map_name!r} is a {type_name(MapType, kind)}, not a ringbuf or perf_event_array",
                *at,
                "events",
                map_name,
            )
        if record:
            _record(config, spec, record, (*at, "events", map_name))
    readonly = sorted(v.name for v in spec.variables.values() if section_names.is_read_only_data(v.section))
    for constant in app.constants:
        if constant not in readonly:
            raise config.error(_unknown("read-only global", constant, readonly, spec.name), *at, "constants", constant)
    if app.pin_root is not None:
        try:
            fs.check_pin_root(app.pin_root)
        except PinError as e:
            raise config.error(str(e), *at, "pin_root") from None
    return Checked(app, spec, features, files if files is not None else stamp(app))


def located(config: AgentConfig, name: str, error: DynbpfError) -> ConfigError | None:
    """A refusal of ``dynbpf.open`` for a wrong option, placed at its key; None for other failures."""
    at = ("apps", name)
    if isinstance(error, MapEditError):
        return config.error(str(error), *at, "map_edits", error.map)
    if isinstance(error, NotFound) and error.option:
        key = {"constants=": "constants", "map_policies=": "map_policies", "map_edits=": "map_edits"}
        option = key.get(error.option)
        if option is not None:
            return config.error(str(error), *at, option, error.name)
    if isinstance(error, PinError):
        return config.error(str(error), *at, "pin_root")
    return None


def _feature_map(config: AgentConfig, app: AppConfig, spec: ObjectSpec) -> FeatureMap:
    at = ("apps", app.name)
    key = "feature_map" if app.feature_map is not None else "object"
    try:
        if app.feature_map is not None:
            features = FeatureMap.from_toml(app.feature_map)
        else:
            found = FeatureMap.from_object(spec)
            beside = _beside(app)
            if found is None and beside is not None and os.path.exists(beside):
                found, key = FeatureMap.from_toml(beside), "object"
            if found is None:
                raise config.error(
                    f"object {spec.name!r} declares no features (no 'dynbpf:' decl tags) and there is no "
                    f"{os.path.basename(beside or 'x.features.toml')} beside it: set feature_map",
                    *at,
                    "object",
                )
            features = found
        features.check(spec.programs)
        from dynbpf._features.requirements import validate

        for hook in features.hooks.values():
            for variant in hook.variants:
                for req in variant.requires:
                    validate(req, where=variant.where or hook.where)
    except ConfigError:
        raise
    except DynbpfError as e:
        raise config.error(f"feature map: {e}", *at, key) from None
    return features


def _record(config: AgentConfig, spec: ObjectSpec, record: str, path: tuple[str, ...]) -> None:
    if spec.btf is None:
        raise config.error(f"object {spec.name!r} has no BTF to decode records by type", *path)
    from dynbpf._maps.codec import record_decoder

    try:
        record_decoder(spec.btf, record)
    except (DynbpfError, LookupError, ValueError) as e:
        raise config.error(f"record type {record!r}: {e}", *path) from None


def _beside(app: AppConfig) -> str | None:
    return None if app.feature_map is not None else str(toml.beside(app.object))


def _file_stamp(path: str | None) -> tuple[int, int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unknown(kind: str, name: str, known: Iterable[str], owner: str | None) -> str:
    """The message of an unknown name: the one :class:`NotFound` words, close matches first."""
    return str(NotFound(owner or "the object", kind, name, sorted(known)))
