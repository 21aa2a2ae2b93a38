"""The small helpers the test modules share, in one place: no test file keeps its own copy of one,
nor imports one from another test file.

What has a module of its own stays there: building fixtures (tests/bpfbuild.py), libbpf
through ctypes (tests/libbpf_oracle.py), what /proc and the kernel say about this process
(tests/kernel_state.py), the lifecycle stress (tests/stress_driver.py). tests/conftest.py
holds fixtures and hooks only; the checks its hooks run are here.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
from elftools.elf.elffile import ELFFile

from dynbpf import MapEdit
from dynbpf._asm.insn import R1, R2, Insn, ld_map_value, mov64_imm, return_imm
from dynbpf._asm.opcodes import AluOp, Class, Mode, Size
from dynbpf._btf.types import (
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
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
    VarSecinfo,
    Volatile,
)
from dynbpf._elf.spec import ObjectSpec, VariableSpec
from dynbpf._maps import possible_cpus
from dynbpf._probes import attach as attach_features
from dynbpf._probes.result import Support, outcome
from dynbpf._probes.trial import load
from dynbpf._sys import commands, fs, perf
from dynbpf._sys.attrs import LinkCreateAttr, MapCreateAttr
from dynbpf._sys.constants import AttachType, MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf.errors import KernelUnsupported, VerifierError
from tests import bpfbuild, kernel_state

ROOT = Path(__file__).resolve().parent.parent
VMLINUX = Path("/sys/kernel/btf/vmlinux")
T = TypeVar("T")

# --- what the suite needs to run, and the CI rule -------------------------------------------------

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: How much slower than a machine of the project's kind this one runs: the kernel matrix's guests, emulated,
#: set DYNBPF_TEST_SLOWDOWN (docs/kernels.md). Waits for another process (an agent starting, a child
#: ready) are multiplied by it; nothing that is measured is.
SLOWDOWN = float(os.environ.get("DYNBPF_TEST_SLOWDOWN", "1"))


def patience(seconds: float) -> float:
    """How long to wait for something that takes ``seconds`` at most on the project's machines."""
    return seconds * SLOWDOWN


def require(reason: str | None) -> None:
    """Nothing if ``reason`` is None; else skip with it, or under CI=true fail: a green CI means the tests ran.

    For what the suite needs to run at all (root, clang, bpftool, kernel BTF). A capability the
    running kernel lacks is not one of those: see :func:`kernel_lacks`.
    """
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a kernel-test prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def bpf_usable() -> str | None:
    """None if BPF programs can be loaded here, else why not."""
    if os.geteuid() != 0:
        return "kernel tests need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    try:
        trial = load(ProgType.SOCKET_FILTER, return_imm(0))
    except Exception as e:  # any failure to even try means "unusable", with the reason
        return f"cannot issue bpf(2): {e}"
    with trial:
        if not trial.ok:
            return f"the kernel refused a two-instruction socket filter ({trial.result})"
    return None


def mount_pseudo_filesystems() -> None:
    """Tests pin objects and look up tracepoint ids: mount bpffs and tracefs if absent."""
    fs.ensure_bpffs(mount_if_missing=True)
    fs.tracefs_root(mount_if_missing=True)


def kernel_lacks(support: Support, attempt: Callable[[], object]) -> bool:
    """Whether the running kernel lacks a capability, by its probe; if so, after checking that ``attempt``
    (using it) fails as dynbpf says it does, with VerifierError at load or KernelUnsupported at attach.

    A test of a capability some kernel may lack goes on only when this is False. The suite runs on
    kernels from 6.1 on (issue 15); it never skips for a capability, since under CI=true a skip fails
    the run: on a kernel without it, the test checks the refusal instead. The refusal must be the one
    the probe met: a KernelUnsupported carries its evidence, a verifier's refusal its errno (an
    unrelated verifier complaint, another errno, is not taken for the kernel lacking the capability;
    nor is any load refusal where the probe's evidence names no errno, such as a type missing from BTF).
    """
    if support.supported:
        return False
    with pytest.raises((VerifierError, KernelUnsupported)) as refused:
        attempt()
    if isinstance(refused.value, KernelUnsupported):
        assert refused.value.how == support.how, (refused.value, support)
    else:
        assert f"-> {outcome(refused.value.errno)}" in support.how, (
            f"the probe met another refusal ({support.how}): {refused.value}"
        )
    return True


