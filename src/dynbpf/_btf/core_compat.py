"""When a local type may stand for a kernel type: libbpf's CO-RE relations.

Three relations, each as loose or strict as libbpf makes it (``relo_core.c``):

- :func:`fields_compatible` — may a field of one type be read as a field of
  the other? (field relocations: composites mix freely, integers of any size)
- :func:`types_compatible` — is the kernel type a version of the local one?
  (``TYPE_EXISTS``, ``TYPE_SIZE``, ``TYPE_ID_TARGET``)
- :func:`types_match` — does the kernel type have every member, enumerator and
  parameter the local one names? (``TYPE_MATCHES``)

Names compare by their *essential* part: ``task_struct___pre514`` is a
flavour of ``task_struct`` (:func:`essential_name`).

Every walk is bounded as in libbpf (32 hops along a chain, 32 levels of
nesting); past that the relation cannot be decided and
:class:`~dynbpf.errors.RelocationError` is raised. Dangling references and
qualifier loops are the blob's fault and raise
:class:`~dynbpf.errors.ObjectFormatError` from the graph helpers.
"""

from __future__ import annotations

from dynbpf._btf import graph
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import (
    Array,
    Enum,
    Enum64,
    Float,
    FuncProto,
    Fwd,
    Int,
    Ptr,
    Struct,
    Type,
    Union,
)
from dynbpf.errors import RelocationError

MAX_DEPTH = 32
"""Hops along one chain of pointers/arrays, and levels of nesting, before giving up (libbpf's limit)."""

_MATCH_BUDGET = 1 << 16
"""Type pairs :func:`types_match` may visit: nesting bounds depth, not the fan-out of a hostile blob."""


def essential_name(name: str) -> str:
    """``name`` without a ``___flavour`` suffix: the part CO-RE matches on.

    The separator is the last ``___`` that has a non-underscore on both
    sides (``a___b`` → ``a``; ``____x`` and ``a____`` have none).
    """
    if "___" not in name:
        return name
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name.startswith("___", i + 1) and name[i + 4] != "_":
            return name[: i + 1]
    return name


def is_enum(t: Type | None) -> bool:
    return isinstance(t, Enum | Enum64)


def kinds_compatible(a: Type | None, b: Type | None) -> bool:
    """Same BTF kind, where a 32-bit and a 64-bit enum count as one kind."""
    if a is None or b is None:
        return a is b
    return a.kind == b.kind or (is_enum(a) and is_enum(b))


def skip(spec: Spec, type_id: int) -> tuple[int, Type | None]:
    """The id and type behind qualifiers and typedefs."""
    resolved = graph.resolve(spec, type_id)
    return resolved, spec[resolved]


def _names_equivalent(local: str, target: str) -> bool:
    """Both anonymous, or the same essential name (libbpf's rule for types_match)."""
    if not target:
        return not local
    return essential_name(local) == essential_name(target)


def fields_compatible(local: Spec, local_id: int, target: Spec, target_id: int) -> bool:
    """May the local field type be read where the kernel has the target field type?"""
    for _ in range(MAX_DEPTH):
        local_id, lt = skip(local, local_id)
        target_id, tt = skip(target, target_id)
        if isinstance(lt, Struct | Union) and isinstance(tt, Struct | Union):
            return True
        if not kinds_compatible(lt, tt):
            return False
        match lt:
            case Ptr() | Float():
                return True
            case Fwd() | Enum() | Enum64():
                assert isinstance(tt, Fwd | Enum | Enum64)
                ln, tn = essential_name(lt.name), essential_name(tt.name)
                return not ln or not tn or ln == tn
            case Int():
                assert isinstance(tt, Int)
                return lt.bit_offset == 0 and tt.bit_offset == 0
            case Array():
                assert isinstance(tt, Array)
                local_id, target_id = lt.type, tt.type
            case _:
                return False
    raise RelocationError(f"array of arrays deeper than {MAX_DEPTH} comparing local [{local_id}] with [{target_id}]")


