"""Does the running kernel meet a variant's requirement? The answer, and the evidence for it.

A variant of a hook is tried only where the kernel meets everything it
requires, and the choice is reported with its reasons, so every answer is a
:class:`~dynbpf._probes.result.Support` whose ``how`` a person can read:
which probe ran and what the kernel said ("trampolines: tracing program
(trace_fentry -> bpf_fentry_test1) load -> EPERM"), or where a name was
looked up ("function do_exit: FUNC in vmlinux BTF [id 75792]").

Kernel capabilities, program types, map types and helpers are answered by
the probes of :mod:`dynbpf._probes` (cached per process there; transient
refusals are asked again). Functions, kfuncs and types are looked up in the
kernel's BTF (vmlinux, then loaded modules), tracepoints in tracefs; those
answers are cached here the same way, and :func:`dynbpf._probes.clear_cache`
forgets them too.

A requirement naming something dynbpf does not know (a misspelt capability,
program type or helper) is a mistake in the declaration, not a kernel's
refusal: :func:`validate` finds it without asking the kernel, and
:func:`check` raises for it as well, :class:`~dynbpf.errors.FeatureMapError`
with the closest names.
"""

from __future__ import annotations

import enum
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from dynbpf._btf import Kind, kernel
from dynbpf._btf.types import DeclTag
from dynbpf._features.model import REQUIREMENT_KINDS, Requirement, _close
from dynbpf._probes.capabilities import ALIASES, CAPABILITIES
from dynbpf._probes.maps import map_type
from dynbpf._probes.programs import helper, helper_name, prog_type
from dynbpf._probes.result import Support, cached
from dynbpf._sys import fs
from dynbpf._sys.constants import HELPER_NAMES, MapType, ProgType
from dynbpf.errors import DynbpfError, FeatureMapError, KernelUnsupported

#: ``type:`` requirements: the C keyword and the BTF kinds it names.
TYPE_KEYWORDS: Mapping[str, tuple[Kind, ...]] = MappingProxyType(
    {
        "struct": (Kind.STRUCT,),
        "union": (Kind.UNION,),
        "enum": (Kind.ENUM, Kind.ENUM64),
        "typedef": (Kind.TYPEDEF,),
    }
)

#: The decl tag the kernel's BTF puts on every kfunc (pahole >= 1.26 with decl_tag_kfuncs).
KFUNC_TAG = "bpf_kfunc"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRACEFS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

E = TypeVar("E", bound=enum.IntEnum)


def validate(req: Requirement, *, where: str = "") -> None:
    """Raise :class:`FeatureMapError` unless ``req`` names something dynbpf knows; the kernel is not asked.

    Capabilities, program types, map types and helpers must exist by name;
    functions, kfuncs, types and tracepoints need only be well-formed,
    since whether this kernel has them is :func:`check`'s question.
    ``where`` (a file and line, a decl tag) goes into the error.
    """
    _question(req, where)


def check(req: Requirement, *, where: str = "") -> Support:
    """Whether the running kernel meets ``req``; ``how`` is the evidence.

    The answer is named ``str(req)``. Raises :class:`FeatureMapError` as
    :func:`validate` does.
    """
    return _question(req, where)()


