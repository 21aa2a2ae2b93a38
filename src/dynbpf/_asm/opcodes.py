"""eBPF opcode fields (``include/uapi/linux/bpf_common.h`` and ``bpf.h``)."""

from __future__ import annotations

import enum


class Class(enum.IntEnum):
    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class Size(enum.IntEnum):
    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18


class Mode(enum.IntEnum):
    IMM = 0x00
    ABS = 0x20
    IND = 0x40
    MEM = 0x60
    MEMSX = 0x80
    ATOMIC = 0xC0


class Source(enum.IntEnum):
    K = 0x00
    X = 0x08


class AluOp(enum.IntEnum):
    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90
    XOR = 0xA0
    MOV = 0xB0
    ARSH = 0xC0
    END = 0xD0


class JmpOp(enum.IntEnum):
    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0
    JCOND = 0xE0


#: ``BPF_LD | BPF_IMM | BPF_DW``: the two-slot 64-bit immediate load.
LD_IMM64 = Class.LD | Mode.IMM | Size.DW


class AtomicOp(enum.IntEnum):
    """The operation of a ``BPF_STX | BPF_ATOMIC`` instruction, carried in ``imm``."""

    ADD = 0x00
    OR = 0x40
    AND = 0x50
    XOR = 0xA0
    FETCH_ADD = 0x01
    FETCH_OR = 0x41
    FETCH_AND = 0x51
    FETCH_XOR = 0xA1
    XCHG = 0xE1
    CMPXCHG = 0xF1
    LOAD_ACQ = 0x100
    STORE_REL = 0x110


#: ``BPF_FETCH``: the bit that makes an atomic read-modify-write return the old value.
FETCH = 0x01


class Endian(enum.IntEnum):
    """Byte-order target of ``BPF_ALU | BPF_END``; it reuses the source bit."""

    TO_LE = 0x00
    TO_BE = 0x08


class PseudoLd(enum.IntEnum):
    """``src`` of an ldimm64: what the loader or kernel is to put into ``imm``."""

    MAP_FD = 1
    MAP_VALUE = 2
    BTF_ID = 3
    FUNC = 4
    MAP_IDX = 5
    MAP_IDX_VALUE = 6


class PseudoCall(enum.IntEnum):
    """``src`` of a ``BPF_CALL``: whom ``imm`` names."""

    HELPER = 0
    CALL = 1
    KFUNC_CALL = 2


#: ``src`` of a ``BPF_JCOND`` jump: the only conditional pseudo-jump in the uapi.
MAY_GOTO = 0

#: ``off`` of ``BPF_DIV``/``BPF_MOD`` that makes them signed (ISA v4).
SIGNED_DIV = 1

#: ``off`` of ``BPF_ALU64 | BPF_MOV | BPF_X`` that makes it an arena address-space cast.
ADDR_SPACE_CAST = 1

#: ``off`` values of ``BPF_MOV | BPF_X`` that sign-extend from that many bits (ISA v4).
MOVSX_BITS = (8, 16, 32)
