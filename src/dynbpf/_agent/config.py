"""The agent's configuration file: which applications run, and how (docs/agent.md, "Configuration").

Reading checks the document's shape only: keys, types and values, each
error naming the file, the line and the key (the line from the same TOML
scanner the feature maps use, :mod:`dynbpf._features.toml`). What needs
the objects (feature names, map names, record types) is checked by
:mod:`dynbpf._agent.plan` before anything changes.
"""

from __future__ import annotations

import difflib
import grp
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dynbpf._agent import DEFAULT_SOCKET
from dynbpf._features import toml
from dynbpf._features.application import FeatureState
from dynbpf._features.requirements import by_name
from dynbpf._runtime.mapedit import MapEdit
from dynbpf._runtime.pins import bpffs_name
from dynbpf._runtime.state import MapPolicy
from dynbpf._sys.constants import MapType
from dynbpf.errors import DynbpfError, OptionError

_TOP_KEYS = ("agent", "apps")
_AGENT_KEYS = ("socket", "socket_group", "metrics_port", "watch_interval", "stats", "log_level")
_APP_KEYS = (
    "object",
    "feature_map",
    "pin_root",
    "map_policy",
    "map_policies",
    "map_edits",
    "constants",
    "features",
    "events",
    "workers",
    "cache",
    "keep_on_exit",
)
_EDIT_INT_FIELDS = ("max_entries", "key_size", "value_size", "flags", "numa_node", "map_extra")
_EDIT_KEYS = (*_EDIT_INT_FIELDS, "type", "inner", "create", "reuse_pin")
_EDIT_FD_FIELDS = ("reuse_fd", "inner_map_fd")  # fds: a file cannot give one
LOG_LEVELS = ("debug", "info", "warning", "error")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

Path_ = toml.Path_


