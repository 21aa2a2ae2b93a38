"""The instruction model: one ``Insn`` per logical instruction.

A 64-bit immediate load (``ldimm64``) occupies two 8-byte slots on the wire
but is one ``Insn`` here, with its full 64-bit ``imm``: code that rewrites
instructions then never has to keep two halves consistent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from dynbpf._asm.opcodes import LD_IMM64, AluOp, Class, JmpOp, Mode, PseudoCall, PseudoLd, Size, Source
from dynbpf.errors import ObjectFormatError

_SLOT = struct.Struct("<BBhi")
SLOT_SIZE = 8

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

_CALL = Class.JMP | JmpOp.CALL | Source.K
_GOTOL = Class.JMP32 | JmpOp.JA | Source.K


@dataclass(frozen=True, slots=True)
class Insn:
    """One logical instruction; an ldimm64 is one ``Insn`` with a 64-bit ``imm``.

    Fields hold the values as they are on the wire (``off`` and a non-ldimm64
    ``imm`` signed); the properties below name the encodings, so callers never
    re-derive them from opcode bits.
    """

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> Class:
        return Class(self.opcode & 0x07)

    @property
    def op(self) -> int:
        """The operation bits of an ALU or JMP opcode (compare with ``AluOp``/``JmpOp``)."""
        return self.opcode & 0xF0

    @property
    def source(self) -> Source:
        return Source(self.opcode & 0x08)

    @property
    def size(self) -> Size:
        return Size(self.opcode & 0x18)

    @property
    def mode(self) -> int:
        """The mode bits of a load/store opcode (compare with ``Mode``)."""
        return self.opcode & 0xE0

    @property
    def is_ldimm64(self) -> bool:
        return self.opcode == LD_IMM64

    @property
    def slots(self) -> int:
        return 2 if self.is_ldimm64 else 1

    @property
    def is_call(self) -> bool:
        """Any ``call``: helper, BPF-to-BPF or kfunc (``callx`` is not one)."""
        return self.opcode == _CALL

    @property
    def is_helper_call(self) -> bool:
        return self.opcode == _CALL and self.src == PseudoCall.HELPER

    @property
    def is_pseudo_call(self) -> bool:
        """A BPF-to-BPF call: ``imm`` is the callee's slot relative to the next slot."""
        return self.opcode == _CALL and self.src == PseudoCall.CALL

    @property
    def is_kfunc_call(self) -> bool:
        return self.opcode == _CALL and self.src == PseudoCall.KFUNC_CALL

    @property
    def is_pseudo_func(self) -> bool:
        """``rX = &subprog``: an ldimm64 whose ``imm`` is a slot relative to the next slot."""
        return self.opcode == LD_IMM64 and self.src == PseudoLd.FUNC

    @property
    def is_exit(self) -> bool:
        return self.opcode == Class.JMP | JmpOp.EXIT

    @property
    def is_jump(self) -> bool:
        """A transfer of control inside the program: goto, gotol, gotox, may_goto, if."""
        return self.cls in (Class.JMP, Class.JMP32) and self.op not in (JmpOp.CALL, JmpOp.EXIT)

    @property
    def is_gotol(self) -> bool:
        """The long jump (ISA v4), whose offset is in ``imm`` rather than ``off``."""
        return self.opcode == _GOTOL

    @property
    def is_gotox(self) -> bool:
        """The indirect jump: the target is in ``dst``, not known statically."""
        return self.opcode == Class.JMP | JmpOp.JA | Source.X

    def jump_target(self, slot: int) -> int:
        """The slot this instruction transfers control to, if it sits at ``slot``.

        Offsets count 8-byte slots from the next slot, so an ldimm64 in
        between counts twice (a ``rX = &subprog`` load's offset is the signed
        low half of its ``imm``); map slots to list positions with
        :class:`dynbpf._asm.slots.SlotMap`. Covers jumps, BPF-to-BPF calls and
        ``rX = &subprog`` loads; anything else (exit, helper and kfunc calls,
        the indirect ``gotox``) has no static target and raises ``ValueError``.
        """
        if self.is_gotol or self.is_pseudo_call or self.is_pseudo_func:
            return slot + 1 + s32(self.imm & 0xFFFFFFFF)
        if self.is_jump and not self.is_gotox:
            return slot + 1 + self.off
        raise ValueError(f"{self} has no static jump target")

    def encode(self) -> bytes:
        _check_fields(self)
        regs = (self.src << 4) | self.dst
        off = s16(self.off)
        if self.is_ldimm64:
            lo = self.imm & 0xFFFFFFFF
            hi = (self.imm >> 32) & 0xFFFFFFFF
            return _SLOT.pack(self.opcode, regs, off, s32(lo)) + _SLOT.pack(0, 0, 0, s32(hi))
        return _SLOT.pack(self.opcode, regs, off, s32(self.imm & 0xFFFFFFFF))

    def __str__(self) -> str:
        from dynbpf._asm.disasm import text

        return text(self)


def _check_fields(insn: Insn) -> None:
    """Refuse values that do not fit their field, instead of letting struct fail or truncate.

    Unsigned spellings of signed fields (``imm=0xffffffff`` for -1) are
    accepted, as assemblers accept them.
    """
    imm_bits = 64 if insn.is_ldimm64 else 32
    for name, value, lo, hi in (
        ("opcode", insn.opcode, 0, 0xFF),
        ("dst", insn.dst, 0, 0xF),
        ("src", insn.src, 0, 0xF),
        ("off", insn.off, -(1 << 15), (1 << 16) - 1),
        ("imm", insn.imm, -(1 << (imm_bits - 1)), (1 << imm_bits) - 1),
    ):
        if not lo <= value <= hi:
            raise ValueError(f"{name}={value} does not fit its field ({lo}..{hi}) in {insn!r}")