# --- file descriptors ------------------------------------------------------------------------------


def fd_leak_check() -> Iterator[None]:
    """A generator fixture body: fails after the test if it left a file descriptor open.

    An fd counts as leaked when it is open after the test and was not, or named something else,
    before: a leak that reuses a number closed meanwhile is still seen.
    """
    before = kernel_state.open_fds()
    yield
    leaked = {fd: what for fd, what in kernel_state.open_fds().items() if before.get(fd) != what}
    assert not leaked, f"file descriptors leaked: {leaked}"


# --- kernel objects made by hand (below dynbpf._runtime) ------------------------------------------

XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3
#: what packet programs are test-run on: an all-zero frame
PACKET = bytes(64)


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


def new_map(
    map_type: MapType = MapType.ARRAY,
    key: int = 4,
    value: int = 8,
    entries: int = 1,
    *,
    name: bytes = b"test",
    **kw: int,
) -> Fd:
    return commands.map_create(
        MapCreateAttr(map_type=map_type, key_size=key, value_size=value, max_entries=entries, map_name=name, **kw)
    )


def load_ok(
    prog_type: ProgType,
    insns: list[Insn],
    *,
    expected_attach_type: AttachType | int = 0,
    attach_btf_id: int = 0,
    name: bytes = b"",
) -> Fd:
    """A program loaded from ``insns``; on a refusal, fails with the verifier's log."""
    options: dict[str, Any] = {"expected_attach_type": expected_attach_type, "attach_btf_id": attach_btf_id}
    trial = load(prog_type, insns, name=name, **options)
    if trial.fd is None:
        trial = load(prog_type, insns, name=name, with_log=True, **options)
    assert trial.fd is not None, f"load failed: {trial.result}\n{trial.log}"
    return trial.fd


def read_u64(map_fd: Fd, key: int = 0) -> int:
    value = ctypes.create_string_buffer(8)
    assert commands.map_lookup_elem(map_fd.raw, u32(key), value)
    return int.from_bytes(value.raw, "little")


def counter_prog(map_fd: Fd | int) -> list[Insn]:
    """``__sync_fetch_and_add(&map[0], 1); return 0``."""
    atomic_add = Insn(Class.STX | Mode.ATOMIC | Size.DW, R1, R2, 0, AluOp.ADD)
    number = map_fd if isinstance(map_fd, int) else map_fd.raw
    return [ld_map_value(R1, number, 0), mov64_imm(R2, 1), atomic_add, *return_imm(0)]


@contextmanager
def getppid_counter() -> Iterator[tuple[Fd, Fd, Fd]]:
    """(counter map, counting tracepoint program, getppid tracepoint event of this process only)."""
    tp_id = fs.tracepoint_id("syscalls", "sys_enter_getppid")
    with (
        new_map() as m,
        load_ok(ProgType.TRACEPOINT, counter_prog(m)) as p,
        # this process only, on any CPU: other processes' getppid calls do not count
        perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=0, cpu=-1) as pfd,
    ):
        yield m, p, pfd


@contextmanager
def on_tracepoint(prog_fd: int, category: str, name: str) -> Iterator[None]:
    """Run a program on a tracepoint for this process only (perf event + link), below dynbpf._attach."""
    tp_id = fs.tracepoint_id(category, name)
    with (
        perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=0, cpu=-1) as pfd,
        commands.link_create(LinkCreateAttr(prog_fd=prog_fd, target_fd=pfd.raw, attach_type=AttachType.PERF_EVENT)),
    ):
        yield


