"""Parsed BTF matches bpftool's reading of the same bytes, and encodes back to them.

Every fixture under tests/bpf is covered (new fixtures join automatically),
plus an object compiled here that uses the kinds the fixtures do not (union
bitfields, fwd unions, decl and type tags, floats, restrict, variadic
prototypes), blobs built with ``Spec.from_types`` for what clang 14 cannot
emit (enum64, signed enum64, split BTF), and the running kernel's vmlinux.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dynbpf._btf import Spec, encode_ext, kernel, parse_ext
from dynbpf._btf.types import (
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Member,
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
from tests.bpfbuild import build, compile_source, fixture_names
from tests.helpers import ALL_KINDS, VMLINUX, bpftool_types, btf_sections, require

FIXTURE_NAMES = fixture_names()

#: an object using the kinds the fixtures leave out; compiled by the test itself
KINDS_SOURCE = r"""
#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __user __attribute__((btf_type_tag("user")))
struct undefined_thing;
union undefined_union;
struct flags { unsigned int a : 1, b : 3; int c : 7; unsigned long long d : 40; char e; } __tag("struct_tag");
union bits { unsigned int whole; struct { unsigned char lo : 4, hi : 4; }; unsigned short s : 9; };
enum sign { NEG = -5, ZERO = 0, BIG = 0x7fffffff };
typedef int (*variadic_fn)(int, ...);
struct holder {
    struct undefined_thing *fwd;
    union undefined_union *fwd_union;
    int __user *uptr;
    const volatile int cv;
    char *restrict rp;
    float f;
    double d;
    int matrix[3][4];
    variadic_fn fn __tag("member_tag");
    union bits u;
    struct flags fl;
    enum sign sg;
};
struct holder holder_var __tag("var_tag") __attribute__((section(".data.holder")));
static __attribute__((noinline)) int helper(int x __tag("param_tag")) __tag("func_tag") { return x + holder_var.cv; }
__attribute__((section("socket"))) int prog(void *ctx) { return helper((long)ctx); }
char LICENSE[] __attribute__((section("license"))) = "GPL";
"""

_ENCODING = {0: "(none)", IntEncoding.SIGNED: "SIGNED", IntEncoding.CHAR: "CHAR", IntEncoding.BOOL: "BOOL"}
_FUNC_LINKAGE = {FuncLinkage.STATIC: "static", FuncLinkage.GLOBAL: "global", FuncLinkage.EXTERN: "extern"}
_VAR_LINKAGE = {VarLinkage.STATIC: "static", VarLinkage.GLOBAL_ALLOCATED: "global", VarLinkage.GLOBAL_EXTERN: "extern"}


def bpftool_view(type_id: int, t: Type) -> dict[str, Any]:
    """``t`` as ``bpftool btf dump -j`` prints it (bpftool 7.1)."""
    d: dict[str, Any] = {"id": type_id, "kind": t.kind.name, "name": t.name or "(anon)"}
    match t:
        case Int():
            d |= {"size": t.size, "bits_offset": t.bit_offset, "nr_bits": t.bits, "encoding": _ENCODING[t.encoding]}
        case Ptr() | Typedef() | Volatile() | Const() | Restrict() | TypeTag():
            d["type_id"] = t.type
        case Array():
            d |= {"type_id": t.type, "index_type_id": t.index_type, "nr_elems": t.nelems}
        case Struct() | Union():
            d |= {"size": t.size, "vlen": len(t.members), "members": [_member(m) for m in t.members]}
        case Enum() | Enum64():
            d |= {
                "encoding": "SIGNED" if t.signed else "UNSIGNED",
                "size": t.size,
                "vlen": len(t.values),
                "values": [{"name": v.name, "val": _bpftool_enum_value(t, v.value)} for v in t.values],
            }
        case Fwd():
            d["fwd_kind"] = "union" if t.union else "struct"
        case Func():
            d |= {"type_id": t.type, "linkage": _FUNC_LINKAGE[t.linkage]}
        case FuncProto():
            params = [{"name": p.name or "(anon)", "type_id": p.type} for p in t.params]
            d |= {"ret_type_id": t.return_type, "vlen": len(t.params), "params": params}
        case Var():
            d |= {"type_id": t.type, "linkage": _VAR_LINKAGE[t.linkage]}
        case Datasec():
            d |= {
                "size": t.size,
                "vlen": len(t.vars),
                "vars": [{"type_id": v.type, "offset": v.offset, "size": v.size} for v in t.vars],
            }
        case Float():
            d["size"] = t.size
        case DeclTag():
            d |= {"type_id": t.type, "component_idx": t.component_idx}
    return d


def _bpftool_enum_value(t: Enum | Enum64, value: int) -> int:
    """bpftool 7.1's JSON widens an unsigned 32-bit enum value through ``__s32``: 0x80000000 prints as
    0xffffffff80000000 (its plain-text output and libbpf read it right; the value in the file is 32 bits)."""
    if isinstance(t, Enum) and not t.signed and value >> 31:
        return value | 0xFFFFFFFF00000000
    return value


def _member(m: Member) -> dict[str, Any]:
    d: dict[str, Any] = {"name": m.name or "(anon)", "type_id": m.type, "bits_offset": m.bit_offset}
    if m.bitfield_size:
        d["bitfield_size"] = m.bitfield_size
    return d


def assert_matches_bpftool(spec: Spec, path: Path, base: Path | None = None) -> None:
    ours = [bpftool_view(i, t) for i, t in spec.types()]
    theirs = bpftool_types(path, base)
    assert len(ours) == len(theirs)
    mismatched = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    assert not mismatched, mismatched[:5]


@pytest.mark.needs_clang
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_btf_round_trips(name: str) -> None:
    btf, ext = btf_sections(build(name))
    spec = Spec.parse(btf)
    assert spec.encode() == btf
    info = parse_ext(ext, spec)
    assert info.func_info, "every fixture has at least one function"
    assert encode_ext(info, spec) == ext


@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_btf_matches_bpftool(name: str) -> None:
    obj = build(name)
    assert_matches_bpftool(Spec.parse(btf_sections(obj)[0]), obj)


@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_rare_kinds_match_bpftool_and_round_trip() -> None:
    kinds_obj = compile_source(KINDS_SOURCE, "kinds_btf")
    btf, ext = btf_sections(kinds_obj)
    spec = Spec.parse(btf)
    assert_matches_bpftool(spec, kinds_obj)
    assert spec.encode() == btf
    assert encode_ext(parse_ext(ext, spec), spec) == ext
    kinds = {t.kind.name for _, t in spec.types()}
    assert {"FWD", "DECL_TAG", "TYPE_TAG", "FLOAT", "RESTRICT", "VOLATILE", "UNION"} <= kinds
    (bits,) = spec.find("bits")
    u = spec[bits]
    assert isinstance(u, Union)
    assert [(m.name, m.bit_offset, m.bitfield_size) for m in u.members] == [("whole", 0, 0), ("", 0, 0), ("s", 0, 9)]
    (flags,) = spec.find("flags")
    s = spec[flags]
    assert isinstance(s, Struct)
    assert [(m.bit_offset, m.bitfield_size) for m in s.members] == [(0, 1), (1, 3), (4, 7), (11, 40), (56, 0)]
    tags = {t.name: t.component_idx for _, t in spec.types() if isinstance(t, DeclTag)}
    assert tags["struct_tag"] == -1
    assert tags["member_tag"] == 8


@pytest.mark.needs_bpftool
def test_every_kind_built_by_from_types_matches_bpftool(tmp_path: Path) -> None:
    spec = Spec.from_types(ALL_KINDS)
    blob = spec.encode()
    (tmp_path / "all.btf").write_bytes(blob)
    assert_matches_bpftool(spec, tmp_path / "all.btf")
    assert [t for _, t in spec.types()] == ALL_KINDS
    assert Spec.parse(blob).encode() == blob


@pytest.mark.needs_bpftool
def test_split_btf_matches_bpftool_with_its_base(tmp_path: Path) -> None:
    base = Spec.from_types(ALL_KINDS)
    n = len(base)
    split_types: list[Type] = [
        Struct("module_thing", 16, (Member("p", n + 1, 0), Member("e", 7, 64))),
        Ptr(n),
        Typedef("int", 1),  # a name already in the base: its offset is reused
        Func("module_func", 19, FuncLinkage.STATIC),
    ]
    split = Spec.from_types(split_types, base=base)
    (tmp_path / "base.btf").write_bytes(base.encode())
    (tmp_path / "split.btf").write_bytes(split.encode())
    assert_matches_bpftool(split, tmp_path / "split.btf", base=tmp_path / "base.btf")
    assert [i for i, _ in split.types()] == list(range(n, n + 4))
    assert split.string(split.strings.find("module_thing") or 0) == "module_thing"
    assert (split.strings.find("module_thing") or 0) >= base.strings.end_offset
    assert split.strings.find("int") == base.strings.find("int")


def vmlinux_spec() -> Spec:
    require(None if VMLINUX.exists() else f"{VMLINUX} does not exist: the kernel has no BTF")
    return Spec.parse(VMLINUX.read_bytes(), section=str(VMLINUX))


def test_vmlinux_round_trips_byte_exact() -> None:
    spec = vmlinux_spec()
    assert spec.encode() == VMLINUX.read_bytes()


@pytest.mark.needs_bpftool
def test_vmlinux_matches_bpftool() -> None:
    assert_matches_bpftool(vmlinux_spec(), VMLINUX)


def test_module_btf_round_trips() -> None:
    """Every module BTF the kernel exposes; the test machine has none (built-in drivers only),
    which is why split BTF is also checked against bpftool with a synthetic base above."""
    base = vmlinux_spec()
    on_disk = sorted(p.name for p in Path(kernel.BTF_DIR).iterdir() if p.name != "vmlinux")
    assert sorted(kernel.module_names()) == on_disk
    for name in kernel.module_names():
        data = Path(kernel.BTF_DIR, name).read_bytes()
        spec = Spec.parse(data, base=base, section=name)
        assert spec.encode() == data, name
