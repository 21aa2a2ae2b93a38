"""The BPF C fixtures compile, and libbpf 1.1 (the oracle) sees in each what it was written to contain."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.bpfbuild import FIXTURES, LINKED, build, fixture_names, produce
from tests.libbpf_oracle import LIBBPF_REFUSES, LibbpfError, LibbpfObject, open_object

FIXTURE_NAMES = fixture_names()
OPENABLE = [n for n in FIXTURE_NAMES if n not in LIBBPF_REFUSES]

BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_MMAPABLE = 1 << 10

pytestmark = pytest.mark.needs_clang


def opened(name: str) -> LibbpfObject:
    return open_object(build(name))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_compiles_to_bpf_object_with_btf(name: str) -> None:
    with build(name).open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_BPF"
        sections = {s.name for s in elf.iter_sections()}
    assert {".BTF", ".BTF.ext", "license"} <= sections, sorted(sections)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_says_what_it_covers(name: str) -> None:
    linked = sorted((LINKED / name).glob("*.bpf.c"))
    for source in linked or [FIXTURES / f"{name}.bpf.c"]:
        lines = source.read_text().splitlines()
        assert lines[0].startswith("// SPDX-License-Identifier:"), source
        assert lines[1].startswith("// "), f"line 2 of {source.name} should say what the fixture covers"
        assert len(lines[1]) > 20, f"line 2 of {source.name} should say what the fixture covers"


@pytest.mark.parametrize("name", OPENABLE)
def test_libbpf_opens_fixture_without_warnings(name: str) -> None:
    obj = opened(name)
    assert obj.name == name
    assert obj.programs
    for p in obj.programs:
        assert p.section, p
        assert p.insn_cnt > 0, p
    assert not [line for line in obj.log if line.startswith("warn:")]


def test_every_refusal_is_real_and_explained() -> None:
    assert set(LIBBPF_REFUSES) <= set(FIXTURE_NAMES)
    with pytest.raises(LibbpfError, match="legacy map definitions in 'maps' section") as exc:
        opened("legacy_maps")
    assert any(line.startswith("warn:") for line in exc.value.log)


def test_oracle_reports_libbpf_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(LibbpfError, match="could not open") as exc:
        open_object(junk)
    assert exc.value.log, "libbpf's own messages should be captured"
    with pytest.raises(LibbpfError, match="No such file"):
        open_object(tmp_path / "missing.bpf.o")


def test_a_refused_build_is_cached_and_raised_again_without_running_the_tool(tmp_path: Path) -> None:
    """The kernel matrix: a fixture that does not compile for a guest kernel costs one compile, not one a test."""
    out = tmp_path / "key" / "x.bpf.o"
    runs: list[Path] = []

    def refused(tmp: Path) -> list[str]:
        runs.append(tmp)
        return ["sh", "-c", "echo 'x.bpf.c:1:1: error: use of slot' >&2; exit 1"]

    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"sh failed on x\.bpf\.c:\nx\.bpf\.c:1:1: error: use of slot"):
            produce(out, refused, "x.bpf.c")
    assert len(runs) == 1
    assert not out.exists()


def test_a_build_that_crashed_is_not_cached_as_refused(tmp_path: Path) -> None:
    """Only a refusal with diagnostics is remembered; a tool killed or failing otherwise runs again."""
    out = tmp_path / "key" / "x.bpf.o"
    for _ in range(2):
        with pytest.raises(RuntimeError, match="sh failed"):
            produce(out, lambda tmp: ["sh", "-c", "echo 'error: out of memory' >&2; exit 137"], "x.bpf.c")
    assert produce(out, lambda tmp: ["touch", str(tmp)], "x.bpf.c") == out


def test_arith() -> None:
    obj = opened("arith")
    assert obj.sections() == {"xdp": ["xdp_len_mod"]}
    assert obj.maps == ()


def test_maps_every_definition_style() -> None:
    obj = opened("maps")
    m = {x.name: x for x in obj.maps}
    assert set(m) == {
        "exec_count", "last_event", "sparse_events", "shared_counters", "node_local", "seen_pids",
        "pinned_totals", "events", "perf_events", "percpu_stats", "percpu_by_pid", "recent",
        "recent_percpu", "task_start", "inner_a", "inner_b", "outer_by_slot", "outer_by_id",
        "per_cgroup_tables",
    }  # fmt: skip
    assert not any(x.is_internal for x in obj.maps)
    # __type records BTF ids; __uint(key_size/value_size) records only sizes.
    assert m["exec_count"].btf_key_type_id != 0
    assert m["exec_count"].btf_value_type_id != 0
    assert (m["last_event"].btf_key_type_id, m["last_event"].btf_value_type_id) == (0, 0)
    assert (m["last_event"].key_size, m["last_event"].value_size) == (4, 32)
    assert m["sparse_events"].map_flags == BPF_F_NO_PREALLOC
    assert m["shared_counters"].map_flags == BPF_F_MMAPABLE
    assert (m["node_local"].map_flags, m["node_local"].numa_node) == (BPF_F_NUMA_NODE, 0)
    assert m["recent"].map_flags == BPF_F_NO_COMMON_LRU
    bloom = m["seen_pids"]
    assert (bloom.type_name, bloom.key_size, bloom.value_size, bloom.map_extra) == ("bloom_filter", 0, 4, 3)
    assert m["pinned_totals"].pin_path == "/sys/fs/bpf/pinned_totals"
    assert [x.name for x in obj.maps if x.pin_path] == ["pinned_totals"]
    assert (m["events"].type_name, m["events"].max_entries) == ("ringbuf", 65536)
    assert (m["perf_events"].type_name, m["perf_events"].max_entries) == ("perf_event_array", 0)
    assert (m["task_start"].type_name, m["task_start"].map_flags) == ("task_storage", BPF_F_NO_PREALLOC)
    outer = {n: (m[n].type_name, m[n].value_size) for n in ("outer_by_slot", "outer_by_id", "per_cgroup_tables")}
    assert outer == {
        "outer_by_slot": ("array_of_maps", 4),
        "outer_by_id": ("hash_of_maps", 4),
        "per_cgroup_tables": ("hash_of_maps", 4),
    }
    assert obj.sections() == {
        "tp/sched/sched_process_exec": ["on_exec"],
        "tp/sched/sched_process_exit": ["on_exit"],
        "tp_btf/task_newtask": ["on_newtask"],
        "raw_tp/sys_enter": ["count_syscalls"],
    }


def test_globals_every_data_section() -> None:
    obj = opened("globals")
    data = {m.name: m for m in obj.maps}
    assert set(data) == {"globals.rodata", "globals.data", "globals.bss", ".data.custom", ".rodata.tables"}
    assert all(m.is_internal and m.max_entries == 1 and m.type_name == "array" for m in obj.maps)
    for name in ("globals.rodata", ".rodata.tables"):
        assert data[name].map_flags == BPF_F_RDONLY_PROG | BPF_F_MMAPABLE, name
    for name in ("globals.data", "globals.bss", ".data.custom"):
        assert data[name].map_flags == BPF_F_MMAPABLE, name

    def init(name: str) -> bytes:
        value = data[name].initial_value
        assert value is not None, name
        assert len(value) == data[name].value_size, name
        return value

    assert init(".rodata.tables") == struct.pack("<4IQ", 2, 3, 5, 7, 0xFF00FF00FF00FF00)
    assert init(".data.custom").startswith(struct.pack("<Q6B", 42, 1, 2, 3, 4, 5, 6))
    assert struct.pack("<QQ", 7, 1) in init(".data.custom")
    assert struct.pack("<4I", 22, 80, 443, 8080) in init("globals.data")
    assert struct.pack("<h", -7) in init("globals.data")
    assert b"dynbpf\0\0" in init("globals.rodata")
    assert struct.pack("<IHBBQ", 4096, 8080, 1, 3, 1_000_000_000) in init("globals.rodata")
    assert init("globals.bss") == bytes(data["globals.bss"].value_size)


def test_subprogs_shared_sections_and_no_subprogram_is_a_program() -> None:
    obj = opened("subprogs")
    assert obj.sections() == {
        "tp/syscalls/sys_enter_openat": ["openat_count", "openat_score", "openat_loop"],
        "xdp": ["xdp_bucket", "xdp_walk"],
    }
    names = {p.name for p in obj.programs}
    assert not names & {"mix32", "bucket_of", "score_task", "loop_step", "sum_bucket"}


def test_tailcalls_prog_array_with_initial_slots() -> None:
    obj = opened("tailcalls")
    stages = obj.map("xdp_stages")
    assert (stages.type_name, stages.key_size, stages.value_size, stages.max_entries) == ("prog_array", 4, 4, 8)
    assert sorted(obj.sections()["xdp"]) == ["xdp_dispatch", "xdp_stage_count", "xdp_stage_drop", "xdp_stage_parse"]
    assert obj.map("socket_stages").btf_key_type_id != 0
    assert obj.program("socket_dispatch").prog_type_name == "socket_filter"


def test_core_programs() -> None:
    obj = opened("core")
    fork = obj.program("core_fork")
    assert (fork.section, fork.prog_type_name, fork.attach_type_name) == (
        "tp_btf/sched_process_fork",
        "tracing",
        "trace_raw_tp",
    )
    assert obj.program("core_putname").prog_type_name == "kprobe"
    assert [m.name for m in obj.maps] == ["core.bss"]


def test_externs_kconfig_map_and_optional_program() -> None:
    obj = opened("externs")
    kconfig = obj.map("externs.kconfig")
    assert kconfig.is_internal
    assert kconfig.map_flags == BPF_F_RDONLY_PROG | BPF_F_MMAPABLE
    # LINUX_KERNEL_VERSION (4) ... CONFIG_LOCALVERSION (64): zero until load fills them in.
    assert kconfig.value_size >= 4 + 1 + 1 + 4 + 4 + 64
    assert kconfig.initial_value == bytes(kconfig.value_size)
    assert {p.name: p.autoload for p in obj.programs} == {
        "acquire_new_task": True,
        "runqueue_depth": False,
        "kill_version": True,
    }
    assert obj.program("runqueue_depth").section == "perf_event"


def test_struct_ops_maps_and_slots() -> None:
    obj = opened("struct_ops")
    ops = [p for p in obj.programs if p.section.startswith("struct_ops/")]
    assert len(ops) == 7
    assert {p.prog_type_name for p in ops} == {"struct_ops"}
    # libbpf 1.1 predates .struct_ops.link and struct_ops.s/: it skips the one, types the other unspec.
    assert [m.name for m in obj.maps if m.type_name == "struct_ops"] == ["dynbpf_reno"]
    assert any("skipping unrecognized data section" in line and ".struct_ops.link" in line for line in obj.log)
    sleepable = obj.program("dyn_link_init")
    assert (sleepable.section, sleepable.prog_type) == ("struct_ops.s/dyn_link_init", 0)


# name -> (section, libbpf 1.1 program type, expected attach type or None for 0)
KINDS: dict[str, tuple[str, str, str | None]] = {
    "tp_fork": ("tp/sched/sched_process_fork", "tracepoint", None),
    "tracepoint_openat_exit": ("tracepoint/syscalls/sys_exit_openat", "tracepoint", None),
    "raw_tp_exit": ("raw_tp/sched_process_exit", "raw_tracepoint", None),
    "raw_tracepoint_sys_exit": ("raw_tracepoint/sys_exit", "raw_tracepoint", None),
    "tp_btf_switch": ("tp_btf/sched_switch", "tracing", "trace_raw_tp"),
    "uprobe_plain": ("uprobe", "kprobe", None),
    "uprobe_main_offset": ("uprobe//proc/self/exe:main+0x10", "kprobe", None),
    "uretprobe_getpid": ("uretprobe/libc.so.6:getpid", "kprobe", None),
    "kprobe_openat2": ("kprobe/do_sys_openat2", "kprobe", None),
    "kretprobe_openat2": ("kretprobe/do_sys_openat2", "kprobe", None),
    "kprobe_multi_vfs": ("kprobe.multi/vfs_*", "kprobe", "trace_kprobe_multi"),
    "uprobe_multi_getpp": ("uprobe.multi/libc.so.6:getpp*", "unspec", None),  # newer than libbpf 1.1
    "usdt_setjmp": ("usdt/libc.so.6:libc:setjmp", "kprobe", None),
    "ksyscall_openat": ("ksyscall/openat", "kprobe", None),
    "kretsyscall_openat": ("kretsyscall/openat", "kprobe", None),
    "fentry_openat2": ("fentry/do_sys_openat2", "tracing", "trace_fentry"),
    "fexit_openat2": ("fexit/do_sys_openat2", "tracing", "trace_fexit"),
    "fmod_ret_test": ("fmod_ret/bpf_modify_return_test", "tracing", "modify_return"),
    "lsm_file_open": ("lsm/file_open", "lsm", "lsm_mac"),
    "lsm_s_committed_creds": ("lsm.s/bprm_committed_creds", "lsm", "lsm_mac"),
    "xdp_pass": ("xdp", "xdp", "xdp"),
    "xdp_frags_pass": ("xdp.frags", "xdp", "xdp"),
    "tc_classify": ("tc", "sched_cls", None),
    "tcx_ingress": ("tcx/ingress", "unspec", None),  # newer than libbpf 1.1
    "tcx_egress": ("tcx/egress", "unspec", None),  # newer than libbpf 1.1
    "cgroup_skb_ingress": ("cgroup_skb/ingress", "cgroup_skb", None),  # BPF_CGROUP_INET_INGRESS is 0
    "cgroup_sock_create": ("cgroup/sock_create", "cgroup_sock", "cgroup_inet_sock_create"),
    "cgroup_connect4": ("cgroup/connect4", "cgroup_sock_addr", "cgroup_inet4_connect"),
    "socket_filter": ("socket", "socket_filter", None),
    "iter_task": ("iter/task", "tracing", "trace_iter"),
    "iter_bpf_map": ("iter/bpf_map", "tracing", "trace_iter"),
    "perf_event_sample": ("perf_event", "perf_event", None),
    "sk_msg_pass": ("sk_msg", "sk_msg", "sk_msg_verdict"),
    "sockops_observe": ("sockops", "sock_ops", "cgroup_sock_ops"),
    "flow_dissect": ("flow_dissector", "flow_dissector", "flow_dissector"),
    "netfilter_accept": ("netfilter", "unspec", None),  # newer than libbpf 1.1
    "syscall_prog": ("syscall", "syscall", None),
    "optional_vfs_read": ("fentry/vfs_read", "tracing", "trace_fentry"),  # SEC("?fentry/vfs_read")
}


def test_kinds_sections_types_and_autoload() -> None:
    obj = opened("kinds")
    seen = {
        p.name: (p.section, p.prog_type_name, p.attach_type_name if p.expected_attach_type else None)
        for p in obj.programs
    }
    assert seen == KINDS
    assert [p.name for p in obj.programs if not p.autoload] == ["optional_vfs_read"]
    # usdt.bpf.h brings libbpf's USDT spec maps along.
    assert {"__bpf_usdt_specs", "__bpf_usdt_ip_to_spec_id"} <= {m.name for m in obj.maps}
