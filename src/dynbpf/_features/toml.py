"""A feature map declared in a TOML file, usually beside the object (``agent.features.toml``).

The format (docs/features.md, "Declaring features")::

    [features.process]
    hooks = ["exec"]
    best_effort = ["exit"]
    requires = []

    [hooks.exit]
    variants = ["tp_exit"]          # a program's name: a variant of that program alone

    [[hooks.exec.variants]]         # or one table per variant, in order of preference
    programs = ["fexit_exec"]
    requires = ["trampolines"]

    [[hooks.exec.variants]]
    programs = ["tp_exec"]
    name = "tracepoint"
    attach.tp_exec = { category = "sched", event = "sched_process_exec" }

Every error is a :class:`~dynbpf.errors.FeatureMapError` whose ``where``
is ``file:line``. :mod:`tomllib` reports no positions for what it parsed,
so :func:`key_lines` reads the text once more to find where each table, key
and array element starts; a syntax error already carries tomllib's line.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from dynbpf._features.model import Feature, FeatureMap, Hook, Requirement, Variant
from dynbpf.errors import FeatureMapError

#: what a file name ends with, replaced by ``.features.toml`` for the map beside an object
_OBJECT_SUFFIXES = (".bpf.o", ".o")
TOML_SUFFIX = ".features.toml"

_TOP_KEYS = ("features", "hooks")
_FEATURE_KEYS = ("hooks", "best_effort", "requires")
_HOOK_KEYS = ("variants",)
_VARIANT_KEYS = ("programs", "requires", "name", "attach")

Path_ = tuple[str | int, ...]  # a place in the document: keys and array indices


def beside(object_path: str | os.PathLike[str]) -> Path:
    """Where the feature map of ``object_path`` lives by default: ``x/agent.bpf.o`` → ``x/agent.features.toml``."""
    path = Path(object_path)
    name = path.name
    for suffix in _OBJECT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return path.with_name(name[: -len(suffix)] + TOML_SUFFIX)
    return path.with_name(path.stem + TOML_SUFFIX)


def load(source: str | os.PathLike[str], *, name: str | None = None) -> FeatureMap:
    """The feature map in a TOML file (a path) or in TOML text.

    A ``str`` holding a newline, or an ``=`` and naming no existing file
    (``features/a=b.toml`` is a path), is TOML text; any other ``str`` and
    every ``os.PathLike`` a path. ``name`` is what messages call the text
    (default: the path, or ``<toml>`` for text).
    """
    if isinstance(source, str) and ("\n" in source or ("=" in source and not os.path.exists(source))):
        return parse(source, name or "<toml>")
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"from_toml() takes a path or TOML text, not {type(source).__name__}")
    path = Path(source)
    file = name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FeatureMapError(f"cannot read the feature map: {e.strerror}", file) from None
    except UnicodeDecodeError as e:
        raise FeatureMapError(f"not UTF-8 text ({e.reason} at byte {e.start})", file) from None
    return parse(text, file)


def parse(text: str, file: str) -> FeatureMap:
    """The feature map in ``text``; ``file`` names it in every error's ``where``."""
    data, lines = located(text, file)
    return _Reader(data, file, lines).read()