def _question(req: Requirement, where: str) -> Callable[[], Support]:
    """Check ``req``'s argument and return the call that asks the kernel."""
    arg = req.argument
    if req.kind == "capability":
        name = ALIASES.get(arg, arg)
        probe = CAPABILITIES.get(name)
        if probe is None:
            raise _unknown(req, where, "capability", [*CAPABILITIES, *ALIASES], _other_kind(arg), asked=arg)
        label = arg if name == arg else f"{arg} ({name})"
        return lambda: _relabel(req, label, probe())
    if req.kind == "program":
        pt = _enum_member(req, where, ProgType, arg, "program type")
        return lambda: _relabel(req, f"program type {arg}", prog_type(pt))
    if req.kind == "map":
        mt = _enum_member(req, where, MapType, arg, "map type")
        return lambda: _relabel(req, f"map type {arg}", map_type(mt))
    if req.kind == "helper":
        program, sep, name = arg.partition("/")
        if not sep:
            raise _malformed(req, where)
        pt = _enum_member(req, where, ProgType, program.strip(), "program type")
        helper_id = _helper_id(req, where, name.strip())
        label = f"helper {pt.name.lower()}/{helper_name(helper_id)}"
        return lambda: _relabel(req, label, helper(pt, helper_id))
    if req.kind in ("function", "kfunc"):
        if not _IDENTIFIER.fullmatch(arg):
            raise _malformed(req, where)
        return functools.partial(_function if req.kind == "function" else _kfunc, arg)
    if req.kind == "tracepoint":
        category, sep, event = arg.partition("/")
        if not (sep and _TRACEFS_NAME.fullmatch(category) and _TRACEFS_NAME.fullmatch(event)):
            raise _malformed(req, where)
        return functools.partial(_tracepoint, category, event)
    if req.kind == "type":
        words = arg.split()
        if len(words) != 2 or words[0] not in TYPE_KEYWORDS or not _IDENTIFIER.fullmatch(words[1]):
            raise _malformed(req, where)
        return functools.partial(_type, words[0], words[1])
    known = ", ".join(REQUIREMENT_KINDS)
    raise FeatureMapError(f"requirement {str(req)!r}: unknown kind {req.kind!r} (kinds: {known})", where)


def _relabel(req: Requirement, label: str, probe: Support) -> Support:
    """A probe's answer named after the requirement, its evidence prefixed with what was asked."""
    return Support(str(req), probe.supported, f"{label}: {probe.how}", probe.transient)


def by_name(enum_type: type[E], name: str) -> E | None:
    """The member of a uapi enum by its lowercase name (``kprobe`` -> ``ProgType.KPROBE``); never UNSPEC."""
    member = enum_type.__members__.get(name.upper()) if name == name.lower() else None
    return member if member is not None and member.value != 0 else None


def _enum_member(req: Requirement, where: str, enum_type: type[E], name: str, what: str) -> E:
    """:func:`by_name`, or the declaration error naming the closest members."""
    member = by_name(enum_type, name)
    if member is None:
        canonical = [m.name.lower() for m in enum_type if m.value != 0]
        raise _unknown(req, where, what, canonical, asked=name, near=name.lower())
    return member


@functools.cache
def _helper_ids() -> dict[str, int]:
    """``bpf_<name>`` -> helper id, the reverse of :data:`HELPER_NAMES`."""
    return {helper_name(i): i for i in range(1, len(HELPER_NAMES))}


def _helper_id(req: Requirement, where: str, name: str) -> int:
    ids = _helper_ids()
    full = name if name.startswith("bpf_") else f"bpf_{name}"
    if full not in ids:
        raise _unknown(req, where, "helper", ids, asked=name, near=full)
    return ids[full]


def _other_kind(name: str) -> str:
    """A hint when a capability is really a program or map type's name (``hash`` -> ``map:hash``)."""
    for kind, enum_type in (("program", ProgType), ("map", MapType)):
        if by_name(enum_type, name) is not None:
            return f"; {name!r} is a {kind} type: require it as '{kind}:{name}'"
    return ""


def _unknown(
    req: Requirement, where: str, what: str, known: Iterable[str], hint: str = "", *, asked: str, near: str = ""
) -> FeatureMapError:
    """``asked`` is the name as written; close matches are sought for ``near`` (its normal spelling) if given."""
    message = f"requirement {str(req)!r}: no {what} {asked!r}{_close(near or asked, known)}"
    if hint:
        message += hint
    elif what == "capability":
        message += " (capabilities are the names `dynbpf probe` lists under 'Verifier and runtime' and 'Attach kinds')"
    return FeatureMapError(message, where)


