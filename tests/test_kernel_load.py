"""Loading one prepared program: the log policy, and verifier errors that say what failed and where.

The parsing tests run on logs captured from the kernel (6.18) loading the
``broken`` fixture, so they need no kernel; the kernel tests load the fixture
for real and check that the error names the instruction and the source line
marked ``/* BAD: ... */`` in tests/bpf/broken.bpf.c.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dynbpf
from dynbpf._asm.insn import Insn, call, encode, exit_, ld_imm64, mov64_imm, return_imm
from dynbpf._asm.opcodes import Class, Mode, PseudoLd
from dynbpf._asm.slots import SlotMap
from dynbpf._btf.core import POISON_HELPER
from dynbpf._btf.kinds import Kind
from dynbpf._elf.sections import program_kind
from dynbpf._prepare.prepared import CoreFailure, PreparedProgram
from dynbpf._probes import attach
from dynbpf._probes.trial import kernel_btf_id
from dynbpf._runtime import verifier_log
from dynbpf._runtime.collection import Collection
from dynbpf._runtime.load import MIN_LOG_SIZE, LoadOptions, load_program, prog_name, verifier_error
from dynbpf._sys import commands
from dynbpf._sys.attrs import MapCreateAttr
from dynbpf._sys.constants import OBJ_NAME_LEN, AttachType, MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf.errors import VerifierError
from tests.bpfbuild import FIXTURES, build

# --- logs captured from the kernel -------------------------------------------------------------------------

BAD_MAP_VALUE_L1 = (
    "0: R1=ctx() R10=fp0\n"
    "; int bad_map_value(struct xdp_md *ctx) @ broken.bpf.c:35\n"
    "0: (bf) r6 = r1                       ; R1=ctx() R6=ctx()\n"
    "1: (b7) r1 = 0                        ; R1=0\n"
    "; __u32 key = 0; @ broken.bpf.c:37\n"
    "2: (63) *(u32 *)(r10 -4) = r1         ; R1=0 R10=fp0 fp-8=0000????\n"
    "3: (bf) r2 = r10                      ; R2=fp0 R10=fp0\n"
    ";  @ broken.bpf.c:0\n"
    "4: (07) r2 += -4                      ; R2=fp-4\n"
    "; __u64 *v = bpf_map_lookup_elem(&slots, &key); @ broken.bpf.c:38\n"
    "5: (18) r1 = 0xffff8881054bc400       ; R1=map_ptr(ks=4,vs=32)\n"
    "7: (85) call bpf_map_lookup_elem#1    ; R0=map_value(ks=4,vs=32)\n"
    "8: (bf) r1 = r0                       ; R0=map_value(ks=4,vs=32) R1=map_value(ks=4,vs=32)\n"
    "9: (b7) r0 = 2                        ; R0=2\n"
    "; if (!v) @ broken.bpf.c:40\n"
    "10: (15) if r1 == 0x0 goto pc+8       ; R1=map_value(ks=4,vs=32)\n"
    "; return v[ctx->rx_queue_index & 7] ? XDP_PASS : XDP_DROP; /* BAD: map value */ @ broken.bpf.c:42\n"
    "11: (61) r2 = *(u32 *)(r6 +16)        ; R2=scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff)) "
    "R6=ctx()\n"
    "12: (57) r2 &= 7                      ; R2=scalar(smin=smin32=0,smax=umax=smax32=umax32=7,var_off=(0x0; 0x7))\n"
    "13: (67) r2 <<= 3                     ; R2=scalar(smin=smin32=0,smax=umax=smax32=umax32=56,var_off=(0x0; 0x38))\n"
    "14: (0f) r1 += r2                     ; R1=map_value(ks=4,vs=32,smin=smin32=0,smax=umax=smax32=umax32=56,"
    "var_off=(0x0; 0x38)) R2=scalar(smin=smin32=0,smax=umax=smax32=umax32=56,var_off=(0x0; 0x38))\n"
    "15: (79) r1 = *(u64 *)(r1 +0)\n"
    "invalid access to map value, value_size=32 off=56 size=8\n"
    "R1 max value is outside of the allowed memory range\n"
    "processed 15 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
)

# The same failure at log level 2: a liveness table first, precision backtracking between instructions.
BAD_MAP_VALUE_L2 = (
    "func#0 @0\n"
    "Live regs before insn:\n"
    "      0: .1........ (bf) r6 = r1\n"
    "      1: ......6... (b7) r1 = 0\n"
    "      2: .1....6... (63) *(u32 *)(r10 -4) = r1\n"
    "      3: ......6... (bf) r2 = r10\n"
    "      4: ..2...6... (07) r2 += -4\n"
    "      5: ..2...6... (18) r1 = 0xffff8881054bc400\n"
    "      7: .12...6... (85) call bpf_map_lookup_elem#1\n"
    "      8: 0.....6... (bf) r1 = r0\n"
    "      9: .1....6... (b7) r0 = 2\n"
    "     10: 01....6... (15) if r1 == 0x0 goto pc+8\n"
    "     11: .1....6... (61) r2 = *(u32 *)(r6 +16)\n"
    "     12: .12....... (57) r2 &= 7\n"
    "     13: .12....... (67) r2 <<= 3\n"
    "     14: .12....... (0f) r1 += r2\n"
    "     15: .1........ (79) r1 = *(u64 *)(r1 +0)\n"
    "     16: .1........ (b7) r0 = 1\n"
    "     17: 01........ (15) if r1 == 0x0 goto pc+1\n"
    "     18: .......... (b7) r0 = 2\n"
    "     19: 0......... (95) exit\n"
    "0: R1=ctx() R10=fp0\n"
    "; int bad_map_value(struct xdp_md *ctx) @ broken.bpf.c:35\n"
    "0: (bf) r6 = r1                       ; R1=ctx() R6=ctx()\n"
    "1: (b7) r1 = 0                        ; R1=0\n"
    "; __u32 key = 0; @ broken.bpf.c:37\n"
    "2: (63) *(u32 *)(r10 -4) = r1\n"
    "mark_precise: frame0: last_idx 2 first_idx 0 subseq_idx -1 \n"
    "mark_precise: frame0: regs=r1 stack= before 1: (b7) r1 = 0\n"
    "3: R1=0 R10=fp0 fp-8=0000????\n"
    "3: (bf) r2 = r10                      ; R2=fp0 R10=fp0\n"
    ";  @ broken.bpf.c:0\n"
    "4: (07) r2 += -4                      ; R2=fp-4\n"
    "; __u64 *v = bpf_map_lookup_elem(&slots, &key); @ broken.bpf.c:38\n"
    "5: (18) r1 = 0xffff8881054bc400       ; R1=map_ptr(ks=4,vs=32)\n"
    "7: (85) call bpf_map_lookup_elem#1    ; R0=map_value(ks=4,vs=32)\n"
    "8: (bf) r1 = r0                       ; R0=map_value(ks=4,vs=32) R1=map_value(ks=4,vs=32)\n"
    "9: (b7) r0 = 2                        ; R0=2\n"
    "; if (!v) @ broken.bpf.c:40\n"
    "10: (15) if r1 == 0x0 goto pc+8       ; R1=map_value(ks=4,vs=32)\n"
    "; return v[ctx->rx_queue_index & 7] ? XDP_PASS : XDP_DROP; /* BAD: map value */ @ broken.bpf.c:42\n"
    "11: (61) r2 = *(u32 *)(r6 +16)        ; R2=scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff)) "
    "R6=ctx()\n"
    "12: (57) r2 &= 7                      ; R2=scalar(smin=smin32=0,smax=umax=smax32=umax32=7,var_off=(0x0; 0x7))\n"
    "13: (67) r2 <<= 3                     ; R2=scalar(smin=smin32=0,smax=umax=smax32=umax32=56,var_off=(0x0; 0x38))\n"
    "14: (0f) r1 += r2\n"
    "mark_precise: frame0: last_idx 14 first_idx 0 subseq_idx -1 \n"
    "mark_precise: frame0: regs=r2 stack= before 13: (67) r2 <<= 3\n"
    "mark_precise: frame0: regs=r2 stack= before 12: (57) r2 &= 7\n"
    "mark_precise: frame0: regs=r2 stack= before 11: (61) r2 = *(u32 *)(r6 +16)\n"
    "15: R1=map_value(ks=4,vs=32,smin=smin32=0,smax=umax=smax32=umax32=56,var_off=(0x0; 0x38)) "
    "R2=scalar(smin=smin32=0,smax=umax=smax32=umax32=56,var_off=(0x0; 0x38))\n"
    "15: (79) r1 = *(u64 *)(r1 +0)\n"
    "invalid access to map value, value_size=32 off=56 size=8\n"
    "R1 max value is outside of the allowed memory range\n"
    "processed 15 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
)

BAD_CORE_L1 = (
    "0: R1=ctx() R10=fp0\n"
    "; int bad_core(struct xdp_md *ctx) @ broken.bpf.c:59\n"
    "0: (b7) r0 = 1                        ; R0=1\n"
    "; if (ctx->ingress_ifindex == 0) @ broken.bpf.c:63\n"
    "1: (61) r2 = *(u32 *)(r1 +12)         ; R1=ctx() R2=scalar(smin=0,smax=umax=0xffffffff,"
    "var_off=(0x0; 0xffffffff))\n"
    "2: (15) if r2 == 0x0 goto pc+4        ; R2=scalar(smin=umin=umin32=1,smax=umax=0xffffffff,"
    "var_off=(0x0; 0xffffffff))\n"
    "; return m->no_such_field ? XDP_PASS : XDP_DROP; /* BAD: core */ @ broken.bpf.c:65\n"
    "3: (85) call unknown#195896080\n"
    "invalid func unknown#195896080\n"
    "processed 4 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
)

# A failure inside a static subprogram: caller/callee frames between the call and the failing load.
IN_SUBPROGRAM_L1 = (
    "0: R1=ctx() R10=fp0\n"
    "; int in_static(struct xdp_md *ctx) @ sub.bpf.c:5\n"
    "0: (79) r1 = *(u64 *)(r10 -8)         ; R1=scalar() R10=fp0\n"
    "1: (85) call pc+7\n"
    "caller:\n"
    " R10=fp0\n"
    "callee:\n"
    " frame1: R1=scalar() R10=fp0\n"
    "9: frame1: R1=scalar() R10=fp0\n"
    "; static __noinline int deref(__u32 *p) { return *p & 1; } @ sub.bpf.c:3\n"
    "9: (61) r0 = *(u32 *)(r1 +0)\n"
    "R1 invalid mem access 'scalar'\n"
    "processed 3 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
)

GLOBAL_FUNCTION_L1 = (
    "Validating global_check() func#1...\n"
    "8: R1=ctx() R10=fp0\n"
    "; int global_check(struct xdp_md *ctx) @ sub.bpf.c:4\n"
    "8: (79) r1 = *(u64 *)(r10 -8)         ; R1=scalar() R10=fp0\n"
    "9: (61) r0 = *(u32 *)(r1 +0)\n"
    "R1 invalid mem access 'scalar'\n"
    "processed 11 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0\n"
)

# Checks made before the instruction walk: no instruction lines, the message names the instruction if any.
PROCESSED_0 = "processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
UNREACHABLE = "unreachable insn 2\n" + PROCESSED_0
OUT_OF_RANGE = "jump out of range from insn 0 to 6\n" + PROCESSED_0
NO_EXIT = "last insn is not an exit or jmp\n" + PROCESSED_0
BAD_OPCODE = "unknown opcode ff\n" + PROCESSED_0
R0_UNSET = (
    "0: R1=ctx() R10=fp0\n"
    "0: (95) exit\n"
    "R0 !read_ok\n"
    "processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
)


# --- parsing --------------------------------------------------------------------------------------------


def test_failing_instruction_is_the_last_one_walked() -> None:
    r = verifier_log.rejection(BAD_MAP_VALUE_L1)
    assert r.instruction == 15
    assert r.instruction_text == "(79) r1 = *(u64 *)(r1 +0)"
    assert r.message == "invalid access to map value, value_size=32 off=56 size=8\n" + (
        "R1 max value is outside of the allowed memory range"
    )
    assert not r.core_poisoned


def test_level_2_noise_is_not_the_message() -> None:
    assert verifier_log.rejection(BAD_MAP_VALUE_L2) == verifier_log.rejection(BAD_MAP_VALUE_L1)


def test_a_rotated_log_still_names_the_instruction() -> None:
    # A log that overflowed keeps its end (6.4+): the head, with the liveness table, is gone.
    cut = BAD_MAP_VALUE_L2[len(BAD_MAP_VALUE_L2) // 2 :]
    assert verifier_log.rejection(cut) == verifier_log.rejection(BAD_MAP_VALUE_L1)


def test_failures_in_subprograms_count_slots_of_the_whole_program() -> None:
    for log in (IN_SUBPROGRAM_L1, GLOBAL_FUNCTION_L1):
        r = verifier_log.rejection(log)
        assert r.instruction == 9
        assert r.message == "R1 invalid mem access 'scalar'"


def test_core_poison_is_recognised() -> None:
    r = verifier_log.rejection(BAD_CORE_L1)
    assert r.instruction == 3
    assert r.message == "invalid func unknown#195896080"
    assert r.core_poisoned


@pytest.mark.parametrize(
    ("log", "instruction", "message"),
    [
        (UNREACHABLE, 2, "unreachable insn 2"),
        (OUT_OF_RANGE, 0, "jump out of range from insn 0 to 6"),
        (NO_EXIT, None, "last insn is not an exit or jmp"),
        (BAD_OPCODE, None, "unknown opcode ff"),
        (R0_UNSET, 0, "R0 !read_ok"),
        ("", None, ""),
        ("func#0 @0\n", None, ""),
    ],
)
def test_checks_before_the_walk(log: str, instruction: int | None, message: str) -> None:
    r = verifier_log.rejection(log)
    assert (r.instruction, r.message) == (instruction, message)


@given(st.lists(st.sampled_from([*BAD_MAP_VALUE_L2.splitlines(), *IN_SUBPROGRAM_L1.splitlines(), "", " "])))
def test_any_arrangement_of_log_lines_parses(lines: list[str]) -> None:
    r = verifier_log.rejection("\n".join(lines))
    assert r.instruction is None or r.instruction >= 0
    assert (r.instruction_text is None) or (r.instruction is not None)


@given(st.text())
def test_any_text_parses(log: str) -> None:
    verifier_log.rejection(log)
    verifier_log.processed_insns(log)


def test_processed_insns_and_tail() -> None:
    assert verifier_log.processed_insns(BAD_MAP_VALUE_L2) == 15
    assert verifier_log.processed_insns(UNREACHABLE) == 0
    assert verifier_log.processed_insns("") is None
    assert verifier_log.tail(BAD_CORE_L1, 2) == (
        "invalid func unknown#195896080\n" + PROCESSED_0.rstrip().replace("0 insns", "4 insns")
    )


def _xdp(name: str, insns: list[Insn], **fields: object) -> PreparedProgram:
    return PreparedProgram(
        name=name,
        kind=program_kind("xdp"),
        license="GPL",
        kernel_version=0,
        code=encode(insns),
        **fields,  # type: ignore[arg-type]
    )


def test_error_text_shows_instruction_source_and_core_failure() -> None:
    from dynbpf._btf.ext import LineInfo

    insns = [mov64_imm(0, 1), ld_imm64(1, 7), call(POISON_HELPER), mov64_imm(0, 2), exit_()]
    line = LineInfo(0, "/src/x.bpf.c", "    return m->gone;", 12, 5)
    p = _xdp(
        "x",
        insns,
        lines=((0, "x"),),
        sources={"x": ((3, line),)}.__getitem__,
        core_failures=(CoreFailure(3, "<byte_off> struct m.gone (0:0)"),),
    )
    log = "3: (85) call unknown#195896080\ninvalid func unknown#195896080\n" + PROCESSED_0
    e = verifier_error(p, errno.EINVAL, log)
    assert (e.program, e.errno, e.instruction) == ("x", errno.EINVAL, 3)  # slot 3: the ldimm64 counts twice
    assert e.disassembly == "call 195896080"
    assert e.source == "/src/x.bpf.c:12:5: return m->gone;"
    assert e.core == "<byte_off> struct m.gone (0:0)"
    text = str(e)
    for part in (
        "BPF_PROG_LOAD failed: EINVAL",
        "program 'x'",
        "the verifier rejected the program",
        "verifier: invalid func unknown#195896080",
        "at instruction 3: call 195896080",
        "source: /src/x.bpf.c:12:5: return m->gone;",
        "CO-RE relocation failed: <byte_off> struct m.gone (0:0)",
        "verifier log (last lines):\n3: (85) call unknown#195896080",
    ):
        assert part in text, part
    assert "older than the feature" not in text  # the generic EINVAL reading would mislead here


def test_error_without_a_log_keeps_the_errno_hint() -> None:
    e = verifier_error(_xdp("y", return_imm(0)), errno.E2BIG, "")
    assert (e.instruction, e.message, e.source) == (None, "", None)
    assert "older than the feature" in str(e)


def test_unrecorded_poison_is_still_named() -> None:
    insns = [call(POISON_HELPER), exit_()]
    e = verifier_error(_xdp("z", insns), errno.EINVAL, "0: (85) call unknown#195896080\ninvalid func unknown#195896080")
    assert "poisoned by CO-RE" in (e.core or "")


def test_prog_name_follows_libbpf_and_the_kernel_charset() -> None:
    assert prog_name("handle_sys_enter_execve") == b"handle_sys_ente"
    assert len(prog_name("x" * 40)) == OBJ_NAME_LEN - 1
    assert prog_name("a.b_c9") == b"a.b_c9"
    assert prog_name("tc-ingress$1") == b"tc_ingress_1"


def test_both_attach_fds_are_refused() -> None:
    with pytest.raises(ValueError, match="share one field"):
        load_program(_xdp("w", return_imm(0)), options=LoadOptions(attach_prog_fd=5, attach_btf_obj_fd=6))


# --- programs from the broken fixture, loaded for real ---------------------------------------------------


@dataclasses.dataclass
class Broken:
    """The broken fixture opened with ``dynbpf.open``: its prepared programs and its BTF in the kernel."""

    coll: Collection

    @property
    def btf_fd(self) -> int:
        fd = self.coll.prepared.btf_fd
        assert fd is not None
        return fd.raw

    def prepared(self, name: str) -> PreparedProgram:
        return self.coll.prepared.programs[name]

    def load(self, name: str, options: LoadOptions | None = None) -> Fd:
        return load_program(self.prepared(name), btf_fd=self.btf_fd, options=options or LoadOptions()).fd


@pytest.fixture(scope="module")
def broken() -> Iterator[Broken]:
    with dynbpf.open(build("broken")) as coll:
        yield Broken(coll)


def bad_line(marker: str) -> int:
    """The line of tests/bpf/broken.bpf.c marked ``/* BAD: <marker> */``."""
    lines = (FIXTURES / "broken.bpf.c").read_text().splitlines()
    (number,) = [n for n, text in enumerate(lines, 1) if f"/* BAD: {marker} */" in text]
    return number


def rejected(broken: Broken, name: str, options: LoadOptions | None = None) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        broken.load(name, options).close()
    return info.value


@pytest.mark.kernel
@pytest.mark.needs_clang
@pytest.mark.parametrize(
    "case",
    [
        ("bad_map_value", "map value", errno.EACCES, "invalid access to map value, value_size=32 off=56 size=8"),
        ("bad_stack", "stack", errno.EACCES, "R1 invalid mem access 'scalar'"),
        ("bad_core", "core", errno.EINVAL, "invalid func unknown#195896080"),
    ],
    ids=lambda case: case[0],
)
def test_rejection_names_instruction_and_source_line(
    broken: Broken, case: tuple[str, str, int, str], no_fd_leak: None
) -> None:
    program, marker, errno_, message = case
    with pytest.raises(VerifierError) as info:
        broken.coll.programs[program].load()
    e = info.value
    assert not broken.coll.programs[program].loaded
    p = broken.prepared(program)
    assert e.program == program
    assert e.errno == errno_
    assert e.message.splitlines()[0] == message
    assert e.instruction is not None
    assert e.source is not None
    assert e.source.startswith(f"{FIXTURES / 'broken.bpf.c'}:{bad_line(marker)}:")
    assert f"/* BAD: {marker} */" in e.source
    insn = p.instructions[SlotMap.of(p.instructions).index(e.instruction)]  # type: ignore[index]
    assert e.disassembly == str(insn)
    if program == "bad_core":
        assert "no_such_field" in (e.core or "")
        assert e.core == p.core_failure(e.instruction).description  # type: ignore[union-attr]
    else:
        assert e.core is None
        assert (insn.cls, insn.mode) == (Class.LDX, Mode.MEM)  # the load the verifier refused
    assert f"at instruction {e.instruction}: {insn}" in str(e)
    assert e.log.rstrip().endswith(verifier_log.tail(e.log, 1))
    assert verifier_log.processed_insns(e.log) is not None


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_program_keeps_the_log_it_asked_for(broken: Broken, no_fd_leak: None) -> None:
    program = broken.coll.programs["good"]
    program.load(log_level=2)
    try:
        assert (verifier_log.processed_insns(program.log) or 0) >= program.prepared.insn_count
        assert program.seconds > 0
    finally:
        program.unload()
    program.load()
    try:
        assert program.log == ""
    finally:
        program.unload()


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_success_without_a_log_request_fetches_none(broken: Broken, no_fd_leak: None) -> None:
    loaded = load_program(broken.prepared("good"), btf_fd=broken.btf_fd)
    with loaded.fd:
        assert loaded.log == ""
        assert 0 < loaded.seconds < 10
        info = commands.prog_info(loaded.fd.raw)
        assert info.type == ProgType.XDP
        assert info.name == b"good"
        assert info.nr_func_info == 1
        assert info.nr_line_info == broken.prepared("good").line_info_count > 0


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_without_btf_no_func_or_line_info_goes_along(broken: Broken, no_fd_leak: None) -> None:
    with load_program(broken.prepared("good")).fd as fd:
        info = commands.prog_info(fd.raw)
        assert (info.nr_func_info, info.nr_line_info) == (0, 0)
    e = rejected_without_btf(broken, "bad_map_value")
    assert e.instruction == 15  # the log names the slot; line_info is only for the source line
    assert e.source is not None  # from the PreparedProgram, not from the kernel


def rejected_without_btf(broken: Broken, name: str) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        load_program(broken.prepared(name)).fd.close()
    return info.value


@pytest.mark.kernel
@pytest.mark.needs_clang
@pytest.mark.parametrize("level", [1, 2])
def test_requested_log_of_a_success(broken: Broken, level: int, no_fd_leak: None) -> None:
    p = broken.prepared("good")
    loaded = load_program(p, btf_fd=broken.btf_fd, options=LoadOptions(log_level=level))
    with loaded.fd:
        assert (verifier_log.processed_insns(loaded.log) or 0) >= p.insn_count
        if level == 2:  # every instruction with its state, and source lines from line_info
            assert "(95) exit" in loaded.log
            sources = [line for line in loaded.log.splitlines() if line.startswith("; ")]
            assert any("ctx->data_end" in line for line in sources)
            # from 6.4 a source line also names its file and line
            assert all(" @ broken.bpf.c:" in line for line in sources if " @ " in line)


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_log_buffer_grows_from_tiny(broken: Broken, no_fd_leak: None) -> None:
    p = broken.prepared("good")
    loaded = load_program(p, btf_fd=broken.btf_fd, options=LoadOptions(log_level=2, log_size=MIN_LOG_SIZE))
    with loaded.fd:
        assert len(loaded.log) > 20 * MIN_LOG_SIZE
        assert loaded.log.startswith("func#0 @0\n")  # the whole log, not the tail a rotated buffer keeps
        assert verifier_log.processed_insns(loaded.log) is not None
    # the same for a failure: the error carries the complete log
    e = rejected(broken, "bad_map_value", LoadOptions(log_level=2, log_size=1))
    assert e.errno == errno.EACCES
    assert e.log.startswith("func#0 @0\n")
    assert "mark_precise" in e.log or "last_idx" in e.log  # precision tracking, as 6.4+ / older kernels log it
    assert e.instruction == 15


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_concurrent_loads_never_share_a_log(broken: Broken, no_fd_leak: None) -> None:
    """Verification is deterministic, so every concurrent log must equal the one a lone load gets."""
    good, bad = broken.prepared("good"), broken.prepared("bad_map_value")
    level2 = LoadOptions(log_level=2)
    alone = load_program(good, btf_fd=broken.btf_fd, options=level2)
    alone.fd.close()
    good_log = alone.log
    bad_log = rejected(broken, "bad_map_value").log
    threads, rounds = 8, 20
    barrier = threading.Barrier(threads)
    problems: list[str] = []

    def work(i: int) -> None:
        barrier.wait()
        for r in range(rounds):
            try:
                if (i + r) % 2:
                    loaded = load_program(good, btf_fd=broken.btf_fd, options=level2)
                    loaded.fd.close()
                    if loaded.log != good_log:
                        problems.append(f"thread {i}: good's log differs: {loaded.log[-300:]!r}")
                else:
                    load_program(bad, btf_fd=broken.btf_fd).fd.close()
                    problems.append(f"thread {i}: bad_map_value loaded")
            except VerifierError as e:
                if (e.program, e.log, e.instruction) != ("bad_map_value", bad_log, 15):
                    problems.append(f"thread {i}: bad's error differs: {e.log[-300:]!r}")
            except Exception as e:  # anything else is a failure to report, not to lose in a thread
                problems.append(f"thread {i}: {e!r}")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert problems == []


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_options_reach_the_kernel(broken: Broken, no_fd_leak: None) -> None:
    e = rejected(broken, "good", LoadOptions(prog_flags=1 << 30))  # no such flag
    assert e.errno == errno.EINVAL
    assert e.instruction is None
    long_name = dataclasses.replace(broken.prepared("good"), name="good_program_with_a_long-name")
    with load_program(long_name).fd as fd:
        assert commands.prog_info(fd.raw).name == b"good_program_wi"


@pytest.mark.kernel
def test_fd_array_carries_map_fds(no_fd_leak: None) -> None:
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1)
    with commands.map_create(attr) as m:
        insns = [ld_imm64(1, 1, src=PseudoLd.MAP_IDX), mov64_imm(0, 2), exit_()]
        p = _xdp("by_index", insns, fd_array=(0, m.raw))
        with load_program(p).fd as fd:
            assert commands.prog_map_ids(fd.raw) == [commands.map_info(m.raw).id]


@pytest.mark.kernel
def test_trampoline_refusal_is_explained(no_fd_leak: None) -> None:
    target = kernel_btf_id("bpf_fentry_test1", Kind.FUNC)
    assert target is not None
    insns = return_imm(0)
    p = PreparedProgram(
        name="fentry_probe",
        kind=program_kind("fentry/bpf_fentry_test1"),
        license="GPL",
        kernel_version=0,
        code=encode(insns),
        attach_btf_id=target,
        expected_attach_type=AttachType.TRACE_FENTRY,
    )
    if attach.trampolines():
        load_program(p).fd.close()
        return
    with pytest.raises(VerifierError) as info:
        load_program(p).fd.close()
    assert info.value.errno == errno.EPERM
    assert "trampoline" in str(info.value)
    assert "kprobe" in str(info.value)  # what to do instead
