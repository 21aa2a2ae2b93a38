"""A feature map an object carries itself, in BTF decl tags on its programs.

clang (14 and later) records ``__attribute__((btf_decl_tag("…")))`` on a
function as a DECL_TAG record naming the function's BTF FUNC; the macros of
``dynbpf.h`` (in :func:`include_dir`) write the tags read here, one fact per
tag (docs/features.md, "Declaring features"):

==================================  ==============================================================
``dynbpf:feature=<name>``           the program's hook is a required hook of that feature (repeatable)
``dynbpf:best_effort``              ... a best-effort one, in every feature this program names
``dynbpf:hook=<name>``              the hook (default: the program's name)
``dynbpf:variant=<name>``           programs of one hook and variant name form one variant
                                    (default: the program's name)
``dynbpf:prefer=<int>``             the variant's place in its hook, lower first (default 0; ties
                                    in program order)
``dynbpf:requires=<requirement>``   what the variant needs of the kernel (repeatable)
``dynbpf:attach.<keyword>=<value>`` an ``attach()`` keyword for the program (digits: an int)
``dynbpf:feature_requires=<f>:<g>`` feature ``f`` switches ``g`` on with it (on any program)
==================================  ==============================================================

Tags not starting with ``dynbpf:`` are someone else's and ignored. The
tags stay in the BTF the object loads with; for a kernel without DECL_TAG
they are sanitised away like every other tag (:mod:`dynbpf._prepare.btf_sanitize`).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynbpf._btf.kinds import Kind
from dynbpf._btf.types import DeclTag
from dynbpf._elf.names import source_name
from dynbpf._features.model import Feature, FeatureMap, Hook, Requirement, Variant, _check_name
from dynbpf.errors import FeatureMapError

if TYPE_CHECKING:
    from dynbpf._btf.spec import Spec
    from dynbpf._elf.spec import ObjectSpec

PREFIX = "dynbpf:"
#: every tag key, with whether it takes a value; ``attach.<keyword>`` is the one family of keys
KEYS = {
    "feature": True,
    "best_effort": False,
    "hook": True,
    "variant": True,
    "prefer": True,
    "requires": True,
    "attach": True,
    "feature_requires": True,
}
_REPEATABLE = ("feature", "requires", "feature_requires")
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def include_dir() -> Path:
    """The directory holding ``dynbpf.h``, the macros that write these tags: pass it to clang's ``-I``."""
    return Path(__file__).resolve().parent.parent / "include"


def load(source: ObjectSpec | str | os.PathLike[str] | bytes, *, name: str | None = None) -> FeatureMap | None:
    """The feature map in ``source``'s decl tags (a path, the object's bytes or its spec); None without any."""
    from dynbpf._elf.reader import read
    from dynbpf._elf.spec import ObjectSpec

    if isinstance(source, ObjectSpec):
        return from_spec(source, name or source.name)
    if isinstance(source, str | os.PathLike):
        return from_spec(read(source, lazy=True), name or Path(source).name)
    if isinstance(source, bytes | bytearray | memoryview):
        spec = read(source, lazy=True)
        return from_spec(spec, name or spec.name)
    raise TypeError(f"from_object() takes an ObjectSpec, a path or an object's bytes, not {type(source).__name__}")


@dataclass
class _Program:
    """What the tags on one program say."""

    name: str
    first: str = ""  # where its first hook-making tag is: what "in no hook" blames
    features: dict[str, str] = field(default_factory=dict)  # feature -> where its tag is
    best_effort: str = ""  # where the tag is; "" if the program has none
    hook: tuple[str, str] | None = None  # (name, where)
    variant: tuple[str, str] | None = None
    prefer: tuple[int, str] | None = None
    requires: list[Requirement] = field(default_factory=list)
    attach: dict[str, Any] = field(default_factory=dict)
    said: set[str] = field(default_factory=set)  # keys of the tags that take one value, seen so far

    @property
    def hook_name(self) -> str:
        return self.hook[0] if self.hook else self.name

    @property
    def variant_name(self) -> str:
        return self.variant[0] if self.variant else self.name