def types_compatible(local: Spec, local_id: int, target: Spec, target_id: int, level: int = MAX_DEPTH) -> bool:
    """Is the kernel type a version of the local one (names already agree at the root)?

    Beyond the root, names are ignored: composites, enums, forward
    declarations and integers are compatible with their own kind; pointers
    and arrays compare what they point to or hold, prototypes their
    parameters and return type.
    """
    if not kinds_compatible(local[local_id], target[target_id]):
        return False
    for _ in range(MAX_DEPTH):
        local_id, lt = skip(local, local_id)
        target_id, tt = skip(target, target_id)
        if not kinds_compatible(lt, tt):
            return False
        match lt:
            case None | Struct() | Union() | Enum() | Enum64() | Fwd():
                return True
            case Int():
                assert isinstance(tt, Int)
                return lt.bit_offset == 0 and tt.bit_offset == 0
            case Ptr():
                assert isinstance(tt, Ptr)
                local_id, target_id = lt.type, tt.type
            case Array():
                assert isinstance(tt, Array)
                local_id, target_id = lt.type, tt.type
            case FuncProto():
                assert isinstance(tt, FuncProto)
                if len(lt.params) != len(tt.params):
                    return False
                for lp, tp in zip(lt.params, tt.params, strict=True):
                    if level <= 0:
                        raise RelocationError(f"function prototypes nested deeper than {MAX_DEPTH}")
                    lp_id = graph.resolve(local, lp.type)
                    tp_id = graph.resolve(target, tp.type)
                    if not types_compatible(local, lp_id, target, tp_id, level - 1):
                        return False
                local_id = graph.resolve(local, lt.return_type)
                target_id = graph.resolve(target, tt.return_type)
            case _:
                return False
    raise RelocationError(f"type chain longer than {MAX_DEPTH} comparing local [{local_id}] with [{target_id}]")


def types_match(local: Spec, local_id: int, target: Spec, target_id: int) -> bool:
    """Does the kernel type have everything the local type names (``bpf_core_type_matches``)?

    Stricter than :func:`types_compatible`: integers must agree in size and
    signedness, arrays in length, every local member must exist by name in
    the target with a matching type, every local enumerator by name. Behind
    a pointer a struct or union only has to be one (or a forward declaration
    of one).
    """
    return _Matcher(local, target).match(local_id, target_id, behind_ptr=False, level=MAX_DEPTH)


class _Matcher:
    def __init__(self, local: Spec, target: Spec) -> None:
        self.local = local
        self.target = target
        self.budget = _MATCH_BUDGET

    def match(self, local_id: int, target_id: int, *, behind_ptr: bool, level: int) -> bool:
        if level <= 0:
            raise RelocationError(f"types nested deeper than {MAX_DEPTH} levels")
        for _ in range(MAX_DEPTH):
            self.budget -= 1
            if self.budget < 0:
                raise RelocationError("type too large to match (more than 65536 type pairs)")
            local_id, lt = skip(self.local, local_id)
            target_id, tt = skip(self.target, target_id)
            if not _names_equivalent(_name(lt), _name(tt)):
                return False
            match lt:
                case None:
                    return tt is None
                case Fwd():
                    if behind_ptr and isinstance(tt, Struct | Union):
                        return isinstance(tt, Union) == lt.union
                    return isinstance(tt, Fwd) and tt.union == lt.union
                case Enum() | Enum64():
                    return isinstance(tt, Enum | Enum64) and self._enums(lt, tt)
                case Struct() | Union():
                    if behind_ptr:
                        if type(tt) is type(lt):
                            return True
                        return isinstance(tt, Fwd) and tt.union == isinstance(lt, Union)
                    if type(tt) is not type(lt):
                        return False
                    assert isinstance(tt, Struct | Union)
                    return self._composites(lt, tt, behind_ptr=behind_ptr, level=level)
                case Int():
                    if not isinstance(tt, Int):
                        return False
                    return lt.size == tt.size and bool(lt.encoding & 1) == bool(tt.encoding & 1)
                case Ptr():
                    if not isinstance(tt, Ptr):
                        return False
                    behind_ptr = True
                    local_id, target_id = lt.type, tt.type
                case Array():
                    if not isinstance(tt, Array) or lt.nelems != tt.nelems:
                        return False
                    local_id, target_id = lt.type, tt.type
                case FuncProto():
                    if not isinstance(tt, FuncProto) or len(lt.params) != len(tt.params):
                        return False
                    for lp, tp in zip(lt.params, tt.params, strict=True):
                        if not self.match(lp.type, tp.type, behind_ptr=behind_ptr, level=level - 1):
                            return False
                    local_id, target_id = lt.return_type, tt.return_type
                case _:
                    return False
        raise RelocationError(f"type chain longer than {MAX_DEPTH} matching local [{local_id}] with [{target_id}]")

    def _enums(self, lt: Enum | Enum64, tt: Enum | Enum64) -> bool:
        if lt.size != tt.size or len(lt.values) > len(tt.values):
            return False
        return all(any(_names_equivalent(lv.name, tv.name) for tv in tt.values) for lv in lt.values)

    def _composites(self, lt: Struct | Union, tt: Struct | Union, *, behind_ptr: bool, level: int) -> bool:
        if len(lt.members) > len(tt.members):
            return False
        for lm in lt.members:
            for tm in tt.members:
                if _names_equivalent(lm.name, tm.name) and self.match(
                    lm.type, tm.type, behind_ptr=behind_ptr, level=level - 1
                ):
                    break
            else:
                return False
        return True


def _name(t: Type | None) -> str:
    return "" if t is None else t.name
