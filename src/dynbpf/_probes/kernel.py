"""Verifier and runtime capabilities that are not a program or map type."""

from __future__ import annotations

import ctypes
import errno

from dynbpf._asm.insn import (
    R0,
    R1,
    Insn,
    alu64_imm,
    encode,
    exit_,
    jmp_imm,
    ld_map_value,
    mov64_imm,
    return_imm,
    st_mem,
)
from dynbpf._asm.opcodes import AluOp, Class, JmpOp, Size, Source
from dynbpf._asm.tag import prog_tag
from dynbpf._probes.programs import helper
from dynbpf._probes.result import Support, cached, outcome
from dynbpf._probes.trial import create_map, load
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType, Cmd, MapFlags, MapType, ProgType
from dynbpf._sys.rlimit import raise_memlock_limit
from dynbpf._sys.syscall import bpf_raw
from dynbpf.errors import SyscallError

BPF_FUNC_GET_ATTACH_COOKIE = 174
BPF_FUNC_KTIME_GET_COARSE_NS = 160


@cached
def global_data() -> Support:
    with create_map(MapType.ARRAY, 4, 8, 1) as m:
        if m.fd is None:
            return Support("global data", False, f"BPF_MAP_CREATE array -> {m.result}")
        prog = [ld_map_value(R1, m.fd.raw, 0), st_mem(Size.DW, R1, 0, 42), *return_imm(0)]
        with load(ProgType.SOCKET_FILTER, prog) as t:
            how = f"socket_filter storing through a map-value ldimm64 -> {t.result}"
            return Support("global data", t.ok, how)


@cached
def bounded_loops() -> Support:
    prog = [mov64_imm(R0, 0), alu64_imm(AluOp.ADD, R0, 1), jmp_imm(JmpOp.JLT, R0, 4, -2), exit_()]
    with load(ProgType.SOCKET_FILTER, prog) as t:
        return Support("bounded loops", t.ok, f"socket_filter with a 4-iteration backward jump -> {t.result}")


@cached
def isa_v4() -> Support:
    """cpu v4 instructions (movsx, sdiv, ldsx, gotol, bswap) produced by clang -mcpu=v4."""
    movsx = Insn(Class.ALU64 | AluOp.MOV | Source.X, R0, R1, 8, 0)  # r0 = (s8)r1
    with load(ProgType.SOCKET_FILTER, [movsx, *return_imm(0)]) as t:
        return Support("ISA v4 instructions", t.ok, f"socket_filter with movsx r0 = (s8)r1 -> {t.result}")


@cached
def prog_name() -> Support:
    with load(ProgType.SOCKET_FILTER, return_imm(0), name=b"dynbpf_probe") as t:
        return Support("program names", t.ok, f"socket_filter with prog_name -> {t.result}")


@cached
def sha256_tags() -> Support:
    """Whether the kernel tags programs with SHA-256 (newer kernels) rather than SHA-1 (``dynbpf._asm.tag``)."""
    prog = return_imm(7)
    with load(ProgType.SOCKET_FILTER, prog) as t:
        if t.fd is None:
            return Support("SHA-256 program tags", False, f"socket_filter load -> {t.result}")
        tag = bytes(commands.prog_info(t.fd.raw).tag).hex()
    code = encode(prog)
    sha256, sha1 = prog_tag(code, "sha256"), prog_tag(code, "sha1")
    if tag not in (sha256, sha1):
        return Support("SHA-256 program tags", False, f"kernel tag {tag} is neither sha256 {sha256} nor sha1 {sha1}")
    return Support("SHA-256 program tags", tag == sha256, f"a socket_filter's tag {tag}: sha256 {sha256}, sha1 {sha1}")


@cached
def mmapable_arrays() -> Support:
    with create_map(MapType.ARRAY, 4, 4, 1, map_flags=MapFlags.MMAPABLE) as m:
        return Support("mmapable arrays", m.ok, f"BPF_MAP_CREATE array with BPF_F_MMAPABLE -> {m.result}")


@cached
def prog_bind_map() -> Support:
    """BPF_PROG_BIND_MAP (5.10): a program can hold a map it does not reference (libbpf binds .rodata)."""
    with create_map(MapType.ARRAY, 4, 8, 1) as m, load(ProgType.SOCKET_FILTER, return_imm(0)) as t:
        if m.fd is None or t.fd is None:
            return Support("BPF_PROG_BIND_MAP", False, f"array -> {m.result}, socket_filter -> {t.result}")
        try:
            commands.prog_bind_map(t.fd.raw, m.fd.raw)
            err = 0
        except SyscallError as e:
            err = e.errno
        return Support(
            "BPF_PROG_BIND_MAP", err == 0, f"BPF_PROG_BIND_MAP of an array to a socket_filter -> {outcome(err)}"
        )


@cached
def batch_ops() -> Support:
    with create_map(MapType.HASH, 4, 4, 1) as m:
        if m.fd is None:
            return Support("map batch operations", False, f"BPF_MAP_CREATE hash -> {m.result}")
        keys = ctypes.create_string_buffer(4)
        values = ctypes.create_string_buffer(4)
        out = ctypes.create_string_buffer(4)
        try:
            commands.map_batch(Cmd.MAP_LOOKUP_BATCH, m.fd.raw, keys=keys, values=values, count=1, out_batch=out)
            err = 0
        except SyscallError as e:
            err = e.errno
        return Support("map batch operations", err == 0, f"BPF_MAP_LOOKUP_BATCH on an empty hash -> {outcome(err)}")


@cached
def bpf_cookie() -> Support:
    s = helper(ProgType.TRACEPOINT, BPF_FUNC_GET_ATTACH_COOKIE)
    return Support("bpf_cookie", s.supported, s.how)


@cached
def memcg_accounting() -> Support:
    """Kernels >= 5.11 charge BPF memory to the memory cgroup instead of RLIMIT_MEMLOCK.

    bpf_ktime_get_coarse_ns arrived in the same release, and libbpf uses it as
    the marker; so do we, so that both agree on when to raise the rlimit.
    """
    s = helper(ProgType.SOCKET_FILTER, BPF_FUNC_KTIME_GET_COARSE_NS)
    return Support("memcg-based memory accounting", s.supported, f"5.11 marker helper: {s.how}")


@cached
def perf_link() -> Support:
    with load(ProgType.TRACEPOINT, return_imm(0)) as t:
        if t.fd is None:
            return Support("perf_event links", False, f"tracepoint program load -> {t.result}")
        attr = LinkCreateAttr(prog_fd=t.fd.raw, target_fd=0xFFFFFFFF, attach_type=AttachType.PERF_EVENT)
        ret, err = bpf_raw(Cmd.LINK_CREATE, attr)
    ok = ret < 0 and err == errno.EBADF
    return Support(
        "perf_event links",
        ok,
        f"BPF_LINK_CREATE perf_event with target fd -1 -> {outcome(err)} (EBADF: the kernel knows the link kind)",
    )


def prepare_memlock() -> Support:
    """Raise RLIMIT_MEMLOCK if, and only if, the kernel still charges BPF memory to it.

    Returns the memcg probe so callers can log why the limit was or was not touched.
    """
    accounting = memcg_accounting()
    if not accounting.supported:
        raise_memlock_limit()
    return accounting