def _malformed(req: Requirement, where: str) -> FeatureMapError:
    return FeatureMapError(f"requirement {str(req)!r}: {req.kind} needs {REQUIREMENT_KINDS[req.kind]}", where)


def _search(name: str, kinds: tuple[Kind, ...]) -> tuple[str, int] | str:
    """Where kernel BTF has ``name`` (module or vmlinux, id), or why not, as evidence."""
    try:
        found = kernel.search(name, kinds)
        if found is not None:
            return found
        if kernel.vmlinux() is None:
            return f"the kernel has no BTF ({kernel.VMLINUX_PATH} does not exist)"
        modules = len(kernel.module_names())
    except KernelUnsupported as e:
        return str(e)
    kind_names = "/".join(k.name for k in kinds)
    also = "no loaded module has BTF" if not modules else f"nor in the BTF of the {modules} loaded modules"
    return f"no {kind_names} {name} in vmlinux BTF ({also})"


def _where(found: tuple[str, int], kind: Kind) -> str:
    module, type_id = found
    return f"{kind.name} in {'vmlinux' if module == 'vmlinux' else f'module {module}'} BTF [id {type_id}]"


@cached
def _function(name: str) -> Support:
    found = _search(name, (Kind.FUNC,))
    if isinstance(found, str):
        return Support(f"function:{name}", False, f"function {name}: {found}")
    return Support(f"function:{name}", True, f"function {name}: {_where(found, Kind.FUNC)}")


@cached
def _kfunc(name: str) -> Support:
    """A FUNC in kernel BTF that carries the kfunc decl tag, where the kernel tags its kfuncs.

    A kernel whose BTF tags no kfunc at all (built with pahole before 1.26)
    cannot tell a kfunc from any other function; there the FUNC's presence
    is the only evidence, and the answer says so.
    """
    found = _search(name, (Kind.FUNC,))
    if isinstance(found, str):
        return Support(f"kfunc:{name}", False, f"kfunc {name}: {found}")
    module, type_id = found
    where = _where(found, Kind.FUNC)
    spec = kernel.vmlinux() if module == "vmlinux" else kernel.module(module)
    assert spec is not None  # found in it
    tags = (spec[i] for i in spec.find(KFUNC_TAG, Kind.DECL_TAG))
    tagged = {t.type for t in tags if isinstance(t, DeclTag) and t.component_idx == -1}
    if type_id in tagged:
        return Support(f"kfunc:{name}", True, f"kfunc {name}: {where}, tagged {KFUNC_TAG}")
    if tagged:
        how = f"kfunc {name}: {where} without the {KFUNC_TAG} decl tag this kernel's {len(tagged)} kfuncs carry"
        return Support(f"kfunc:{name}", False, f"{how}: a kernel function, not a kfunc")
    how = f"kfunc {name}: {where} (this kernel's BTF tags no kfunc {KFUNC_TAG}, so presence is all it shows)"
    return Support(f"kfunc:{name}", True, how)


@cached
def _type(keyword: str, name: str) -> Support:
    label = f"type {keyword} {name}"
    kinds = TYPE_KEYWORDS[keyword]
    found = _search(name, kinds)
    if isinstance(found, str):
        return Support(f"type:{keyword} {name}", False, f"{label}: {found}")
    spec = kernel.vmlinux() if found[0] == "vmlinux" else kernel.module(found[0])
    assert spec is not None  # found in it
    return Support(f"type:{keyword} {name}", True, f"{label}: {_where(found, spec.kind(found[1]))}")


@cached
def _tracepoint(category: str, event: str) -> Support:
    name = f"tracepoint:{category}/{event}"
    label = f"tracepoint {category}/{event}"
    root = fs.tracefs_root()
    try:
        tp_id = fs.tracepoint_id(category, event, root=root)
    except DynbpfError as e:
        return Support(name, False, f"{label}: {e}")
    path = os.path.join(root or "", "events", category, event, "id")
    return Support(name, True, f"{label}: {path} exists (id {tp_id})")
