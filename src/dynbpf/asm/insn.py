"""The instruction model: one ``Insn`` per logical instruction.

A 64-bit immediate load (``ldimm64``) occupies two 8-byte slots on the wire
but is one ``Insn`` here, with its full 64-bit ``imm``: code that rewrites
instructions then never has to keep two halves consistent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from dynbpf.asm.opcodes import LD_IMM64, AluOp, Class, JmpOp, Mode, Size, Source
from dynbpf.errors import ObjectFormatError

_SLOT = struct.Struct("<BBhi")
SLOT_SIZE = 8

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)


@dataclass(frozen=True, slots=True)
class Insn:
    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def is_ldimm64(self) -> bool:
        return self.opcode == LD_IMM64

    @property
    def slots(self) -> int:
        return 2 if self.is_ldimm64 else 1

    def encode(self) -> bytes:
        regs = (self.src << 4) | self.dst
        if self.is_ldimm64:
            lo = self.imm & 0xFFFFFFFF
            hi = (self.imm >> 32) & 0xFFFFFFFF
            return _SLOT.pack(self.opcode, regs, self.off, _s32(lo)) + _SLOT.pack(0, 0, 0, _s32(hi))
        return _SLOT.pack(self.opcode, regs, self.off, self.imm)


def _s32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def encode(insns: Iterable[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)


def decode(code: bytes, *, section: str = "", base: int = 0) -> list[Insn]:
    """Instructions from little-endian bytecode; ldimm64 pairs become one ``Insn``.

    Malformed input (a length that is not a multiple of 8, an ldimm64 cut off
    at the end, a second ldimm64 slot with a non-zero opcode or registers)
    raises :class:`ObjectFormatError` naming ``section`` and the byte offset
    (``base`` + position), so callers can point at the broken object.
    """
    if len(code) % SLOT_SIZE:
        raise ObjectFormatError(
            f"instruction bytes are not a multiple of 8 ({len(code)} bytes)", section=section, offset=base
        )
    out: list[Insn] = []
    unpack = _SLOT.unpack_from
    pos, end = 0, len(code)
    while pos < end:
        opcode, regs, off, imm = unpack(code, pos)
        if opcode == LD_IMM64:
            if pos + 2 * SLOT_SIZE > end:
                raise ObjectFormatError("ldimm64 is missing its second slot", section=section, offset=base + pos)
            op2, regs2, off2, imm2 = unpack(code, pos + SLOT_SIZE)
            if op2 or regs2 or off2:
                raise ObjectFormatError("malformed second slot of ldimm64", section=section, offset=base + pos + 8)
            out.append(Insn(opcode, regs & 0xF, regs >> 4, off, (imm & 0xFFFFFFFF) | ((imm2 & 0xFFFFFFFF) << 32)))
            pos += 2 * SLOT_SIZE
        else:
            out.append(Insn(opcode, regs & 0xF, regs >> 4, off, imm))
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
    return ld_imm64(dst, map_fd, src=1)


def ld_map_value(dst: int, map_fd: int, offset: int = 0) -> Insn:
    """``dst = &map.value[0] + offset`` (``BPF_PSEUDO_MAP_VALUE``); offset lives in the second slot."""
    return ld_imm64(dst, (offset << 32) | map_fd, src=2)


def st_mem(size: Size, dst: int, off: int, imm: int) -> Insn:
    return Insn(Class.ST | Mode.MEM | size, dst, 0, off, imm)


def stx_mem(size: Size, dst: int, src: int, off: int) -> Insn:
    return Insn(Class.STX | Mode.MEM | size, dst, src, off)


def return_imm(value: int) -> list[Insn]:
    """``r0 = value; exit``: the smallest valid program."""
    return [mov64_imm(R0, value), exit_()]
