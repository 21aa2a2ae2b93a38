"""CO-RE access strings: what a relocation points at, in local and in kernel types.

clang records each relocatable access as a root type and a string of
indices, ``"0:1:3"``: the first index steps over the root pointer (``&p[0]``),
each further one picks a member or an array element. :func:`parse` walks the
string through the object's own types; :func:`match` finds the same named
members and array elements in a kernel candidate, searching through anonymous
structs and unions as needed, so ``"0:12:0"`` locally may become ``"0:40:1:0"``
in the kernel.

An :class:`Access` keeps two views, as libbpf does: ``raw`` is every index
walked (anonymous members included) and ``steps`` only the turning points a
C programmer wrote — named members and array indices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dynbpf._btf import graph
from dynbpf._btf.core_compat import essential_name, fields_compatible, skip
from dynbpf._btf.ext import CoreReloKind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Array, Enum, Enum64, Struct, Union
from dynbpf.errors import ObjectFormatError, RelocationError

MAX_LEN = 64
"""Indices one access may hold (libbpf's ``BPF_CORE_SPEC_MAX_LEN``)."""

FIELD_KINDS = frozenset(
    {
        CoreReloKind.FIELD_BYTE_OFFSET,
        CoreReloKind.FIELD_BYTE_SIZE,
        CoreReloKind.FIELD_EXISTS,
        CoreReloKind.FIELD_SIGNED,
        CoreReloKind.FIELD_LSHIFT_U64,
        CoreReloKind.FIELD_RSHIFT_U64,
    }
)
TYPE_KINDS = frozenset(
    {
        CoreReloKind.TYPE_ID_LOCAL,
        CoreReloKind.TYPE_ID_TARGET,
        CoreReloKind.TYPE_EXISTS,
        CoreReloKind.TYPE_SIZE,
        CoreReloKind.TYPE_MATCHES,
    }
)
ENUMVAL_KINDS = frozenset({CoreReloKind.ENUMVAL_EXISTS, CoreReloKind.ENUMVAL_VALUE})

_ACCESS = re.compile(r"\d+(?::\d+)*")
_S32_MAX = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Step:
    """One turning point: member ``index`` of struct/union ``type_id`` called ``name``,
    or (``name`` None) element ``index`` of an array whose element type is ``type_id``."""

    type_id: int
    index: int
    name: str | None


@dataclass(frozen=True, slots=True)
class Access:
    """A relocation's target resolved in one BTF (local or a kernel candidate)."""

    btf: Spec
    root_id: int
    kind: CoreReloKind
    steps: tuple[Step, ...]
    raw: tuple[int, ...]
    bit_offset: int


def size(spec: Spec, type_id: int) -> int:
    """Byte size of ``type_id``; a type without one cannot be relocated."""
    try:
        return graph.size_of(spec, type_id)
    except ObjectFormatError as e:
        raise RelocationError(str(e)) from None


def parse(btf: Spec, root_id: int, access: str, kind: CoreReloKind) -> Access:
    """Walk ``access`` through the object's own types (``bpf_core_parse_spec``)."""
    if not _ACCESS.fullmatch(access):
        raise RelocationError(f"malformed access string {access!r}")
    if kind in TYPE_KINDS:
        if access != "0":
            raise RelocationError(f"type relocation with access string {access!r} (must be '0')")
        return Access(btf, root_id, kind, (), (), 0)
    raw = tuple(int(i) for i in access.split(":"))
    if len(raw) > MAX_LEN:
        raise RelocationError(f"access string has {len(raw)} indices (at most {MAX_LEN})")
    if any(i > _S32_MAX for i in raw):
        raise RelocationError(f"access index out of range in {access!r}")
    type_id, t = skip(btf, root_id)
    first = raw[0]

    if kind in ENUMVAL_KINDS:
        if not isinstance(t, Enum | Enum64) or len(raw) > 1 or first >= len(t.values):
            raise RelocationError(f"enum value relocation {access!r} does not name an enumerator of [{root_id}]")
        return Access(btf, root_id, kind, (Step(type_id, first, t.values[first].name),), raw, 0)

    bit_offset = first * size(btf, type_id) * 8
    steps = [Step(type_id, first, None)]
    for i, index in enumerate(raw[1:], 1):
        type_id, t = skip(btf, type_id)
        if isinstance(t, Struct | Union):
            if index >= len(t.members):
                raise RelocationError(f"access {access!r}: member #{index} of [{type_id}] does not exist")
            m = t.members[index]
            bit_offset += m.bit_offset
            if m.name:
                steps.append(Step(type_id, index, m.name))
            type_id = m.type
        elif isinstance(t, Array):
            elem_id, _ = skip(btf, t.type)
            if not _is_flexible(btf, steps[-1], t) and index >= t.nelems:
                raise RelocationError(f"access {access!r}: index {index} is past the end of array [{type_id}]")
            steps.append(Step(elem_id, index, None))
            bit_offset += index * size(btf, elem_id) * 8
            type_id = elem_id
        else:
            what = "void" if t is None else t.kind.name
            raise RelocationError(
                f"access {access!r} (at index {i}) reaches [{type_id}], a {what}, not a struct or array"
            )
    return Access(btf, root_id, kind, tuple(steps), raw, bit_offset)


def _is_flexible(btf: Spec, last: Step, array: Array) -> bool:
    """A zero-length array that is the last member of its struct: any index goes."""
    if last.name is None or array.nelems > 0:
        return False
    parent = btf[last.type_id]
    assert isinstance(parent, Struct | Union)
    return last.index == len(parent.members) - 1


def match(local: Access, target: Spec, target_id: int) -> Access | None:
    """The same access in kernel candidate ``target_id``, or None if it has no such member or enumerator.

    Field and enum relocations only; type relocations compare whole types
    (:mod:`dynbpf._btf.core_compat`).
    """
    if local.kind in ENUMVAL_KINDS:
        return _match_enumerator(local, target, target_id)
    return _FieldMatcher(local, target, target_id).run()


def _match_enumerator(local: Access, target: Spec, target_id: int) -> Access | None:
    type_id, t = skip(target, target_id)
    if not isinstance(t, Enum | Enum64):
        return None
    name = local.steps[0].name
    assert name is not None
    wanted = essential_name(name)
    for i, v in enumerate(t.values):
        if essential_name(v.name) == wanted:
            return Access(target, target_id, local.kind, (Step(type_id, i, v.name),), (i,), 0)
    return None


class _FieldMatcher:
    """``bpf_core_spec_match`` for fields: state shared by the recursive member search."""

    def __init__(self, local: Access, target: Spec, target_id: int) -> None:
        self.local = local
        self.target = target
        self.root_id = target_id
        self.steps: list[Step] = []
        self.raw: list[int] = []
        self.bit_offset = 0

    def run(self) -> Access | None:
        target, type_id = self.target, self.root_id
        for i, step in enumerate(self.local.steps):
            type_id, t = skip(target, type_id)
            if step.name is not None:
                found = self._member(step, type_id)
                if found is None:
                    return None
                type_id = found
                continue
            if i > 0:
                if not isinstance(t, Array):
                    return None
                if not _is_flexible(target, self.steps[-1], t) and step.index >= t.nelems:
                    return None
                type_id, _ = skip(target, t.type)
            self._push_raw(step.index)
            self.steps.append(Step(type_id, step.index, None))
            self.bit_offset += step.index * size(target, type_id) * 8
        return Access(target, self.root_id, self.local.kind, tuple(self.steps), tuple(self.raw), self.bit_offset)

    def _push_raw(self, index: int) -> None:
        if len(self.raw) == MAX_LEN:
            raise RelocationError(f"kernel type nests deeper than {MAX_LEN} levels")
        self.raw.append(index)

    def _member(self, step: Step, type_id: int) -> int | None:
        """Find member ``step.name`` in ``type_id`` or its anonymous members; the member's type id, if compatible."""
        type_id, t = skip(self.target, type_id)
        if not isinstance(t, Struct | Union):
            return None
        local_parent = self.local.btf[step.type_id]
        assert isinstance(local_parent, Struct | Union)
        local_member = local_parent.members[step.index]
        for i, m in enumerate(t.members):
            self._push_raw(i)
            self.bit_offset += m.bit_offset
            if not m.name:
                found = self._member(step, m.type)
                if found is not None:
                    return found
            elif m.name == local_member.name:
                if not fields_compatible(self.local.btf, local_member.type, self.target, m.type):
                    return None
                self.steps.append(Step(type_id, i, m.name))
                return m.type
            self.bit_offset -= m.bit_offset
            self.raw.pop()
        return None
