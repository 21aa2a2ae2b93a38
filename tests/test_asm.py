"""Instruction encoding of the builders (bytes as clang and the kernel define them)."""

from __future__ import annotations

from dynbpf.asm.insn import R0, R1, R10, call, encode, exit_, ld_map_fd, ld_map_value, mov64_imm, return_imm, stx_mem
from dynbpf.asm.opcodes import Size


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
