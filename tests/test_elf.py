"""ELF → ObjectSpec on every fixture, with libbpf 1.1 (opened, never loaded) as the oracle."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dynbpf._btf.types import Struct
from dynbpf._elf import read
from dynbpf._elf.spec import (
    DataReference,
    ExternKind,
    FunctionPointer,
    MapReference,
    ObjectSpec,
    SubprogramCall,
)
from dynbpf._runtime.mapcreate import kernel_name
from dynbpf._section_names import is_data_section
from dynbpf._sys.constants import MapFlags, MapType, ProgType
from dynbpf.errors import ObjectFormatError
from tests.bpfbuild import build, fixture_names
from tests.helpers import compile_snippet
from tests.libbpf_oracle import LIBBPF_REFUSES, LibbpfError, open_object

FIXTURE_NAMES = fixture_names()
#: fixtures libbpf 1.1 refuses to open, and why (we read them anyway)

pytestmark = [pytest.mark.needs_clang]


def read_fixture(name: str) -> ObjectSpec:
    return read(build(name))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_parses(name: str) -> None:
    spec = read_fixture(name)
    assert spec.programs, f"{name} has no programs"
    assert spec.license
    for prog in spec.programs:
        for fn in spec.reachable(prog):
            assert fn.instructions
            for r in fn.relocations:
                assert 0 <= r.index < len(fn.instructions)


@pytest.mark.parametrize("name", [n for n in FIXTURE_NAMES if n not in LIBBPF_REFUSES])
def test_programs_and_maps_match_libbpf(name: str) -> None:
    path = build(name)
    spec = read(path)
    lib = open_object(path)
    assert {p.name: p.section for p in lib.programs} == {n: p.section for n, p in spec.programs.items()}
    for lp in lib.programs:
        prog = spec.programs[lp.name]
        if lp.prog_type:  # 0: a section libbpf 1.1 does not know (newer than it)
            assert prog.kind.prog_type == lp.prog_type, lp.name
            if prog.kind.prog_type == ProgType.STRUCT_OPS:
                # libbpf stores the ops member a program fills as its attach type (1.1 ignores .struct_ops.link)
                section, index = struct_ops_member_index(spec, lp.name)
                assert index == lp.expected_attach_type or section == ".struct_ops.link", lp.name
            else:
                assert (prog.kind.expected_attach_type or 0) == lp.expected_attach_type, lp.name
        assert prog.kind.autoload == lp.autoload, lp.name
        own = sum(i.slots for i in prog.function.instructions)
        assert lp.insn_cnt == own, f"{lp.name}: libbpf counts {lp.insn_cnt} slots, we {own}"
    for lm in lib.maps:
        if lm.is_internal:
            # "<object prefix>.<suffix>" for .data/.rodata/.bss/.kconfig, the section name for custom ones
            section = lm.name if lm.name.startswith(".") else "." + lm.name.split(".", 1)[1]
            if section == ".kconfig":
                continue  # built from externs at prepare time
            m = spec.maps[section]
            assert (m.type, m.value_size, m.max_entries) == (MapType.ARRAY, lm.value_size, 1)
            # BPF_F_MMAPABLE where libbpf sets it (a DATASEC with a non-static variable), and its kernel name
            assert m.flags == lm.map_flags, section
            assert kernel_name(spec.name, section) == lm.name, section
            assert (m.data or bytes(m.value_size)) == lm.initial_value, section
            continue
        m = spec.maps[lm.name]
        assert (m.type, m.key_size, m.value_size, m.max_entries) == (
            lm.type,
            lm.key_size,
            lm.value_size,
            lm.max_entries,
        ), lm.name
        assert (m.flags, m.numa_node, m.map_extra) == (lm.map_flags, lm.numa_node, lm.map_extra), lm.name
        assert (m.pinning.value == 1) == (lm.pin_path is not None), lm.name
        if m.type != MapType.STRUCT_OPS:
            assert (m.key_type, m.value_type) == (lm.btf_key_type_id, lm.btf_value_type_id), lm.name
    ours = {n for n, m in spec.maps.items() if not is_data_section(m.section)}
    theirs = {m.name for m in lib.maps if not m.is_internal}
    # libbpf 1.1 skips .struct_ops.link (newer than it)
    assert ours - {n for n, m in spec.maps.items() if m.section == ".struct_ops.link"} == theirs


def struct_ops_member_index(spec: ObjectSpec, program: str) -> tuple[str, int]:
    assert spec.btf is not None
    for m in spec.maps.values():
        for member, prog in m.program_slots:
            if prog == program:
                ops = spec.btf[m.value_type]
                assert isinstance(ops, Struct)
                return m.section, [x.name for x in ops.members].index(member)
    raise AssertionError(f"{program} fills no struct_ops slot")


def test_libbpf_refusals_are_the_documented_ones() -> None:
    for name, why in LIBBPF_REFUSES.items():
        if name in FIXTURE_NAMES:
            with pytest.raises(LibbpfError):
                open_object(build(name))
            assert why


# --- hand-written objects for precise expectations ------------------------------------


def test_relocations_are_categorised() -> None:
    obj = compile_snippet(
        """