class ConfigError(DynbpfError, ValueError):
    """The configuration is wrong; ``where`` is ``file:line``, and the message names the key."""

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The ``[agent]`` table: the agent's own settings, read once at start (a reload keeps the first ones)."""

    socket: str = DEFAULT_SOCKET
    socket_group: int | None = None  # a gid: the socket is 0660 root:group, else 0600 root:root
    metrics_port: int | None = None  # also serve /metrics on 127.0.0.1:port
    watch_interval: float = 1.0  # seconds between looks at the file; 0: on SIGHUP only
    stats: bool = True  # BPF_ENABLE_STATS while the agent runs: run_cnt and run_time_ns count
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One ``[apps.<name>]`` table. Paths are absolute (relative ones are taken from the file's directory)."""

    name: str
    object: str
    feature_map: str | None = None  # a TOML feature map; default: the object's decl tags, else the one beside it
    pin_root: str | None = None
    map_policy: str = MapPolicy.ON_DEMAND.value
    map_policies: Mapping[str, str] = field(default_factory=dict)
    map_edits: Mapping[str, MapEdit] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    features: Mapping[str, FeatureState] = field(default_factory=dict)
    events: Mapping[str, str] = field(default_factory=dict)  # ring or perf buffer -> record type ("": bytes)
    workers: int | None = None
    cache: bool | str = False
    keep_on_exit: bool = False

    def open_options(self) -> tuple[Any, ...]:
        """What the collection is opened with: a change to any of it opens the application anew.

        Constants, features and event maps change in place.
        """
        return (
            self.object,
            self.feature_map,
            self.pin_root,
            self.map_policy,
            dict(self.map_policies),
            dict(self.map_edits),
            self.workers,
            self.cache,
        )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A configuration file as read: its settings, its applications, and where each key is written."""

    file: str
    agent: AgentSettings
    apps: Mapping[str, AppConfig]
    digest: str  # sha256 of the text: what the watcher compares
    lines: Mapping[Path_, int] = field(default_factory=dict, compare=False, repr=False)

    def where(self, *path: str | int) -> str:
        return toml.where(self.lines, self.file, path)

    def error(self, message: str, *path: str | int) -> ConfigError:
        """An error at ``path`` (``"apps", "mon", "constants", "x"``), its message starting with the dotted key."""
        key = ".".join(str(p) for p in path)
        return ConfigError(f"{key}: {message}" if key else message, self.where(*path))


def load(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and check the configuration file at ``path``; :class:`ConfigError` if it cannot be used."""
    file = os.path.abspath(path)
    try:
        raw = Path(file).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration: {e.strerror}", file) from None
    return parse(raw, file)


def parse(raw: bytes, file: str) -> AgentConfig:
    """The configuration in ``raw`` (the file's bytes); ``file`` names it in errors and anchors relative paths."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})", file) from None
    data, lines = toml.located(text, file, ConfigError)
    reader = _Reader(file, lines)
    reader.keys(data, (), _TOP_KEYS)
    agent = reader.agent(reader.table(data.get("agent", {}), ("agent",)))
    apps_table = reader.table(data.get("apps", {}), ("apps",))
    if not apps_table:
        raise reader.fail("the configuration runs no application: add an [apps.<name>] table", ("apps",))
    apps = {name: reader.app(name, value) for name, value in apps_table.items()}
    reader.distinct_pin_roots(apps)
    return AgentConfig(file, agent, MappingProxyType(apps), hashlib.sha256(raw).hexdigest(), lines)


class _Reader:
    """Checks one document key by key; every error is placed by its key's line."""

    def __init__(self, file: str, lines: Mapping[Path_, int]) -> None:
        self.file = file
        self.base = os.path.dirname(file)
        self.lines = lines

    def fail(self, message: str, path: Path_) -> ConfigError:
        key = ".".join(str(p) for p in path)
        return ConfigError(f"{key}: {message}" if key else message, toml.where(self.lines, self.file, path))

    def distinct_pin_roots(self, apps: Mapping[str, AppConfig]) -> None:
        """Two applications under one pin_root keep their pins in directories named after them, with '_'
        for '.' (bpffs takes no '.'): names that differ only there would share one, so they are refused."""
        seen: dict[tuple[str, str], str] = {}
        for name, app in apps.items():
            if app.pin_root is None:
                continue
            other = seen.setdefault((os.path.normpath(app.pin_root), bpffs_name(name)), name)
            if other != name:
                raise self.fail(
                    f"pins under the same directory as application {other!r} "
                    f"({app.pin_root}/kept/{bpffs_name(name)}): rename one or give it another pin_root",
                    ("apps", name, "pin_root"),
                )

    def keys(self, body: Mapping[str, object], path: Path_, known: tuple[str, ...]) -> None:
        unknown = toml.unknown_key(body, known)
        if unknown is not None:
            key, hint = unknown
            raise self.fail(f"unknown key ({hint})", (*path, key))

    def table(self, value: object, path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"must be a table, not {value!r}", path)
        return value

    def integer(self, value: object, path: Path_, *, low: int = 0, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"must be an integer, not {value!r}", path)
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.fail(f"{value} is out of range ({bound})", path)
        return value

    def boolean(self, value: object, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"must be true or false, not {value!r}", path)
        return value

    def string(self, value: object, path: Path_) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(f"must be a non-empty string, not {value!r}", path)
        return value

    def path(self, value: object, path: Path_, *, absolute: bool = False) -> str:
        text = self.string(value, path)
        if "\0" in text:
            raise self.fail("a path cannot hold NUL", path)
        if absolute and not os.path.isabs(text):
            raise self.fail(f"must be an absolute path, not {text!r}", path)
        return os.path.normpath(os.path.join(self.base, text))

    def agent(self, body: dict[str, Any]) -> AgentSettings:
        at: Path_ = ("agent",)
        self.keys(body, at, _AGENT_KEYS)
        settings: dict[str, Any] = {}
        if "socket" in body:
            settings["socket"] = self.path(body["socket"], (*at, "socket"), absolute=True)
        if "socket_group" in body:
            settings["socket_group"] = self.group(body["socket_group"], (*at, "socket_group"))
        if "metrics_port" in body:
            settings["metrics_port"] = self.integer(body["metrics_port"], (*at, "metrics_port"), low=1, high=65535)
        if "watch_interval" in body:
            value = body["watch_interval"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self.fail(f"must be a number of seconds, 0 or more, not {value!r}", (*at, "watch_interval"))
            settings["watch_interval"] = float(value)
        if "stats" in body:
            settings["stats"] = self.boolean(body["stats"], (*at, "stats"))
        if "log_level" in body:
            level = body["log_level"]
            if level not in LOG_LEVELS:
                raise self.fail(f"{level!r} is not a log level ({', '.join(LOG_LEVELS)})", (*at, "log_level"))
            settings["log_level"] = level
        return AgentSettings(**settings)

    def group(self, value: object, path: Path_) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(value, path)
        name = self.string(value, path)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise self.fail(f"no group {name!r} on this machine", path) from None

    def app(self, name: str, value: object) -> AppConfig:
        at: Path_ = ("apps", name)
        if not _NAME.fullmatch(name):
            raise self.fail("an application's name is letters, digits, '_', '.' and '-' (it is used in URLs)", at)
        body = self.table(value, at)
        self.keys(body, at, _APP_KEYS)
        if "object" not in body:
            raise self.fail("names no object ('object = \"path/to/app.bpf.o\"')", at)
        out: dict[str, Any] = {"name": name, "object": self.path(body["object"], (*at, "object"))}
        if "feature_map" in body:
            out["feature_map"] = self.path(body["feature_map"], (*at, "feature_map"))
        if "pin_root" in body:
            out["pin_root"] = self.path(body["pin_root"], (*at, "pin_root"), absolute=True)
        if "map_policy" in body:
            out["map_policy"] = self.policy(body["map_policy"], (*at, "map_policy"))
        policies = self.table(body.get("map_policies", {}), (*at, "map_policies"))
        out["map_policies"] = {m: self.policy(p, (*at, "map_policies", m)) for m, p in policies.items()}
        edits = self.table(body.get("map_edits", {}), (*at, "map_edits"))
        out["map_edits"] = {m: self.edit(e, (*at, "map_edits", m)) for m, e in edits.items()}
        out["constants"] = self.table(body.get("constants", {}), (*at, "constants"))
        features = self.table(body.get("features", {}), (*at, "features"))
        out["features"] = {f: self.state(s, (*at, "features", f)) for f, s in features.items()}
        out["events"] = self.events(body.get("events", {}), (*at, "events"))
        if "workers" in body:
            out["workers"] = self.integer(body["workers"], (*at, "workers"), low=1)
        if "cache" in body:
            cache = body["cache"]
            out["cache"] = cache if isinstance(cache, bool) else self.path(cache, (*at, "cache"), absolute=True)
        if "keep_on_exit" in body:
            out["keep_on_exit"] = self.boolean(body["keep_on_exit"], (*at, "keep_on_exit"))
            if out["keep_on_exit"] and "pin_root" not in out:
                raise self.fail("keep_on_exit pins under the application's pin_root: set one", (*at, "keep_on_exit"))
        for key in ("map_policies", "map_edits", "constants", "features", "events"):
            out[key] = MappingProxyType(out[key])
        return AppConfig(**out)

    def policy(self, value: object, path: Path_) -> str:
        text = self.string(value, path)
        try:
            return MapPolicy.of(text, where="map policy").value
        except OptionError as e:
            raise self.fail(str(e).removeprefix("map policy: "), path) from None

    def state(self, value: object, path: Path_) -> FeatureState:
        try:
            return FeatureState.of(self.string(value, path), where="feature state")
        except ValueError as e:
            raise self.fail(str(e).removeprefix("feature state: "), path) from None

    def events(self, value: object, path: Path_) -> dict[str, str]:
        if isinstance(value, list):
            names = [self.string(v, (*path, i)) for i, v in enumerate(value)]
            return dict.fromkeys(names, "")
        body = self.table(value, path)
        out = {}
        for name, record in body.items():
            if not isinstance(record, str):
                what = f'a record type ("struct event", or "" for raw bytes), not {record!r}'
                raise self.fail(what, (*path, name))
            out[name] = record
        return out

    def edit(self, value: object, path: Path_) -> MapEdit:
        body = self.table(value, path)
        for key in _EDIT_FD_FIELDS:
            if key in body:
                what = "takes a file descriptor, which a configuration cannot give (use reuse_pin)"
                raise self.fail(what, (*path, key))
        self.keys(body, path, _EDIT_KEYS)
        fields: dict[str, Any] = {k: self.integer(body[k], (*path, k)) for k in _EDIT_INT_FIELDS if k in body}
        if "type" in body:
            fields["type"] = self.map_type(body["type"], (*path, "type"))
        if "inner" in body:
            fields["inner"] = self.edit(body["inner"], (*path, "inner"))
        if "create" in body:
            fields["create"] = self.boolean(body["create"], (*path, "create"))
        if "reuse_pin" in body:
            fields["reuse_pin"] = self.path(body["reuse_pin"], (*path, "reuse_pin"), absolute=True)
        return MapEdit(**fields)

    def map_type(self, value: object, path: Path_) -> MapType | int:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(value, path)
        name = self.string(value, path)
        member = by_name(MapType, name)
        if member is None:
            known = tuple(m.name.lower() for m in MapType if m.value)
            near = difflib.get_close_matches(name.lower(), known, n=1)
            hint = f"did you mean {near[0]!r}?" if near else "e.g. hash, array, ringbuf"
            raise self.fail(f"no map type {name!r} ({hint})", path)
        return member