def run_on_packet(prog_fd: int) -> int:
    """What a packet program returns for :data:`PACKET`, run once with BPF_PROG_TEST_RUN."""
    return commands.prog_test_run(prog_fd, data_in=PACKET).retval


def run_once(prog_fd: int) -> int:
    """What a program without a packet (syscall, raw_tp) returns, run once with BPF_PROG_TEST_RUN.

    repeat=0: those program types refuse a repeat count.
    """
    return commands.prog_test_run(prog_fd, repeat=0).retval


# --- tests/bpf/map_edits.bpf.c: the sizes it leaves to the loader, set both ways -----------------

CPUS = possible_cpus()
RING = 4 * 4096
BUF_ENTRIES = 64
BUF_SIZE = 8 + 8 * BUF_ENTRIES  # u32 buf_used (padded to 8), then u64 buf[BUF_ENTRIES]

#: What a tool would set from its command line and the machine, dynbpf's way...
EDITS = {
    "stacks": MapEdit(max_entries=1024, value_size=127 * 8),
    "per_cpu_slots": MapEdit(max_entries=CPUS),
    "rings": MapEdit(max_entries=CPUS, inner=MapEdit(max_entries=RING)),
    ".data.buf": MapEdit(value_size=BUF_SIZE),
}


def libbpf_edits(inner_ring: Fd) -> dict[str, dict[str, object]]:
    """... and libbpf's (1.1 takes an inner map template only from an existing map)."""
    return {
        "stacks": {"max_entries": 1024, "value_size": 127 * 8},
        "per_cpu_slots": {"max_entries": CPUS},
        "rings": {"max_entries": CPUS, "inner_map_fd": inner_ring.raw},
        ".data.buf": {"value_size": BUF_SIZE},
    }


def ring_buffer(size: int) -> Fd:
    return new_map(MapType.RINGBUF, key=0, value=0, entries=size, name=b"test_ring")


# --- objects ---------------------------------------------------------------------------------------


def btf_sections(obj: Path) -> tuple[bytes, bytes]:
    """An object's ``.BTF`` and ``.BTF.ext`` bytes, read by pyelftools (not by dynbpf)."""
    with obj.open("rb") as f:
        elf = ELFFile(f)
        btf, ext = elf.get_section_by_name(".BTF"), elf.get_section_by_name(".BTF.ext")
        assert btf is not None
        assert ext is not None
        return btf.data(), ext.data()


#: what every snippet of :func:`compile_snippet` starts with: vmlinux.h, the helpers, a license, MAP()
SNIPPET_PRELUDE = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
#define MAP(kind, name, k, v, n) \\
    struct { __uint(type, kind); __uint(max_entries, n); __type(key, k); __type(value, v); } name SEC(".maps")