def from_spec(spec: ObjectSpec, file: str) -> FeatureMap | None:
    """The feature map ``spec``'s tags declare; ``file`` names the object in errors."""
    btf = spec.btf
    if btf is None or PREFIX.encode() not in btf.strings.own_bytes():
        return None  # no tag of ours can exist: nothing decoded
    found = [
        (type_id, t)
        for type_id in range(btf.first_id, len(btf))
        if btf.kind(type_id) == Kind.DECL_TAG and isinstance(t := btf[type_id], DeclTag) and t.name.startswith(PREFIX)
    ]
    if not found:
        return None
    owners = _programs_by_func(spec, btf)
    programs: dict[str, _Program] = {}
    requires: list[tuple[str, str, str]] = []  # (feature, required feature, where)
    for _, tag in found:
        program = _owner(spec, btf, owners, tag, file)
        where = f"{file}: decl tag {tag.name!r} on {program}"
        decl = programs.setdefault(program, _Program(program))
        fact = _read_fact(tag.name, where, decl)
        if fact is not None:
            requires.append((*fact, where))
    order = {name: i for i, name in enumerate(spec.programs)}
    members = sorted((p for p in programs.values() if p.first), key=lambda p: order[p.name])
    return _assemble(members, requires, file)


def _programs_by_func(spec: ObjectSpec, btf: Spec) -> dict[int, str]:
    """Each program by its BTF FUNC: found by name, without decoding the program, where the name is
    unambiguous, else by the program's func_info (a linked object may hold a static function of the
    same name: the reader refuses static programs, so a program's name is unique among programs)."""
    owners: dict[int, str] = {}
    for name, program in spec.programs.items():
        ids = btf.find(source_name(name), Kind.FUNC)
        func = ids[0] if len(ids) == 1 else program.function.func_type_id
        if func:
            owners[func] = name
    return owners


def _owner(spec: ObjectSpec, btf: Spec, owners: dict[int, str], tag: DeclTag, file: str) -> str:
    """The program ``tag`` is on; a tag anywhere else is an error naming what it is on."""
    program = owners.get(tag.type)
    target_name = getattr(btf[tag.type], "name", "")
    kind = btf.kind(tag.type)
    if program is not None:
        what = program
    elif kind == Kind.FUNC:  # decoding subprograms only to name the culprit
        subprograms = [n for n, f in spec.subprograms.items() if f.func_type_id == tag.type]
        what = f"subprogram {subprograms[0]}" if subprograms else f"function {target_name!r}"
    else:
        what = f"{kind.name} {target_name!r}"
    where = f"{file}: decl tag {tag.name!r} on {what}"
    if tag.component_idx != -1:
        raise FeatureMapError(
            f"dynbpf tags go on a program's function, not on its parameter {tag.component_idx}", where
        )
    if program is None:
        raise FeatureMapError(f"dynbpf tags go on programs (functions in a program section), not on {what}", where)
    return program


def _read_fact(text: str, where: str, decl: _Program) -> tuple[str, str] | None:
    """Record what the tag ``text`` says in ``decl``; a ``feature_requires`` is returned, not recorded."""
    key, sep, value = text[len(PREFIX) :].partition("=")
    family, dot, keyword = key.partition(".")
    if family not in KEYS or (dot and family != "attach") or (family == "attach" and not dot):
        known = [k for k in KEYS if k != "attach"] + ["attach.<keyword>"]
        near = ["attach.<keyword>"] if family == "attach" else difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean 'dynbpf:{near[0]}'?" if near else f"known: {', '.join(known)}"
        raise FeatureMapError(f"unknown dynbpf tag {key!r} ({hint})", where)
    if KEYS[family] and not value:
        raise FeatureMapError(f"dynbpf:{key} needs a value: 'dynbpf:{key}=…'", where)
    if not KEYS[family] and sep:
        raise FeatureMapError(f"dynbpf:{key} takes no value", where)
    if family == "feature_requires":
        feature, colon, required = value.partition(":")
        if not colon or not feature or not required:
            raise FeatureMapError(f"dynbpf:feature_requires takes '<feature>:<required feature>', not {value!r}", where)
        _check_name(feature, "feature", where)
        _check_name(required, "feature", where)
        return feature, required
    decl.first = decl.first or where
    if family not in _REPEATABLE:
        if key in decl.said:
            raise FeatureMapError(f"{decl.name} has a second dynbpf:{key} tag (it takes one)", where)
        decl.said.add(key)
    if family == "feature":
        _check_name(value, "feature", where)
        decl.features.setdefault(value, where)
    elif family == "best_effort":
        decl.best_effort = where
    elif family == "hook":
        _check_name(value, "hook", where)
        decl.hook = (value, where)
    elif family == "variant":
        _check_name(value, "variant", where)
        decl.variant = (value, where)
    elif family == "prefer":
        if not _INTEGER.fullmatch(value):
            raise FeatureMapError(f"dynbpf:prefer takes an integer (lower is preferred), not {value!r}", where)
        decl.prefer = (int(value), where)
    elif family == "requires":
        requirement = Requirement.parse(value, where=where)
        if requirement not in decl.requires:
            decl.requires.append(requirement)
    else:  # attach.<keyword>
        if not _KEYWORD.fullmatch(keyword):
            raise FeatureMapError(f"dynbpf:attach.{keyword}: the keyword must be a Python identifier", where)
        decl.attach[keyword] = int(value) if _DIGITS.fullmatch(value) else value
    return None


