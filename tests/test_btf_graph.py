"""Type graph helpers on hand-built BTF: C spelling, sizes, members, and bounded walks over loops."""

from __future__ import annotations

import time

import pytest

from dynbpf._btf import NameNotFound, Spec, TypeNotFound, format_type, member, resolve, size_of, skip_qualifiers
from dynbpf._btf.types import (
    Array,
    Const,
    Enum,
    EnumValue,
    Func,
    FuncLinkage,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Member,
    Param,
    Ptr,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarLinkage,
    Volatile,
)
from dynbpf.errors import ObjectFormatError

TYPES: list[Type] = [
    Int("int", 4, IntEncoding.SIGNED, 0, 32),  # 1
    Int("char", 1, IntEncoding.SIGNED, 0, 8),  # 2
    Int("long", 8, IntEncoding.SIGNED, 0, 64),  # 3
    Struct("task_struct", 24, (Member("pid", 1, 0), Member("comm", 5, 32), Member("flags", 1, 160, 3))),  # 4
    Array(2, 1, 16),  # 5
    Ptr(4),  # 6
    Ptr(0),  # 7: void *
    FuncProto(1, (Param("", 7), Param("", 3))),  # 8
    Ptr(8),  # 9
    Volatile(1),  # 10
    Const(10),  # 11: const volatile int
    Const(2),  # 12
    Ptr(12),  # 13: const char *
    Const(13),  # 14: const char *const
    Array(1, 1, 4),  # 15
    Ptr(15),  # 16: int (*)[4]
    Array(6, 1, 2),  # 17: struct task_struct *[2]
    FuncProto(1, (Param("fmt", 13), Param("", 0))),  # 18: variadic
    Func("printk", 18, FuncLinkage.GLOBAL),  # 19
    Typedef("pid_t", 1),  # 20
    Typedef("task_t", 22),  # 21
    Const(4),  # 22
    TypeTag("rcu", 4),  # 23
    Ptr(23),  # 24
    Union("", 8, (Member("a", 1, 0), Member("b", 3, 0))),  # 25
    Fwd("later", True),  # 26
    Enum("state", 4, False, (EnumValue("ON", 1),)),  # 27
    Var("current_pid", 20, VarLinkage.GLOBAL_ALLOCATED),  # 28
    Restrict(7),  # 29
    FuncProto(0, ()),  # 30: void (void)
    Array(5, 1, 3),  # 31: char[3][16]
]


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec.from_types(TYPES)


@pytest.mark.parametrize(
    ("type_id", "name", "spelled"),
    [
        (0, "", "void"),
        (1, "", "int"),
        (4, "", "struct task_struct"),
        (6, "", "struct task_struct *"),
        (6, "t", "struct task_struct *t"),
        (5, "", "char[16]"),
        (5, "comm", "char comm[16]"),
        (31, "", "char[3][16]"),
        (9, "", "int (*)(void *, long)"),
        (9, "cb", "int (*cb)(void *, long)"),
        (8, "", "int (void *, long)"),
        (11, "", "const volatile int"),
        (13, "", "const char *"),
        (14, "p", "const char *const p"),
        (16, "", "int (*)[4]"),
        (17, "", "struct task_struct *[2]"),
        (19, "", "int printk(const char *fmt, ...)"),
        (20, "", "pid_t"),
        (24, "", 'struct task_struct __attribute__((btf_type_tag("rcu"))) *'),
        (25, "", "union {...}"),
        (26, "", "union later"),
        (27, "", "enum state"),
        (28, "", "pid_t current_pid"),
        (29, "", "void *restrict"),
        (30, "", "void (void)"),
    ],
)
def test_format_type(spec: Spec, type_id: int, name: str, spelled: str) -> None:
    assert format_type(spec, type_id, name) == spelled


def test_resolve_and_skip_qualifiers(spec: Spec) -> None:
    assert skip_qualifiers(spec, 11) == 1
    assert skip_qualifiers(spec, 20) == 20  # a typedef is not a qualifier
    assert resolve(spec, 20) == 1
    assert resolve(spec, 21) == 4  # typedef -> const -> struct
    assert resolve(spec, 23) == 4
    assert resolve(spec, 0) == 0