MAP(BPF_MAP_TYPE_ARRAY, arr, u32, u64, 4);
u64 counter = 7;
static const char msg[] = "hi";
static __noinline int helper(int x) { return x + 1; }
static long cb(u32 i, void *ctx) { return 0; }
SEC("xdp") int prog(struct xdp_md *ctx)
{
    u32 k = 0;
    u64 *v = bpf_map_lookup_elem(&arr, &k);
    counter += v ? *v : 0;
    bpf_loop(3, cb, 0, 0);
    bpf_printk("%s", msg);
    return helper(ctx->ingress_ifindex) & 2;
}
""",
    )
    spec = read(obj)
    prog = spec.programs["prog"]
    kinds = {type(r) for r in prog.function.relocations}
    assert {MapReference, DataReference, SubprogramCall, FunctionPointer} <= kinds
    assert [r.map for r in prog.function.relocations if isinstance(r, MapReference)] == ["arr"]
    data = {r.map for r in prog.function.relocations if isinstance(r, DataReference)}
    assert ".data" in data
    assert any(m.startswith(".rodata") for m in data)
    assert set(prog.function.calls) == {"cb", "helper"}
    assert set(spec.maps_used("prog")) == {"arr"} | data
    assert spec.variables["counter"].initial == (7).to_bytes(8, "little")
    call = next(r for r in prog.function.relocations if isinstance(r, SubprogramCall))
    assert prog.function.instructions[call.index].src == 1  # BPF_PSEUDO_CALL


def test_subprogram_maps_are_attributed_to_callers() -> None:
    obj = compile_snippet(
        """
MAP(BPF_MAP_TYPE_HASH, deep, u32, u32, 8);
MAP(BPF_MAP_TYPE_HASH, other, u32, u32, 8);
static __noinline int leaf(u32 k) { u32 *v = bpf_map_lookup_elem(&deep, &k); return v ? *v : 0; }
static __noinline int mid(u32 k) { return leaf(k) + leaf(k + 1); }
SEC("tp/syscalls/sys_enter_getpid") int a(void *ctx) { return mid(1); }
SEC("tp/syscalls/sys_enter_getppid") int b(void *ctx) { u32 k = 0; return bpf_map_lookup_elem(&other, &k) != 0; }
""",
    )
    spec = read(obj)
    assert [f.name for f in spec.reachable("a")] == ["a", "mid", "leaf"]
    assert spec.maps_used("a") == ("deep",)
    assert spec.maps_used("b") == ("other",)
    assert list(spec.users("deep")) == ["a"]
    assert set(spec.subprograms) == {"mid", "leaf"}


def test_graph_queries_take_names_not_specs() -> None:
    """docs/elf.md passed a program where a name is expected: a KeyError quoting the whole spec, and
    ``users`` given a spec instead of a map's name quietly answered "no program" (issue 13 §6)."""
    spec = read_fixture("docs_agent")
    program, table = spec.programs["handle_exec"], spec.maps["exec_count"]
    for query in (spec.reachable, spec.maps_used, spec.externs_used):
        with pytest.raises(TypeError, match=r"^a function's name \(str\), not ProgramSpec: pass its \.name$"):
            query(program)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^a map's name \(str\), not MapSpec: pass its \.name$"):
        spec.users(table)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^a function's name \(str\), not int$"):
        spec.reachable(3)  # type: ignore[arg-type]
    assert spec.reachable(program.name)[0] is program.function
    assert list(spec.users(table.name)) == ["handle_exec"]


def test_static_program_is_refused() -> None:
    obj = compile_snippet('static __attribute__((used)) SEC("xdp") int p(void *ctx) { return 2; }')
    with pytest.raises(ObjectFormatError, match="static") as e:
        read(obj)
    assert e.value.section == "xdp"


def test_unknown_section_fails_its_program_not_the_object() -> None:
    obj = compile_snippet(
        'SEC("nonsense/foo") int p(void *ctx) { return 0; }\nSEC("xdp") int q(void *ctx) { return 2; }',
    )
    spec = read(obj)
    assert spec.programs["p"].kind.prog_type == ProgType.UNSPEC
    assert "nonsense/foo" in (spec.programs["p"].kind.error or "")
    assert spec.programs["q"].kind.error is None


def test_maps_without_btf_are_refused(tmp_path: Path) -> None:
    obj = compile_snippet(
        """
MAP(BPF_MAP_TYPE_ARRAY, m, u32, u32, 1);
SEC("xdp") int p(void *ctx) { u32 k = 0; return bpf_map_lookup_elem(&m, &k) ? 1 : 2; }
""",
    )
    bare = tmp_path / "no_btf.bpf.o"
    subprocess.run(
        ["llvm-objcopy", "--remove-section=.BTF", "--remove-section=.BTF.ext", str(obj), str(bare)], check=True
    )
    with pytest.raises(ObjectFormatError, match="needs BTF") as e:
        read(bare)
    assert e.value.section == ".maps"


