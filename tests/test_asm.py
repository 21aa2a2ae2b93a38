"""The instruction model: encoding, decoding, accessors and slot offsets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynbpf._asm.disasm import UNKNOWN, text
from dynbpf._asm.insn import (
    LD_IMM64,
    R0,
    R1,
    R2,
    R10,
    Insn,
    call,
    decode,
    encode,
    exit_,
    jmp_imm,
    ld_imm64,
    ld_map_fd,
    ld_map_value,
    mov64_imm,
    return_imm,
    stx_mem,
)
from dynbpf._asm.opcodes import (
    MAY_GOTO,
    SIGNED_DIV,
    AluOp,
    AtomicOp,
    Class,
    Endian,
    JmpOp,
    Mode,
    PseudoCall,
    PseudoLd,
    Size,
    Source,
)
from dynbpf._asm.slots import SlotMap, slot_offsets
from dynbpf.errors import ObjectFormatError


def test_smallest_program() -> None:
    assert encode(return_imm(0)) == bytes.fromhex("b7000000000000009500000000000000")


def test_negative_immediate_and_call() -> None:
    assert mov64_imm(R1, -1).encode() == bytes.fromhex("b701 0000 ffffffff".replace(" ", ""))
    assert call(1).encode() == bytes.fromhex("8500000001000000")
    assert exit_().encode()[0] == 0x95


def test_ldimm64_takes_two_slots() -> None:
    insn = ld_map_fd(R1, 7)
    assert insn.slots == 2
    assert insn.encode() == bytes.fromhex("18110000070000000000000000000000")
    value = ld_map_value(R0, 5, offset=16)
    assert value.encode() == bytes.fromhex("18200000050000000000000010000000")


def test_store_register_encoding() -> None:
    # *(u64 *)(r10 - 8) = r1 : opcode 0x7b, dst r10, src r1, off -8
    assert stx_mem(Size.DW, R10, R1, -8).encode() == bytes.fromhex("7b1af8ff00000000")


def test_decode_joins_ldimm64_and_round_trips() -> None:
    prog = [ld_map_value(R1, 5, offset=16), mov64_imm(R0, -7), call(1), exit_()]
    code = encode(prog)
    decoded = decode(code)
    assert len(decoded) == 4
    assert decoded[0].imm == (16 << 32) | 5
    assert decoded[0].src == 2
    assert decoded[1].imm == -7
    assert encode(decoded) == code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (b"\x95" + b"\0" * 6, "not a multiple of 8"),
        (bytes.fromhex("1811000007000000"), "missing its second slot"),
        (bytes.fromhex("18110000070000009500000000000000"), "malformed second slot"),
    ],
)
def test_decode_rejects_malformed_code_with_offset(code: bytes, message: str) -> None:
    with pytest.raises(ObjectFormatError, match=message) as exc:
        decode(code, section="xdp", base=0x40)
    assert exc.value.section == "xdp"
    assert exc.value.offset is not None
    assert exc.value.offset >= 0x40


def test_decode_shares_equal_instructions_through_known() -> None:
    """One Insn per distinct encoding across calls; results equal a decode without sharing."""
    first = encode([mov64_imm(R0, 1), ld_map_fd(R1, 7), mov64_imm(R0, 1), exit_()])
    second = encode([ld_map_fd(R1, 7), exit_(), mov64_imm(R0, 2)])
    known: dict[bytes, Insn] = {}
    a, b = decode(first, known=known), decode(second, known=known)
    assert a == decode(first)
    assert b == decode(second)
    assert a[0] is a[2]  # within one call
    assert b[0] is a[1]
    assert b[1] is a[3]
    assert len(known) == 4  # mov r0 1, the ldimm64 pair, exit, mov r0 2
    # a known first slot does not let a malformed second slot through, nor a missing one
    with pytest.raises(ObjectFormatError, match="malformed second slot"):
        decode(first[8:16] + bytes.fromhex("9500000000000000"), known=known)
    with pytest.raises(ObjectFormatError, match="missing its second slot"):
        decode(first[8:16], known=known)


@given(st.binary(max_size=512).map(lambda b: b[: len(b) - len(b) % 8]))
def test_decode_is_total_and_exact(code: bytes) -> None:
    """Any byte string either decodes and re-encodes to itself, or is a clean ObjectFormatError."""
    try:
        insns = decode(code)
    except ObjectFormatError:
        return
    assert encode(insns) == code


# --- the model: accessors, targets, slots --------------------------------------------

regs = st.integers(0, 10)
off16 = st.integers(-(1 << 15), (1 << 15) - 1)
imm32 = st.integers(-(1 << 31), (1 << 31) - 1)
sizes = st.sampled_from(list(Size))
ALU_OPS = [op for op in AluOp if op not in (AluOp.NEG, AluOp.MOV, AluOp.END)]
COND_OPS = [op for op in JmpOp if op not in (JmpOp.JA, JmpOp.CALL, JmpOp.EXIT, JmpOp.JCOND)]
LOCKED = [AtomicOp.ADD, AtomicOp.OR, AtomicOp.AND, AtomicOp.XOR]
RMW = [op for op in AtomicOp if op not in (AtomicOp.LOAD_ACQ, AtomicOp.STORE_REL)]


@st.composite
def valid_insns(draw: st.DrawFn) -> Insn:
    """Any instruction the 6.18 uapi defines, with unused fields zero (as clang emits them)."""
    d, s = draw(regs), draw(regs)
    alu = draw(st.sampled_from([Class.ALU, Class.ALU64]))
    jmp = draw(st.sampled_from([Class.JMP, Class.JMP32]))
    kind = draw(st.integers(0, 17))
    if kind == 0:
        op = draw(st.sampled_from(ALU_OPS))
        off = draw(st.sampled_from([0, SIGNED_DIV])) if op in (AluOp.DIV, AluOp.MOD) else 0
        if draw(st.booleans()):
            return Insn(alu | op | Source.X, d, s, off)
        return Insn(alu | op | Source.K, d, 0, off, draw(imm32))
    if kind == 1:
        return Insn(alu | AluOp.MOV | Source.K, d, 0, 0, draw(imm32))
    if kind == 2:
        bits = [0, 8, 16] + ([32] if alu == Class.ALU64 else [])
        return Insn(alu | AluOp.MOV | Source.X, d, s, draw(st.sampled_from(bits)))
    if kind == 3:
        return Insn(alu | AluOp.NEG, d)
    if kind == 4:
        source = draw(st.sampled_from(list(Endian))) if alu == Class.ALU else Source.K
        return Insn(alu | AluOp.END | source, d, 0, 0, draw(st.sampled_from([16, 32, 64])))
    if kind == 5:
        op = draw(st.sampled_from(COND_OPS))
        if draw(st.booleans()):
            return Insn(jmp | op | Source.X, d, s, draw(off16))
        return Insn(jmp | op | Source.K, d, 0, draw(off16), draw(imm32))
    if kind == 6:
        return Insn(Class.JMP | JmpOp.JA, off=draw(off16))
    if kind == 7:
        return Insn(Class.JMP32 | JmpOp.JA, imm=draw(imm32))
    if kind == 8:
        return Insn(Class.JMP | JmpOp.CALL, src=draw(st.sampled_from(list(PseudoCall))), imm=draw(imm32))
    if kind == 9:
        return draw(st.sampled_from([exit_(), Insn(Class.JMP | JmpOp.JCOND, src=MAY_GOTO, off=draw(off16))]))
    if kind == 10:
        return Insn(LD_IMM64, d, draw(st.sampled_from([0, *PseudoLd])), 0, draw(st.integers(0, (1 << 64) - 1)))
    if kind == 11:
        size = draw(st.sampled_from([Size.B, Size.H, Size.W]))
        if draw(st.booleans()):
            return Insn(Class.LD | Mode.ABS | size, imm=draw(imm32))
        return Insn(Class.LD | Mode.IND | size, src=s, imm=draw(imm32))
    if kind == 12:
        return Insn(Class.LDX | Mode.MEM | draw(sizes), d, s, draw(off16))
    if kind == 13:
        return Insn(Class.LDX | Mode.MEMSX | draw(st.sampled_from([Size.B, Size.H, Size.W])), d, s, draw(off16))
    if kind == 14:
        return Insn(Class.ST | Mode.MEM | draw(sizes), d, 0, draw(off16), draw(imm32))
    if kind == 15:
        return Insn(Class.STX | Mode.MEM | draw(sizes), d, s, draw(off16))
    if kind == 16:
        size = draw(st.sampled_from([Size.W, Size.DW]))
        return Insn(Class.STX | Mode.ATOMIC | size, d, s, draw(off16), draw(st.sampled_from(RMW)))
    op = draw(st.sampled_from([AtomicOp.LOAD_ACQ, AtomicOp.STORE_REL]))
    return Insn(Class.STX | Mode.ATOMIC | draw(sizes), d, s, draw(off16), op)


@given(st.lists(valid_insns(), max_size=40))
def test_valid_programs_round_trip_and_disassemble(prog: list[Insn]) -> None:
    code = encode(prog)
    assert decode(code) == prog
    assert len(code) == 8 * sum(i.slots for i in prog)
    for insn in prog:
        assert text(insn) != UNKNOWN, insn
        assert text(insn, alu32=True) != UNKNOWN, insn


@given(st.lists(valid_insns(), max_size=40))
def test_slot_map_inverts_slot_offsets(prog: list[Insn]) -> None:
    starts = slot_offsets(prog)
    layout = SlotMap.of(prog)
    assert list(layout.starts) == starts
    assert layout.total_slots * 8 == len(encode(prog))
    for index, slot in enumerate(starts):
        assert layout.slot(index) == slot
        assert layout.index(slot) == index
        assert layout.index_at_byte(slot * 8) == index
        assert layout.byte_offset(index) == slot * 8
        if prog[index].is_ldimm64:
            assert layout.index(slot + 1) is None
    assert layout.index(layout.total_slots) is None
    assert layout.index(-1) is None
    assert layout.index_at_byte(4) is None


def test_jump_targets_count_ldimm64_as_two_slots() -> None:
    prog = [
        jmp_imm(JmpOp.JEQ, R1, 0, 3),  # slot 0 -> slot 4, past the two-slot ldimm64
        ld_imm64(R2, 1 << 40),  # slots 1-2
        Insn(Class.JMP32 | JmpOp.JA, imm=-4),  # slot 3 -> slot 0 (gotol: offset in imm)
        Insn(Class.JMP | JmpOp.CALL, src=PseudoCall.CALL, imm=1),  # slot 4 -> slot 6
        exit_(),  # slot 5
        ld_imm64(R1, 0xFFFFFFFE, src=PseudoLd.FUNC),  # slots 6-7 -> slot 5: offset is the signed low half
        Insn(Class.JMP | JmpOp.JCOND, off=-9),  # slot 8 -> slot 0
        Insn(Class.JMP32 | JmpOp.JLT | Source.X, R1, R2, off=0),  # slot 9 -> slot 10
        exit_(),
    ]
    layout = SlotMap.of(prog)
    targets = {layout.slot(i): insn.jump_target(layout.slot(i)) for i, insn in enumerate(prog) if _has_target(insn)}
    assert targets == {0: 4, 3: 0, 4: 6, 6: 5, 8: 0, 9: 10}
    assert layout.index(targets[0]) == 3
    assert layout.index(targets[6]) == 4


def _has_target(insn: Insn) -> bool:
    return insn.is_jump or insn.is_pseudo_call or insn.is_pseudo_func


def test_jump_target_refuses_instructions_without_one() -> None:
    for insn in (exit_(), call(1), Insn(Class.JMP | JmpOp.CALL, src=2, imm=77), Insn(0x0D, R1), mov64_imm(R0, 1)):
        with pytest.raises(ValueError, match="no static jump target"):
            insn.jump_target(0)


def test_call_kinds() -> None:
    helper, local, kfunc = (Insn(Class.JMP | JmpOp.CALL, src=s, imm=-1) for s in PseudoCall)
    assert [helper.is_call, local.is_call, kfunc.is_call] == [True, True, True]
    assert [helper.is_helper_call, local.is_helper_call, kfunc.is_helper_call] == [True, False, False]
    assert [helper.is_pseudo_call, local.is_pseudo_call, kfunc.is_pseudo_call] == [False, True, False]
    assert [helper.is_kfunc_call, local.is_kfunc_call, kfunc.is_kfunc_call] == [False, False, True]
    callx = Insn(Class.JMP | JmpOp.CALL | Source.X, R1)
    assert not callx.is_call
    assert not helper.is_jump
    assert not exit_().is_jump
    assert exit_().is_exit


def test_field_accessors() -> None:
    insn = Insn(Class.STX | Mode.ATOMIC | Size.W, R1, R2, 0, AtomicOp.FETCH_ADD)
    assert (insn.cls, insn.mode, insn.size) == (Class.STX, Mode.ATOMIC, Size.W)
    jne = Insn(Class.JMP32 | JmpOp.JNE | Source.X, R1, R2, 4)
    assert (jne.cls, jne.op, jne.source, jne.is_jump) == (Class.JMP32, JmpOp.JNE, Source.X, True)
    assert Insn(Class.JMP32 | JmpOp.JA, imm=9).is_gotol
    assert not Insn(Class.JMP | JmpOp.JA, off=9).is_gotol
    assert ld_imm64(R1, 0, src=PseudoLd.FUNC).is_pseudo_func
    assert not ld_imm64(R1, 0).is_pseudo_func


def test_encode_accepts_unsigned_spellings() -> None:
    assert Insn(0xB4, R1, imm=0xFFFFFFFF).encode() == Insn(0xB4, R1, imm=-1).encode()
    assert Insn(0x05, off=0xFFFF).encode() == Insn(0x05, off=-1).encode()
    assert ld_imm64(R1, -1).encode() == ld_imm64(R1, (1 << 64) - 1).encode()


@pytest.mark.parametrize(
    ("insn", "field"),
    [
        (Insn(0x100), "opcode"),
        (Insn(0xB7, dst=16), "dst"),
        (Insn(0xBF, src=-1), "src"),
        (Insn(0x05, off=1 << 16), "off"),
        (Insn(0xB7, imm=1 << 32), "imm"),
        (Insn(0xB7, imm=-(1 << 31) - 1), "imm"),
        (ld_imm64(R1, 1 << 64), "imm"),
    ],
)
def test_encode_refuses_values_that_do_not_fit(insn: Insn, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}="):
        insn.encode()


@given(st.binary(max_size=256), st.integers(0, 1 << 20))
def test_decode_errors_point_inside_the_input(code: bytes, base: int) -> None:
    error = None
    try:
        decode(code, section="sec", base=base)
    except ObjectFormatError as e:
        error = e
    if error is not None:
        assert error.section == "sec"
        assert error.offset is not None
        assert base <= error.offset <= base + len(code)
        assert (error.offset - base) % 8 == 0


def test_decode_names_the_broken_slot() -> None:
    good = encode([mov64_imm(R0, 0), ld_imm64(R1, 5), exit_()])
    broken = good[:16] + bytes.fromhex("0100000000000000") + good[24:]  # second ldimm64 half with an opcode
    with pytest.raises(ObjectFormatError, match="second slot") as exc:
        decode(broken, section="kprobe/x", base=0x100)
    assert exc.value.offset == 0x100 + 16
    with pytest.raises(ObjectFormatError, match="missing its second slot") as exc:
        decode(good[:16], section="kprobe/x")
    assert exc.value.offset == 8


def test_decode_accepts_any_byte_buffer() -> None:
    code = encode(return_imm(3))
    assert decode(memoryview(code)) == decode(bytearray(code)) == return_imm(3)
