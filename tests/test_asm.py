"""Instruction encoding of the builders (bytes as clang and the kernel define them)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynbpf.asm.insn import (
    R0,
    R1,
    R10,
    call,
    decode,
    encode,
    exit_,
    ld_map_fd,
    ld_map_value,
    mov64_imm,
    return_imm,
    stx_mem,
)
from dynbpf.asm.opcodes import Size
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


@given(st.binary(max_size=512).map(lambda b: b[: len(b) - len(b) % 8]))
def test_decode_is_total_and_exact(code: bytes) -> None:
    """Any byte string either decodes and re-encodes to itself, or is a clean ObjectFormatError."""
    try:
        insns = decode(code)
    except ObjectFormatError:
        return
    assert encode(insns) == code