def test_not_a_bpf_object(tmp_path: Path) -> None:
    with pytest.raises(ObjectFormatError, match="not a BPF object"):
        read("/bin/true")
    with pytest.raises(ObjectFormatError, match="cannot read"):
        read(tmp_path / "missing.o")
    with pytest.raises(ObjectFormatError):
        read(b"\x7fELF" + bytes(100))


def test_externs() -> None:
    obj = compile_snippet(
        """
extern int LINUX_KERNEL_VERSION __kconfig;
extern bool CONFIG_DYNBPF_NOPE __kconfig __weak;
extern const struct rq runqueues __ksym;
extern const void bpf_prog_active __ksym;
extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern void bpf_nope_kfunc(void) __ksym __weak;
SEC("tp_btf/task_newtask") int p(u64 *ctx)
{
    struct task_struct *t = bpf_task_acquire((struct task_struct *)ctx[0]);
    if (t) bpf_task_release(t);
    if (bpf_nope_kfunc) bpf_nope_kfunc();
    return LINUX_KERNEL_VERSION + CONFIG_DYNBPF_NOPE + (bpf_this_cpu_ptr(&runqueues) != 0)
        + ((u64)&bpf_prog_active & 1);
}
""",
    )
    spec = read(obj)
    e = spec.externs
    assert e["LINUX_KERNEL_VERSION"].kind is ExternKind.KCONFIG
    assert not e["LINUX_KERNEL_VERSION"].weak
    assert e["CONFIG_DYNBPF_NOPE"].weak
    assert e["runqueues"].kind is ExternKind.KSYM
    assert e["runqueues"].type_id != 0
    assert e["bpf_prog_active"].kind is ExternKind.KSYM
    assert e["bpf_prog_active"].type_id == 0
    assert e["bpf_task_acquire"].kind is ExternKind.KFUNC
    assert e["bpf_nope_kfunc"].kind is ExternKind.KFUNC
    assert e["bpf_nope_kfunc"].weak
    assert set(spec.externs_used("p")) == set(e)


def test_rodata_is_read_only_for_programs() -> None:
    spec = read_fixture("globals") if "globals" in FIXTURE_NAMES else None
    if spec is None:
        pytest.fail("globals fixture missing")
    ro = [m for m in spec.maps.values() if m.section.startswith(".rodata")]
    assert ro
    assert all(m.flags & MapFlags.RDONLY_PROG for m in ro)
    assert all(not m.flags & MapFlags.RDONLY_PROG for m in spec.maps.values() if m.section.startswith(".data"))


def test_legacy_map_definitions() -> None:
    spec = read_fixture("legacy_maps")
    got = {n: (m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.section) for n, m in spec.maps.items()}
    assert got == {
        "proto_count": (MapType.ARRAY, 4, 8, 256, 0, "maps"),
        "flow_bytes": (MapType.HASH, 4, 8, 1024, MapFlags.NO_PREALLOC, "maps"),
        "drops": (MapType.PERCPU_ARRAY, 4, 8, 1, 0, "maps"),
    }
    assert set(spec.maps_used("count_protocols")) <= set(got)
    assert spec.maps_used("count_protocols")


def test_two_hundred_programs_with_their_own_map_sets() -> None:
    from bench.synth import build as build_synth

    spec = read(build_synth(200))
    assert len(spec.programs) == 200
    assert set(spec.subprograms) == {"count", "emit"}
    for i in range(200):
        name = f"handle_{i}"
        assert [f.name for f in spec.reachable(name)][1:] in (["count", "emit"], ["emit", "count"])
        used = set(spec.maps_used(name))
        expected = {"counts", "events", ".rodata", ".bss"} | ({"seen"} if i % 3 == 0 else set())
        expected |= {"cache"} if i % 4 == 1 else set()
        assert used == expected, name


def test_kernel_version_section() -> None:
    obj = compile_snippet(
        'unsigned int _version SEC("version") = 0x060c00;\nSEC("xdp") int p(void *ctx) { return 2; }\n'
    )
    spec = read(obj)
    assert spec.kernel_version == 0x060C00
    assert spec.license == "GPL"


@pytest.mark.parametrize("name", [n for n in FIXTURE_NAMES if n not in LIBBPF_REFUSES])
def test_map_indexes_are_libbpfs(name: str) -> None:
    """A poisoned load of an uncreated map names its index in libbpf's list: the orders must agree."""
    from dynbpf._prepare.object import _libbpf_map_order
    from dynbpf._runtime.mapcreate import kernel_name

    spec = read(build(name))
    order = _libbpf_map_order(spec)
    link_maps = {n for n, m in spec.maps.items() if m.section == ".struct_ops.link"}  # libbpf 1.1 ignores them
    ours = [kernel_name(spec.name, n) for n in sorted(order, key=order.__getitem__) if n not in link_maps]
    assert ours == [m.name[:15] for m in open_object(build(name)).maps]  # the kernel's 15 characters