def located(
    text: str, file: str, error: Callable[[str, str], Exception] = FeatureMapError
) -> tuple[dict[str, Any], dict[Path_, int]]:
    """``text`` decoded, and the line of each of its tables, keys and array elements (:func:`key_lines`).

    A syntax error is ``error(message, "file:line")``; other TOML documents
    than feature maps (the agent's configuration) report through their own
    error class.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        raise error(f"not valid TOML: {e}", f"{file}:{m.group(1)}" if m else file) from None
    return data, key_lines(text)


def where(lines: Mapping[Path_, int], file: str, path: Path_) -> str:
    """``file:line`` of ``path``, or of the nearest enclosing thing the text shows (a table's header)."""
    while path and path not in lines:
        path = path[:-1]
    return f"{file}:{lines[path]}" if path else file


class _Reader:
    """The document checked key by key and turned into the model, every error placed by its line."""

    def __init__(self, data: dict[str, Any], file: str, lines: Mapping[Path_, int]) -> None:
        self.data = data
        self.file = file
        self.lines = lines

    def where(self, path: Path_) -> str:
        return where(self.lines, self.file, path)

    def fail(self, message: str, path: Path_) -> FeatureMapError:
        return FeatureMapError(message, self.where(path))

    def read(self) -> FeatureMap:
        self.known_keys(self.data, (), _TOP_KEYS, "a feature map")
        features = self.table(self.data.get("features", {}), ("features",), "[features]")
        hooks = self.table(self.data.get("hooks", {}), ("hooks",), "[hooks]")
        return FeatureMap.of(
            [self.feature(n, v) for n, v in features.items()],
            [self.hook(n, v) for n, v in hooks.items()],
            source=self.file,
        )

    def feature(self, name: str, value: object) -> Feature:
        path: Path_ = ("features", name)
        body = self.table(value, path, f"feature {name!r}")
        self.known_keys(body, path, _FEATURE_KEYS, f"feature {name!r}")
        lists = {key: self.names(body.get(key, []), (*path, key), f"feature {name!r}: {key}") for key in _FEATURE_KEYS}
        return Feature(name, lists["hooks"], lists["best_effort"], lists["requires"], where=self.where(path))

    def hook(self, name: str, value: object) -> Hook:
        path: Path_ = ("hooks", name)
        body = self.table(value, path, f"hook {name!r}")
        self.known_keys(body, path, _HOOK_KEYS, f"hook {name!r}")
        if "variants" not in body:
            raise self.fail(f"hook {name!r} has no 'variants' (a list of program names or variant tables)", path)
        variants = body["variants"]
        if not isinstance(variants, list):
            raise self.fail(f"hook {name!r}: variants must be a list, not {variants!r}", (*path, "variants"))
        return Hook(
            name,
            tuple(
                self.variant(f"hook {name!r}, variant {i + 1}", v, (*path, "variants", i))
                for i, v in enumerate(variants)
            ),
            where=self.where(path),
        )

    def variant(self, what: str, value: object, path: Path_) -> Variant:
        if isinstance(value, str):
            return Variant((value,), where=self.where(path))
        body = self.table(value, path, what)
        self.known_keys(body, path, _VARIANT_KEYS, what)
        if "programs" not in body:
            raise self.fail(f"{what} names no programs ('programs = [...]')", path)
        programs = body["programs"]
        programs = [programs] if isinstance(programs, str) else programs
        programs = self.names(programs, (*path, "programs"), f"{what}: programs")
        requires = body.get("requires", [])
        requires = [requires] if isinstance(requires, str) else requires
        requires = self.names(requires, (*path, "requires"), f"{what}: requires")
        parsed = tuple(Requirement.parse(r, where=self.where((*path, "requires", i))) for i, r in enumerate(requires))
        name = body.get("name", "")
        if not isinstance(name, str):
            raise self.fail(f"{what}: name must be a string, not {name!r}", (*path, "name"))
        attach = self.table(body.get("attach", {}), (*path, "attach"), f"{what}: attach")
        return Variant(tuple(programs), parsed, attach, name, where=self.where(path))

    def table(self, value: object, path: Path_, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a table, not {value!r}", path)
        return value

    def names(self, value: object, path: Path_, what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(f"{what} must be a list of strings, not {value!r}", path)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{what} lists {item!r}, not a string", (*path, i))
        return tuple(value)

    def known_keys(self, body: Mapping[str, object], path: Path_, keys: tuple[str, ...], what: str) -> None:
        unknown = unknown_key(body, keys)
        if unknown is not None:
            key, hint = unknown
            raise self.fail(f"{what}: unknown key {key!r} ({hint})", (*path, key))


def unknown_key(body: Mapping[str, object], keys: tuple[str, ...]) -> tuple[str, str] | None:
    """The first key of ``body`` not among ``keys``, with a hint: the closest known key, else all of them."""
    for key in body:
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1)
            return key, f"did you mean {near[0]!r}?" if near else f"known: {', '.join(keys)}"
    return None


# --- where things are in the text ------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\n#]*")
_SPACE = " \t"


def key_lines(text: str) -> dict[Path_, int]:
    """The 1-based line where each table, key and array element of ``text`` (valid TOML) is first written.

    A key is recorded under its full path from the document's root
    (``("hooks", "exec", "variants", 1, "attach")``); an element of an
    array of tables counts as an index as elsewhere. Values are skipped,
    not decoded: tomllib has decoded them already. Should the scanner
    ever misread valid TOML, messages after that point lose their lines,
    never the map.
    """
    scanner = _Scanner(text)
    try:
        return scanner.scan()
    except (AssertionError, IndexError, tomllib.TOMLDecodeError):
        return scanner.found  # what it placed before it went wrong is right


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.found: dict[Path_, int] = {}
        self.arrays: dict[Path_, int] = {}  # arrays of tables: how many elements so far

    def line(self, at: int) -> int:
        return bisect_right(self.newlines, at - 1) + 1

    def record(self, path: Path_, at: int) -> None:
        line = self.line(at)
        for n in range(1, len(path) + 1):
            self.found.setdefault(path[:n], line)

    def scan(self) -> dict[Path_, int]:
        table: Path_ = ()
        text = self.text
        while True:
            self.skip(newlines=True)
            if self.i >= len(text):
                return self.found
            start = self.i
            if text.startswith("[[", self.i):
                self.i += 2
                parts = self.key()
                key = (*self.resolve(parts[:-1]), parts[-1])  # a new element: only the enclosing arrays resolve
                self.expect("]]")
                index = self.arrays.get(key, 0)
                self.arrays[key] = index + 1
                table = (*key, index)
                self.record(table, start)
            elif text[self.i] == "[":
                self.i += 1
                table = self.resolve(self.key())
                self.expect("]")
                self.record(table, start)
            else:
                path = (*table, *self.key())
                self.record(path, start)
                self.expect("=")
                self.value(path)
                self.skip(newlines=False)
                if self.i < len(text) and text[self.i] not in "\r\n":
                    self.misread("the end of the line")

    def resolve(self, key: Path_) -> Path_:
        """A header's key with the current element of each array of tables it passes through."""
        out: Path_ = ()
        for part in key:
            out = (*out, part)
            if out in self.arrays:
                out = (*out, self.arrays[out] - 1)
        return out

    def skip(self, *, newlines: bool) -> None:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c in _SPACE or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            else:
                return

    def expect(self, token: str) -> None:
        self.skip(newlines=False)
        if not self.text.startswith(token, self.i):
            self.misread(repr(token))
        self.i += len(token)

    def misread(self, expected: str) -> NoReturn:
        """Stop: tomllib accepted the text, so only a bug in this scanner gets here (every loop ends here
        or consumes text, so a misreading never loops)."""
        raise AssertionError(f"expected {expected} at line {self.line(self.i)}")

    def key(self) -> Path_:
        """A dotted key, each part decoded as TOML decodes it."""
        parts: list[str | int] = []
        while True:
            self.skip(newlines=False)
            c = self.text[self.i]
            if c in "\"'":
                start = self.i
                self.string()
                parts.append(tomllib.loads(f"k = {self.text[start : self.i]}")["k"])
            else:
                m = _BARE_KEY.match(self.text, self.i)
                if m is None:
                    self.misread("a key")
                parts.append(m.group())
                self.i = m.end()
            self.skip(newlines=False)
            if self.i < len(self.text) and self.text[self.i] == ".":
                self.i += 1
                continue
            return tuple(parts)

    def value(self, path: Path_) -> None:
        self.skip(newlines=False)
        text = self.text
        c = text[self.i]
        if c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if text[self.i] == "]":
                    self.i += 1
                    return
                self.record((*path, index), self.i)
                self.value((*path, index))
                self.skip(newlines=True)
                if text[self.i] == ",":
                    self.i += 1
                    index += 1
                elif text[self.i] != "]":
                    self.misread("',' or ']'")
        elif c == "{":
            self.i += 1
            while True:
                self.skip(newlines=True)
                if text[self.i] == "}":
                    self.i += 1
                    return
                start = self.i
                key = (*path, *self.key())
                self.record(key, start)
                self.expect("=")
                self.value(key)
                self.skip(newlines=True)
                if text[self.i] == ",":
                    self.i += 1
                elif text[self.i] != "}":
                    self.misread("',' or '}'")
        elif c in "\"'":
            self.string()
        else:  # number, boolean or date: up to what ends a value
            m = _SCALAR.match(text, self.i)
            assert m is not None
            self.i = m.end()

    def string(self) -> None:
        """Skip a string of any of TOML's four kinds."""
        text = self.text
        quote = text[self.i]
        if text.startswith(quote * 3, self.i):
            self.i += 3
            while not text.startswith(quote * 3, self.i):
                self.i += 2 if quote == '"' and text[self.i] == "\\" else 1
            self.i += 3
            while self.i < len(text) and text[self.i] == quote:  # up to two quotes may end the content
                self.i += 1
            return
        self.i += 1
        while text[self.i] != quote:
            self.i += 2 if quote == '"' and text[self.i] == "\\" else 1
        self.i += 1