@pytest.mark.parametrize(
    ("type_id", "size"),
    [(1, 4), (4, 24), (5, 16), (6, 8), (11, 4), (17, 16), (20, 4), (21, 24), (25, 8), (27, 4), (28, 4), (31, 48)],
)
def test_size_of(spec: Spec, type_id: int, size: int) -> None:
    assert size_of(spec, type_id) == size


@pytest.mark.parametrize(("type_id", "what"), [(0, "void"), (8, "FUNC_PROTO"), (19, "FUNC"), (26, "FWD")])
def test_unsized_types(spec: Spec, type_id: int, what: str) -> None:
    with pytest.raises(ObjectFormatError, match=f"has no size .*{what}"):
        size_of(spec, type_id)


def test_member(spec: Spec) -> None:
    assert member(spec, 4, "comm") == Member("comm", 5, 32)
    assert member(spec, 4, "flags").bitfield_size == 3
    assert member(spec, 21, "pid") == Member("pid", 1, 0)  # through typedef and const
    assert member(spec, 25, "b").type == 3
    with pytest.raises(NameNotFound, match="struct task_struct \\[4\\] has no member 'nope'"):
        member(spec, 4, "nope")
    with pytest.raises(NameNotFound, match="not a struct or union"):
        member(spec, 1, "x")


@pytest.mark.parametrize("helper", [resolve, skip_qualifiers, size_of, format_type])
def test_unknown_start_id_is_type_not_found(spec: Spec, helper: object) -> None:
    with pytest.raises(TypeNotFound):
        helper(spec, 999)  # type: ignore[operator]


RAISES = "raises"
#: (types, type id to start at) -> what resolve / skip_qualifiers / size_of / format_type give
LOOPS: dict[str, tuple[list[Type], tuple[object, object, object, object]]] = {
    "typedef of itself": ([Typedef("t", 1)], (RAISES, 1, RAISES, "t")),
    "const cycle": ([Const(2), Volatile(1)], (RAISES, RAISES, RAISES, RAISES)),
    "array of itself": ([Array(1, 1, 2)], (1, 1, RAISES, RAISES)),
    "pointer to itself": ([Ptr(1)], (1, 1, 8, RAISES)),
    "function returning a pointer to itself": ([FuncProto(2, ()), Ptr(1)], (1, 1, RAISES, RAISES)),
    "dangling reference": ([Typedef("t", 77)], (RAISES, 1, RAISES, "t")),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_walks_over_loops_and_dangling_references_are_bounded(name: str) -> None:
    types, expected = LOOPS[name]
    spec = Spec.from_types(types)
    for helper, want in zip((resolve, skip_qualifiers, size_of, format_type), expected, strict=True):
        if want == RAISES:
            with pytest.raises(ObjectFormatError, match=r"type \[\d+\]") as e:
                helper(spec, 1)
            assert e.value.offset is not None
        else:
            assert helper(spec, 1) == want


def test_dangling_reference_names_the_referring_record() -> None:
    spec = Spec.from_types([Int("int", 4, IntEncoding.SIGNED, 0, 32), Typedef("t", 77)])
    with pytest.raises(ObjectFormatError, match=r"type \[2\]: refers to type \[77\]") as e:
        resolve(spec, 2)
    assert e.value.offset == 24 + 16  # after the INT record


def test_fan_out_is_bounded_by_a_node_budget() -> None:
    """Each prototype takes 16 pointers to the next: 16**20 paths, refused after MAX_FORMAT_NODES types."""
    types: list[Type] = []
    depth = 20
    for level in range(depth):
        proto, ptr = 2 * level + 1, 2 * level + 2
        nxt = ptr + 2 if level < depth - 1 else 0
        types += [FuncProto(0, tuple(Param("", nxt) for _ in range(16))), Ptr(proto)]
        assert len(types) == ptr
    spec = Spec.from_types(types)
    start = time.perf_counter()
    with pytest.raises(ObjectFormatError, match="too deep or too large"):
        format_type(spec, 2)
    assert time.perf_counter() - start < 1.0


def test_array_size_overflow() -> None:
    spec = Spec.from_types([Int("int", 4, IntEncoding.SIGNED, 0, 32), Array(1, 1, 1 << 31), Array(2, 1, 1 << 31)])
    with pytest.raises(ObjectFormatError, match=r"overflow|does not fit"):
        size_of(spec, 3)
    with pytest.raises(ObjectFormatError, match="does not fit"):
        size_of(spec, 2)
