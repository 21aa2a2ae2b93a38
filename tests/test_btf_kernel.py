"""The running kernel's BTF: the shared cache, and graph helpers checked against bpftool on vmlinux."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from dynbpf._btf import Kind, NameNotFound, Spec, format_type, kernel, member, resolve, size_of
from dynbpf._btf.types import Func, FuncLinkage, FuncProto, Member, Ptr, Struct
from dynbpf.errors import KernelUnsupported
from tests.helpers import VMLINUX, at_once, bpftool_types, require


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    kernel.clear_cache()
    yield
    kernel.clear_cache()


@pytest.fixture(scope="module")
def vmlinux() -> Spec:
    spec = kernel.vmlinux()
    require(None if spec is not None else f"{VMLINUX} does not exist: the kernel has no BTF")
    assert spec is not None
    return spec


@pytest.fixture(scope="module")
def bpftool_vmlinux() -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for t in bpftool_types(VMLINUX):
        by_name.setdefault(t["name"], []).append(t)
    return by_name


def the(spec: Spec, name: str, kind: Kind) -> int:
    (type_id,) = spec.find(name, kind)
    return type_id


def test_vmlinux_is_parsed_once_across_threads(fresh_cache: None) -> None:
    require(None if VMLINUX.exists() else f"{VMLINUX} does not exist")
    got = at_once(kernel.vmlinux, threads=8)
    assert len(got) == 8
    assert got[0] is not None
    assert all(s is got[0] for s in got)
    assert kernel.vmlinux() is got[0]
    assert len(got[0]) > 10_000


def test_module_lookup(vmlinux: Spec) -> None:
    assert kernel.module_names() == sorted(n for n in os.listdir(kernel.BTF_DIR) if n != "vmlinux")
    for bad in ("", "vmlinux", "../etc", ".hidden", "nul\0byte"):
        with pytest.raises(NameNotFound, match="not a kernel module name"):
            kernel.module(bad)
    with pytest.raises(NameNotFound, match="no BTF for kernel module 'no_such_module_hopefully'"):
        kernel.module("no_such_module_hopefully")
    for name in kernel.module_names():
        spec = kernel.module(name)
        assert spec.base is vmlinux
        assert spec.first_id == len(vmlinux)
        assert kernel.module(name) is spec


def test_find_uses_the_kernel_names(vmlinux: Spec) -> None:
    task = the(vmlinux, "task_struct", Kind.STRUCT)
    assert vmlinux.kind(task) == Kind.STRUCT
    assert task in vmlinux.find("task_struct")
    assert vmlinux.find("task_struct", Kind.UNION) == []
    assert vmlinux.find("no_such_type_hopefully") == []
    assert vmlinux.find("bpf_lsm_file_open", Kind.FUNC)


def test_search_looks_in_vmlinux_then_each_modules_own_types(vmlinux: Spec) -> None:
    task = the(vmlinux, "task_struct", Kind.STRUCT)
    assert kernel.search("task_struct", (Kind.STRUCT,)) == ("vmlinux", task)
    assert kernel.search("task_struct", (Kind.UNION, Kind.TYPEDEF)) is None
    assert kernel.search("no_such_type_hopefully", tuple(Kind)) is None
    for name in kernel.module_names()[:1]:  # the first module: no other module is searched before it
        spec = kernel.module(name)
        own = ((i, getattr(t, "name", "")) for i, t in spec.types() if t.kind == Kind.FUNC)
        type_id, func = next(((i, n) for i, n in own if n and not vmlinux.find(n, Kind.FUNC)), (0, ""))
        if func:
            assert kernel.search(func, (Kind.FUNC,)) == (name, type_id)


def _two_modules() -> tuple[Spec, Spec, Spec]:
    """A vmlinux stand-in and two modules split on it (this machine's kernel has no module BTF)."""
    base = Spec.from_types([Struct("task_struct", 8, ()), FuncProto(0, ()), Func("in_vmlinux", 2, FuncLinkage.GLOBAL)])
    a = Spec.from_types(
        [FuncProto(0, ()), Func("in_both", 4, FuncLinkage.GLOBAL), Struct("task_struct", 16, ())], base=base
    )
    b = Spec.from_types(
        [FuncProto(0, ()), Func("in_both", 4, FuncLinkage.GLOBAL), Func("only_b", 4, FuncLinkage.GLOBAL)], base=base
    )
    return base, a, b


def test_kernel_btf_finds_in_vmlinux_then_in_each_modules_own_types() -> None:
    base, a, b = _two_modules()
    btf = kernel.KernelBtf(base, {"mod_a": a, "mod_b": b})
    assert btf.find("in_vmlinux", (Kind.FUNC,)) == kernel.Found(None, base, 3)
    assert btf.find("task_struct", (Kind.STRUCT,)) == kernel.Found(None, base, 1)  # vmlinux first
    assert btf.find("in_both", (Kind.FUNC,)) == kernel.Found("mod_a", a, 5)  # modules in the order given
    assert btf.find("only_b", (Kind.FUNC,)) == kernel.Found("mod_b", b, 6)
    assert btf.find("only_b", (Kind.STRUCT, Kind.UNION)) is None
    assert btf.find("nothing", tuple(Kind)) is None


def test_kernel_btf_searches_only_where_an_address_says() -> None:
    base, a, b = _two_modules()
    btf = kernel.KernelBtf(base, {"mod_a": a, "mod_b": b})
    assert btf.find("only_b", (Kind.FUNC,), only="vmlinux") is None
    assert btf.find("only_b", (Kind.FUNC,), only="mod_b") == kernel.Found("mod_b", b, 6)
    assert btf.find("task_struct", (Kind.STRUCT,), only="mod_a") == kernel.Found("mod_a", a, 6)
    assert btf.find("in_vmlinux", (Kind.FUNC,), only="mod_a") is None  # a module answers for its own types only
    with pytest.raises(NameNotFound, match="mod_c"):
        btf.find("only_b", (Kind.FUNC,), only="mod_c")


def test_kernel_btf_without_vmlinux_finds_nothing() -> None:
    btf = kernel.KernelBtf(None)
    assert btf.find("task_struct", tuple(Kind)) is None
    assert btf.modules() == []
    with pytest.raises(KernelUnsupported, match="module BTF cannot be read"):
        btf.find("task_struct", tuple(Kind), only="some_module")


def test_kernel_btf_takes_the_running_modules_only_on_the_running_vmlinux(vmlinux: Spec) -> None:
    running = kernel.KernelBtf.running()
    assert running.vmlinux is vmlinux
    assert [name for name, _ in running.modules()] == kernel.module_names()
    assert [name for name, _ in kernel.KernelBtf(vmlinux).modules()] == kernel.module_names()
    base, _, _ = _two_modules()
    assert kernel.KernelBtf(base).modules() == []  # the running kernel's modules are split on another vmlinux


def test_size_of_kernel_structs_matches_bpftool(vmlinux: Spec, bpftool_vmlinux: dict[str, Any]) -> None:
    for name in ("task_struct", "sk_buff", "file", "perf_event_attr", "bpf_struct_ops_tcp_congestion_ops"):
        (theirs,) = [t for t in bpftool_vmlinux[name] if t["kind"] == "STRUCT"]
        assert size_of(vmlinux, theirs["id"]) == theirs["size"], name


def test_bitfield_members_match_bpftool(vmlinux: Spec, bpftool_vmlinux: dict[str, Any]) -> None:
    (theirs,) = [t for t in bpftool_vmlinux["perf_event_attr"] if t["kind"] == "STRUCT"]
    ours = vmlinux[theirs["id"]]
    assert isinstance(ours, Struct)
    got = [(m.name or "(anon)", m.type, m.bit_offset, m.bitfield_size) for m in ours.members]
    want = [(m["name"], m["type_id"], m["bits_offset"], m.get("bitfield_size", 0)) for m in theirs["members"]]
    assert got == want
    disabled = member(vmlinux, theirs["id"], "disabled")
    inherit = member(vmlinux, theirs["id"], "inherit")
    assert (disabled.bitfield_size, inherit.bitfield_size) == (1, 1)
    assert inherit.bit_offset == disabled.bit_offset + 1


def test_format_kernel_types(vmlinux: Spec) -> None:
    task = the(vmlinux, "task_struct", Kind.STRUCT)
    comm = member(vmlinux, task, "comm")
    assert format_type(vmlinux, comm.type, comm.name) == "char comm[16]"
    assert size_of(vmlinux, comm.type) == 16
    assert format_type(vmlinux, member(vmlinux, task, "parent").type) == "struct task_struct *"
    head = member(vmlinux, the(vmlinux, "list_head", Kind.STRUCT), "next")
    assert format_type(vmlinux, head.type, "next") == "struct list_head *next"
    u32 = the(vmlinux, "u32", Kind.TYPEDEF)
    assert format_type(vmlinux, u32) == "u32"
    assert format_type(vmlinux, resolve(vmlinux, u32)) == "unsigned int"
    fops = the(vmlinux, "file_operations", Kind.STRUCT)
    llseek = member(vmlinux, fops, "llseek")
    assert isinstance(vmlinux[llseek.type], Ptr)
    assert format_type(vmlinux, llseek.type, "llseek") == "loff_t (*llseek)(struct file *, loff_t, int)"
    assert (
        format_type(vmlinux, the(vmlinux, "bpf_lsm_file_open", Kind.FUNC)) == "int bpf_lsm_file_open(struct file *file)"
    )


def test_attach_probe_size_comes_from_btf(vmlinux: Spec) -> None:
    value = the(vmlinux, "bpf_struct_ops_tcp_congestion_ops", Kind.STRUCT)
    struct = vmlinux[value]
    assert isinstance(struct, Struct)
    assert size_of(vmlinux, value) == struct.size
    assert member(vmlinux, value, "data") == Member("data", struct.members[-1].type, struct.members[-1].bit_offset)


def test_concurrent_decoders_share_one_object_per_type() -> None:
    require(None if VMLINUX.exists() else f"{VMLINUX} does not exist")
    spec = Spec.parse(VMLINUX.read_bytes())
    ids = range(1, 20_000)
    seen = at_once(lambda: [spec[i] for i in ids], threads=4)
    assert len(seen) == 4
    for other in seen[1:]:
        assert all(a is b for a, b in zip(seen[0], other, strict=True))