"""


def compile_snippet(text: str, name: str = "t") -> Path:
    """A few lines of BPF C (after :data:`SNIPPET_PRELUDE`) compiled like the fixtures, cached by content."""
    return bpfbuild.compile_source(SNIPPET_PRELUDE + text, name)


def section_vars(obj: ObjectSpec, section: str) -> list[VariableSpec]:
    return [v for v in obj.variables.values() if v.section == section]


# --- BTF -----------------------------------------------------------------------------------------

#: one type of every BTF kind (and both enum64 signs), ids in the comments
ALL_KINDS: list[Type] = [
    Int("int", 4, IntEncoding.SIGNED, 0, 32),  # 1
    Int("_Bool", 1, IntEncoding.BOOL, 0, 8),  # 2
    Ptr(1),  # 3
    Array(1, 1, 16),  # 4
    Struct("s", 8, (Member("a", 1, 0), Member("b", 1, 32, 3), Member("", 18, 35, 5))),  # 5
    Union("u", 4, (Member("x", 1, 0), Member("y", 2, 0))),  # 6
    Enum("e", 4, True, (EnumValue("NEG", -2147483648), EnumValue("POS", 2147483647))),  # 7
    Enum64("e64", 8, False, (EnumValue("TOP", (1 << 64) - 1), EnumValue("ZERO", 0))),  # 8
    Enum64("s64", 8, True, (EnumValue("MIN", -(1 << 63)), EnumValue("ONE", 1))),  # 9
    Fwd("later", False),  # 10
    Fwd("later_u", True),  # 11
    Typedef("myint", 1),  # 12
    Volatile(1),  # 13
    Const(13),  # 14
    Restrict(3),  # 15
    TypeTag("user", 1),  # 16
    Func("f", 19, FuncLinkage.GLOBAL),  # 17
    Int("unsigned char", 1, IntEncoding.NONE, 0, 8),  # 18
    FuncProto(1, (Param("a", 1), Param("", 0))),  # 19
    Var("v", 1, VarLinkage.GLOBAL_ALLOCATED),  # 20
    Datasec(".data", 4, (VarSecinfo(20, 0, 4),)),  # 21
    Float("double", 8),  # 22
    DeclTag("tag", 17, 0),  # 23
    DeclTag("tag2", 5, -1),  # 24
]


# --- the running kernel's own files -------------------------------------------------------------------


@cache
def kallsyms() -> dict[str, int]:
    """/proc/kallsyms as name -> address (the first of a repeated name), read without dynbpf.

    Data symbols are listed only on kernels built with CONFIG_KALLSYMS_ALL, so what a kernel resolves
    through kallsyms is measured here rather than assumed.
    """
    out: dict[str, int] = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        address, _, name = line.split()[:3]
        out.setdefault(name, int(address, 16))
    return out


# --- bpftool's view of BTF -------------------------------------------------------------------------


def bpftool_types(path: Path, base: Path | None = None) -> list[dict[str, Any]]:
    """The types of a BTF file as ``bpftool btf dump -j`` lists them (split BTF read on ``base``)."""
    cmd = ["bpftool", "btf", "dump", "file", str(path), "-j"]
    if base is not None:
        cmd[1:1] = ["--base-btf", str(base)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    types: list[dict[str, Any]] = json.loads(out)["types"]
    return types


@cache
def kernel_types() -> dict[int, dict[str, Any]]:
    """The running kernel's BTF types by id, as bpftool dumps them."""
    return {t["id"]: t for t in bpftool_types(VMLINUX)}


def kernel_type(kind: str, name: str) -> dict[str, Any]:
    for t in kernel_types().values():
        if t["kind"] == kind and t["name"] == name:
            return t
    raise LookupError(f"{kind} {name} not in kernel BTF")


@cache
def perf_link_details() -> bool:
    """Whether this kernel's bpf_link_info describes perf_event links (6.6 on). Before, every link made on a
    perf event (tracepoint, kprobe, uprobe) reads back as kind ``perf_event``, with no name."""
    return "perf_event" in kernel_offsets(kernel_type("STRUCT", "bpf_link_info"))


def reported_kind(kind: str) -> str:
    """The kind the kernel's link info gives a perf-event-based link of ``kind``."""
    return kind if perf_link_details() else "perf_event"


def kernel_offsets(t: dict[str, Any], base: int = 0, prefix: str = "") -> dict[str, int]:
    """A kernel struct's fields: name -> byte offset, into anonymous members and named nested structs."""
    out: dict[str, int] = {}
    for m in t.get("members", []):
        off = base + m["bits_offset"] // 8
        sub = kernel_types()[m["type_id"]]
        while sub["kind"] in ("TYPEDEF", "CONST", "VOLATILE"):
            sub = kernel_types()[sub["type_id"]]
        if m["name"] in ("", "(anon)"):
            out.update(kernel_offsets(sub, off, prefix))
            continue
        out[prefix + m["name"]] = off
        if sub["kind"] in ("STRUCT", "UNION") and sub["name"] in ("", "(anon)"):
            out.update(kernel_offsets(sub, off, prefix + m["name"] + "."))
    return out