def s16(v: int) -> int:
    """The low 16 bits of ``v`` read as a signed number (an instruction's offset field)."""
    v &= 0xFFFF
    return v - (1 << 16) if v & 0x8000 else v


def s32(v: int) -> int:
    """The low 32 bits of ``v`` read as a signed number (an instruction's immediate field)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def encode(insns: Iterable[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)


def decode(
    code: bytes | bytearray | memoryview,
    *,
    section: str = "",
    base: int = 0,
    known: dict[bytes, Insn] | None = None,
) -> list[Insn]:
    """Instructions from little-endian bytecode; ldimm64 pairs become one ``Insn``.

    Malformed input (a length that is not a multiple of 8, an ldimm64 cut off
    at the end, a second ldimm64 slot with a non-zero opcode or registers)
    raises :class:`ObjectFormatError` naming ``section`` and the byte offset
    (``base`` + position), so callers can point at the broken object.
    Opcodes are not judged here: an instruction no kernel accepts still
    decodes, so that tools can show it (the disassembler prints ``<unknown>``).
    An ldimm64's ``imm`` comes back unsigned (0 to 2**64-1).

    ``known`` maps encodings to instructions already decoded: an ``Insn``
    is immutable, so equal encodings share one object. Passing one dict for
    all the functions of an object makes decoding a dictionary lookup for
    most instructions (200 similar programs hold ~26,000 slots, ~1,300
    distinct) and keeps one object per distinct instruction.
    """
    if len(code) % SLOT_SIZE:
        raise ObjectFormatError(
            f"instruction bytes are not a multiple of 8 ({len(code)} bytes)", section=section, offset=base
        )
    if not isinstance(code, bytes):
        code = bytes(code)
    out: list[Insn] = []
    append = out.append
    seen = known if known is not None else {}
    get = seen.get
    unpack = _SLOT.unpack_from
    pos, end = 0, len(code)
    while pos < end:
        slot = code[pos : pos + SLOT_SIZE]
        insn = get(slot)  # never an ldimm64: those are known by both their slots
        if insn is not None:
            append(insn)
            pos += SLOT_SIZE
            continue
        opcode, regs, off, imm = unpack(code, pos)
        if opcode == LD_IMM64:
            if pos + 2 * SLOT_SIZE > end:
                raise ObjectFormatError("ldimm64 is missing its second slot", section=section, offset=base + pos)
            pair = code[pos : pos + 2 * SLOT_SIZE]
            insn = get(pair)
            if insn is None:
                op2, regs2, off2, imm2 = unpack(code, pos + SLOT_SIZE)
                if op2 or regs2 or off2:
                    raise ObjectFormatError("malformed second slot of ldimm64", section=section, offset=base + pos + 8)
                imm64 = (imm & 0xFFFFFFFF) | ((imm2 & 0xFFFFFFFF) << 32)
                insn = seen[pair] = Insn(opcode, regs & 0xF, regs >> 4, off, imm64)
            append(insn)
            pos += 2 * SLOT_SIZE
        else:
            insn = seen[slot] = Insn(opcode, regs & 0xF, regs >> 4, off, imm)
            append(insn)
            pos += SLOT_SIZE
    return out


# --- builders for hand-assembled programs (probes, tests) --------------------------


def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(Class.ALU64 | AluOp.MOV | Source.K, dst, 0, 0, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return Insn(Class.ALU64 | AluOp.MOV | Source.X, dst, src)


def alu64_imm(op: AluOp, dst: int, imm: int) -> Insn:
    return Insn(Class.ALU64 | op | Source.K, dst, 0, 0, imm)


def jmp_imm(op: JmpOp, dst: int, imm: int, off: int) -> Insn:
    return Insn(Class.JMP | op | Source.K, dst, 0, off, imm)


def call(helper: int) -> Insn:
    return Insn(Class.JMP | JmpOp.CALL, 0, 0, 0, helper)


def exit_() -> Insn:
    return Insn(Class.JMP | JmpOp.EXIT)


def ld_imm64(dst: int, imm: int, src: int = 0) -> Insn:
    return Insn(LD_IMM64, dst, src, 0, imm)


def ld_map_fd(dst: int, map_fd: int) -> Insn:
    """``dst = &map`` (``BPF_PSEUDO_MAP_FD``)."""
    return ld_imm64(dst, map_fd, src=PseudoLd.MAP_FD)


def ld_map_value(dst: int, map_fd: int, offset: int = 0) -> Insn:
    """``dst = &map.value[0] + offset`` (``BPF_PSEUDO_MAP_VALUE``); offset lives in the second slot."""
    return ld_imm64(dst, (offset << 32) | map_fd, src=PseudoLd.MAP_VALUE)


def st_mem(size: Size, dst: int, off: int, imm: int) -> Insn:
    return Insn(Class.ST | Mode.MEM | size, dst, 0, off, imm)


def stx_mem(size: Size, dst: int, src: int, off: int) -> Insn:
    return Insn(Class.STX | Mode.MEM | size, dst, src, off)


def return_imm(value: int) -> list[Insn]:
    """``r0 = value; exit``: the smallest valid program."""
    return [mov64_imm(R0, value), exit_()]