def _assemble(programs: list[_Program], requires: list[tuple[str, str, str]], file: str) -> FeatureMap:
    """Hooks from the programs' hook and variant names, features from their feature tags, in program order."""
    groups: dict[str, dict[str, list[_Program]]] = {}
    for p in programs:
        groups.setdefault(p.hook_name, {}).setdefault(p.variant_name, []).append(p)
    hooks = [_hook(name, variants) for name, variants in groups.items()]
    required: dict[str, dict[str, tuple[bool, str]]] = {}  # feature -> hook -> (best effort?, where)
    where_of: dict[str, str] = {}
    for p in programs:
        for feature, where in p.features.items():
            where_of.setdefault(feature, where)
            hook_tags = required.setdefault(feature, {})
            best = bool(p.best_effort)
            earlier = hook_tags.setdefault(p.hook_name, (best, where))
            if earlier[0] != best:
                said = "best-effort" if earlier[0] else "required"
                raise FeatureMapError(
                    f"hook {p.hook_name!r} is {said} in feature {feature!r} by {earlier[1]}, "
                    f"but {'best-effort' if best else 'required'} here",
                    p.best_effort or where,
                )
        if p.best_effort and not p.features:
            raise FeatureMapError(f"{p.name} is best-effort in no feature: it names none", p.best_effort)
    in_feature = {h for hook_tags in required.values() for h in hook_tags}
    for p in programs:
        if p.hook_name not in in_feature:
            raise FeatureMapError(
                f"program {p.name!r} is in no hook of any feature: no program of its hook {p.hook_name!r} "
                "has a dynbpf:feature tag",
                p.first,
            )
    needs: dict[str, list[str]] = {}
    for feature, needed, where in requires:
        for name in (feature, needed):
            if name not in required:
                near = difflib.get_close_matches(name, list(required), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise FeatureMapError(f"no program's dynbpf:feature tag declares feature {name!r}{hint}", where)
        if feature not in needs:
            where_of[feature] = where  # its first requires tag: what a cycle through it is blamed on
        if needed not in needs.setdefault(feature, []):
            needs[feature].append(needed)
    features = [
        Feature(
            name,
            hooks=tuple(h for h, (best, _) in hook_tags.items() if not best),
            best_effort=tuple(h for h, (best, _) in hook_tags.items() if best),
            requires=tuple(needs.get(name, ())),
            where=where_of[name],
        )
        for name, hook_tags in required.items()
    ]
    return FeatureMap.of(features, hooks, source=file)


def _hook(name: str, variants: dict[str, list[_Program]]) -> Hook:
    built: list[tuple[int, int, Variant]] = []
    for rank, (variant, members) in enumerate(variants.items()):
        prefers = [p.prefer for p in members if p.prefer is not None]
        for value, where in prefers[1:]:
            if value != prefers[0][0]:
                raise FeatureMapError(
                    f"the programs of variant {variant!r} disagree on dynbpf:prefer: {prefers[0][0]} at "
                    f"{prefers[0][1]}, {value} here",
                    where,
                )
        prefer = prefers[0][0] if prefers else 0
        first = members[0]
        requires: list[Requirement] = []
        for p in members:
            requires += [r for r in p.requires if r not in requires]
        where = first.variant[1] if first.variant else first.first
        built.append(
            (
                prefer,
                rank,
                Variant(
                    tuple(p.name for p in members),
                    tuple(requires),
                    {p.name: p.attach for p in members if p.attach},
                    variant,
                    where=where,
                ),
            )
        )
    first = next(iter(variants.values()))[0]
    hook_where = next((p.hook[1] for ps in variants.values() for p in ps if p.hook), first.first)
    return Hook(name, tuple(v for _, _, v in sorted(built, key=lambda b: b[:2])), where=hook_where)
