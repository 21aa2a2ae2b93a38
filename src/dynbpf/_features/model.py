"""What an application declares: features made of hooks, hooks made of variants.

A *feature* is something the application's user switches on or off
("process monitoring"). It needs *hooks*: places in the kernel where a
program must run ("exec"). A hook is implemented by one of several
*variants* in order of preference (fexit where trampolines work, else a
tracepoint); a variant is one or more programs, what they require of the
kernel, and where they attach.

Hooks are named once and shared: two features that list the same hook share
its programs, which run while either feature needs them. A program belongs
to at most one hook, so "which feature keeps this program" always has one
answer.

This module is data only (frozen dataclasses and their checks); the three
ways of declaring (Python, TOML, BTF decl tags in the object) all build it,
and :mod:`dynbpf._features.application` runs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dynbpf.errors import FeatureMapError

if TYPE_CHECKING:
    from dynbpf._elf.spec import ObjectSpec

#: The requirement kinds and what their argument names (docs/features.md, "Requirements").
REQUIREMENT_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "capability": "a kernel capability `dynbpf probe` lists (trampolines, lsm, kprobe, ringbuf, …)",
        "program": "a program type the kernel loads (kprobe, tracing, lsm, …)",
        "map": "a map type the kernel creates (ringbuf, task_storage, …)",
        "helper": "a helper a program type may call: <program type>/<helper> (kprobe/bpf_get_current_task_btf)",
        "function": "a kernel function in the kernel's BTF (do_exit)",
        "tracepoint": "a tracepoint in tracefs: <category>/<event> (sched/sched_process_exec)",
        "kfunc": "a kfunc in the kernel's or a module's BTF (bpf_task_acquire)",
        "type": "a type in the kernel's BTF: struct|union|enum|typedef <name> (struct task_struct)",
    }
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One thing a variant needs of the kernel: ``kind:argument`` (``capability:trampolines``).

    A bare word is a capability (``"trampolines"``).
    """

    kind: str
    argument: str

    @classmethod
    def parse(cls, text: str | Requirement, *, where: str = "") -> Requirement:
        if isinstance(text, Requirement):
            return text
        if not isinstance(text, str):
            raise FeatureMapError(f"a requirement is a string like 'capability:trampolines', not {text!r}", where)
        kind, sep, argument = text.strip().partition(":")
        if not sep:
            kind, argument = "capability", kind
        kind, argument = kind.strip(), argument.strip()
        if kind not in REQUIREMENT_KINDS:
            known = ", ".join(REQUIREMENT_KINDS)
            raise FeatureMapError(f"requirement {text!r}: unknown kind {kind!r} (kinds: {known})", where)
        if not argument:
            raise FeatureMapError(f"requirement {text!r} names nothing: {kind} needs {REQUIREMENT_KINDS[kind]}", where)
        return cls(kind, argument)

    def __str__(self) -> str:
        return self.argument if self.kind == "capability" else f"{self.kind}:{self.argument}"


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to implement a hook: its programs, what they require, and their attach targets.

    ``attach`` maps a program to the keyword arguments of its ``attach()``
    (``{"trace_exit": {"category": "sched", "event": "sched_process_exit"}}``);
    a program not in it attaches where its section says. ``name`` defaults to
    the programs' names joined by ``+``.
    """

    programs: tuple[str, ...]
    requires: tuple[Requirement, ...] = ()
    attach: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    name: str = ""
    where: str = field(default="", compare=False)  # where it was declared, for messages

    def __post_init__(self) -> None:
        programs = (self.programs,) if isinstance(self.programs, str) else tuple(self.programs)
        where = self.where
        if not programs:
            raise FeatureMapError("a variant needs at least one program", where)
        for p in programs:
            if not isinstance(p, str) or not p:
                raise FeatureMapError(f"a variant's programs are program names, not {p!r}", where)
        if len(set(programs)) != len(programs):
            raise FeatureMapError(f"variant lists a program twice: {list(programs)}", where)
        requires = (self.requires,) if isinstance(self.requires, str | Requirement) else tuple(self.requires)
        attach = dict(self.attach)
        for program, target in attach.items():
            if program not in programs:
                raise FeatureMapError(f"attach targets for {program!r}, which is not one of {list(programs)}", where)
            if not isinstance(target, Mapping):
                raise FeatureMapError(f"attach targets for {program!r} must be a mapping of keywords", where)
        object.__setattr__(self, "programs", programs)
        object.__setattr__(self, "requires", tuple(Requirement.parse(r, where=where) for r in requires))
        object.__setattr__(self, "attach", MappingProxyType({p: MappingProxyType(dict(t)) for p, t in attach.items()}))
        object.__setattr__(self, "name", self.name or "+".join(programs))

    @classmethod
    def of(cls, value: Variant | str | Iterable[str], *, where: str = "") -> Variant:
        """A variant from a program name or a list of them (no requirements), or the variant itself."""
        if isinstance(value, Variant):
            return value
        return cls(value if isinstance(value, str) else tuple(value), where=where)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Hook:
    """A place a program must run, implemented by the first of ``variants`` that works here."""

    name: str
    variants: tuple[Variant, ...]
    where: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "hook", self.where)
        variants = (self.variants,) if isinstance(self.variants, Variant | str) else tuple(self.variants)
        variants = tuple(Variant.of(v, where=self.where) for v in variants)
        if not variants:
            raise FeatureMapError(f"hook {self.name!r} has no variants", self.where)
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise FeatureMapError(f"hook {self.name!r} names two variants alike: {names}", self.where)
        object.__setattr__(self, "variants", variants)

    @property
    def programs(self) -> tuple[str, ...]:
        return tuple(p for v in self.variants for p in v.programs)


@dataclass(frozen=True, slots=True)
class Feature:
    """A named set of hooks the application switches together.

    ``hooks`` must all work for the feature to be enabled; ``best_effort``
    hooks are attempted and reported but never fail it. ``requires`` names
    features that are switched on with this one.
    """

    name: str
    hooks: tuple[str, ...] = ()
    best_effort: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    where: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "feature", self.where)
        for attr in ("hooks", "best_effort", "requires"):
            value = getattr(self, attr)
            value = (value,) if isinstance(value, str) else tuple(value)
            for item in value:
                if not isinstance(item, str):
                    raise FeatureMapError(f"feature {self.name!r}: {attr} lists names, not {item!r}", self.where)
            object.__setattr__(self, attr, value)
        both = set(self.hooks) & set(self.best_effort)
        if both:
            raise FeatureMapError(f"feature {self.name!r}: {sorted(both)} both required and best-effort", self.where)
        if not self.hooks and not self.best_effort:
            raise FeatureMapError(f"feature {self.name!r} has no hooks", self.where)

    @property
    def all_hooks(self) -> tuple[str, ...]:
        return self.hooks + self.best_effort


@dataclass(frozen=True, slots=True)
class FeatureMap:
    """Every feature and hook of an application, checked to be consistent with each other.

    Build it with :meth:`of` from features and hooks (``Hook`` objects, or
    ``{hook: [variants]}``), read it from TOML (:meth:`from_toml`) or from the
    decl tags of an object (:meth:`from_object`); :meth:`check` then checks it
    against an object's programs. ``source`` says where it was declared; like
    every ``where``, it takes no part in equality, so one map declared in
    Python, in TOML and in tags compares equal.
    """

    features: Mapping[str, Feature]
    hooks: Mapping[str, Hook]
    source: str = field(default="", compare=False)

    @classmethod
    def of(
        cls,
        features: Iterable[Feature],
        hooks: Iterable[Hook] | Mapping[str, Iterable[Variant | str] | Variant | str],
        *,
        source: str = "",
    ) -> FeatureMap:
        if isinstance(hooks, Mapping):
            hook_list = [h if isinstance(h, Hook) else Hook(name, h) for name, h in hooks.items()]  # type: ignore[arg-type]
        else:
            hook_list = list(hooks)
        by_name: dict[str, Hook] = {}
        for h in hook_list:
            if h.name in by_name:
                raise FeatureMapError(f"hook {h.name!r} is declared twice", h.where)
            by_name[h.name] = h
        feats: dict[str, Feature] = {}
        for f in features:
            if f.name in feats:
                raise FeatureMapError(f"feature {f.name!r} is declared twice", f.where)
            feats[f.name] = f
        result = cls(MappingProxyType(feats), MappingProxyType(by_name), source)
        result._check_consistent()
        return result

    @classmethod
    def from_toml(cls, source: str | os.PathLike[str], *, name: str | None = None) -> FeatureMap:
        """The map declared in a TOML file (a path) or in TOML text (a ``str`` with a newline, or with ``=``
        and naming no file).

        ``name`` is what errors call the text; every error's ``where`` is
        ``file:line`` (docs/features.md, "Declaring features").
        """
        from dynbpf._features import toml

        return toml.load(source, name=name)

    @classmethod
    def from_object(
        cls, source: ObjectSpec | str | os.PathLike[str] | bytes, *, name: str | None = None
    ) -> FeatureMap | None:
        """The map an object carries in ``dynbpf:`` BTF decl tags on its programs; None if it has none.

        ``source`` is an object's path, bytes or :class:`~dynbpf.ObjectSpec`;
        ``name`` is what errors call the object (default: its file name).
        """
        from dynbpf._features import tags

        return tags.load(source, name=name)

    def _check_consistent(self) -> None:
        owner: dict[str, str] = {}
        for h in self.hooks.values():
            for p in h.programs:
                if p in owner and owner[p] != h.name:
                    raise FeatureMapError(f"program {p!r} is in two hooks, {owner[p]!r} and {h.name!r}", h.where)
                owner[p] = h.name
        used: set[str] = set()
        for f in self.features.values():
            for name in f.all_hooks:
                if name not in self.hooks:
                    message = f"feature {f.name!r} lists unknown hook {name!r}{_close(name, self.hooks)}"
                    raise FeatureMapError(message, f.where)
                used.add(name)
            for r in f.requires:
                if r not in self.features:
                    raise FeatureMapError(
                        f"feature {f.name!r} requires unknown feature {r!r}{_close(r, self.features)}", f.where
                    )
        for hook in self.hooks.values():
            if hook.name not in used:
                raise FeatureMapError(f"hook {hook.name!r} is in no feature", hook.where)
        for f in self.features.values():
            self.closure(f.name)  # raises on a cycle

    def closure(self, feature: str) -> tuple[str, ...]:
        """``feature`` and every feature it requires, directly or not (required ones first)."""
        order: list[str] = []
        path: list[str] = []

        def visit(name: str) -> None:
            if name in path:
                cycle = " -> ".join([*path[path.index(name) :], name])
                raise FeatureMapError(f"features require each other in a cycle: {cycle}", self.features[name].where)
            if name in order:
                return
            path.append(name)
            for r in self.features[name].requires:
                visit(r)
            path.pop()
            order.append(name)

        if feature not in self.features:
            raise FeatureMapError(f"no feature {feature!r}{_close(feature, self.features)}")
        visit(feature)
        return tuple(order)

    def hook_of(self, program: str) -> str | None:
        for h in self.hooks.values():
            if program in h.programs:
                return h.name
        return None

    def check(self, programs: Iterable[str]) -> None:
        """Raise unless every program the map names is one of ``programs`` (an object's)."""
        known = set(programs)
        for h in self.hooks.values():
            for v in h.variants:
                for p in v.programs:
                    if p not in known:
                        raise FeatureMapError(
                            f"hook {h.name!r}, variant {v.name!r}: no program {p!r} in the object{_close(p, known)}",
                            v.where or h.where,
                        )


def _check_name(name: object, what: str, where: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FeatureMapError(f"{what} name {name!r}: use letters, digits, '_', '.' or '-'", where)


def _close(name: str, known: Iterable[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(map(repr, near))}?)" if near else ""