def ctypes_offsets(struct: type[ctypes.Structure], base: int = 0, prefix: str = "") -> dict[str, int]:
    """Our ctypes struct's fields, named like :func:`kernel_offsets` names the kernel's."""
    out: dict[str, int] = {}
    anonymous = getattr(struct, "_anonymous_", ())
    for name, ctype, *_ in struct._fields_:
        off = base + getattr(struct, name).offset
        if issubclass(ctype, ctypes.Structure | ctypes.Union):
            out.update(ctypes_offsets(ctype, off, "" if name in anonymous else prefix + name + "."))
        elif not name.startswith("_"):
            out[prefix + name] = off
    return out


# --- threads and processes -------------------------------------------------------------------------


def at_once(work: Callable[[], T], threads: int) -> list[T]:
    """What ``work`` returns in each of ``threads`` threads released together by a barrier.

    An exception in a thread is raised here, not lost with the thread.
    """
    barrier = threading.Barrier(threads)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(work())
        except BaseException as e:
            errors.append(e)

    started = [threading.Thread(target=run) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    if errors:
        raise errors[0]
    return results


def run_bench(*args: str, bench: str = "bench.prepare_load") -> str:
    """A benchmark's output, run as its docs say (``python -m bench.<name>`` at the repository root)."""
    proc = subprocess.run(
        [sys.executable, "-m", bench, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


# --- the features_app fixture (tests/bpf/features_app.bpf.c) -----------------------------------------

#: getpgid(SEQ_BASE + seq) is what features_app's getpgid programs count (seen[seq], counters[0])
SEQ_BASE = 0x40000000


def numbered_getpgid(seq: int) -> None:
    """One numbered event for features_app's getpgid programs (the call itself fails: no such process)."""
    with suppress(ProcessLookupError):
        os.getpgid(SEQ_BASE + seq)


def features_app_counter(app: Any, index: int = 0) -> int:
    """features_app's ``counters[index]``: [0] getpgid events, [1] their weights, [2] getppid events."""
    return int(app.collection.maps["counters"][index])


# --- the command line (tests/test_cli_*.py) ----------------------------------------------------------


def schema_errors(data: Any, schema: Any, where: str = "$") -> list[str]:
    """Where ``data`` departs from ``schema``: a type (or tuple of types) for a leaf, a dict for an object
    (exactly those keys; ``{str: schema}`` for any keys, each value matching), ``[schema]`` for a list of
    items each matching it. Golden schemas, not golden text: a command's JSON may change its values with
    the kernel, never its shape."""
    if isinstance(schema, dict) and list(schema) == [str]:
        if not isinstance(data, dict):
            return [f"{where}: expected an object, got {type(data).__name__}"]
        return [e for k, v in data.items() for e in schema_errors(v, schema[str], f"{where}.{k}")]
    if isinstance(schema, dict):
        if not isinstance(data, dict):
            return [f"{where}: expected an object, got {type(data).__name__}"]
        errors = [f"{where}: missing key {k!r}" for k in schema if k not in data]
        errors += [f"{where}: unexpected key {k!r}" for k in data if k not in schema]
        for key in schema.keys() & data.keys():
            errors += schema_errors(data[key], schema[key], f"{where}.{key}")
        return errors
    if isinstance(schema, list):
        if not isinstance(data, list):
            return [f"{where}: expected a list, got {type(data).__name__}"]
        return [e for i, item in enumerate(data) for e in schema_errors(item, schema[0], f"{where}[{i}]")]
    if isinstance(data, bool) and schema is int:
        return [f"{where}: expected int, got bool"]
    if not isinstance(data, schema):
        return [f"{where}: expected {schema}, got {type(data).__name__} {data!r}"]
    return []


def assert_schema(data: Any, schema: Any) -> None:
    errors = schema_errors(data, schema)
    assert not errors, "\n".join(errors)


@contextmanager
def private_cgroup() -> Iterator[str]:
    """A cgroup v2 directory of this test's own (cgroup programs go there, never on the host's), removed after."""
    root = attach_features.cgroup2_root()
    assert root is not None, "the test machine mounts cgroup2"
    path = os.path.join(root, f"dynbpf-attach-test-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:  # EBUSY until the exited child has left the cgroup
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
