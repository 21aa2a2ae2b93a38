"""USDT argument specs (x86-64) and the spec record ``usdt.bpf.h`` reads from ``__bpf_usdt_specs``.

A note's argument string lists one spec per argument, separated by blanks:
``SIZE@LOCATION``, where SIZE is 1, 2, 4 or 8 bytes, negative for a signed
value, and LOCATION is a register (``%eax``), memory at a register plus an
offset (``-8(%rbp)``, ``(%rsp)``) or a constant (``$5``). The BPF side
(``bpf_usdt_arg``) fetches 8 bytes from there (the register's slot in
``struct pt_regs``, or user memory) and narrows them to SIZE by shifting
left then right by ``64 - 8 * SIZE`` bits, arithmetically when signed.
Other forms compilers emit (``sym(%rip)``, ``(%rax,%rdx,8)``) are refused
by name, as libbpf refuses them.

The record is libbpf's ``struct __bpf_usdt_spec``: twelve 16-byte argument
specs (u64 value or offset, u32 kind, s16 ``pt_regs`` offset, u8 signed,
u8 shift), the u64 user cookie and the s16 argument count, padded to 8.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from dynbpf.errors import DynbpfError

MAX_ARGS = 12  # BPF_USDT_MAX_ARG_CNT
_ARG = struct.Struct("<QIhBb")
_TAIL = struct.Struct("<Qh6x")
SPEC_SIZE = MAX_ARGS * _ARG.size + _TAIL.size  # 208: sizeof(struct __bpf_usdt_spec)


class UsdtSpecError(DynbpfError, ValueError):
    """An argument spec dynbpf cannot turn into what ``bpf_usdt_arg`` reads; the message names it."""


class ArgKind(IntEnum):
    """``enum __bpf_usdt_arg_type``."""

    CONST = 0
    REG = 1
    REG_DEREF = 2


#: offsetof(struct pt_regs, ...) on x86-64, with every name a spec may give the register by
_PT_REGS = {
    "r15": 0,
    "r14": 8,
    "r13": 16,
    "r12": 24,
    "bp": 32,
    "bx": 40,
    "r11": 48,
    "r10": 56,
    "r9": 64,
    "r8": 72,
    "ax": 80,
    "cx": 88,
    "dx": 96,
    "si": 104,
    "di": 112,
    "ip": 128,
    "sp": 152,
}
REGISTERS: dict[str, int] = {}
for _legacy in ("ax", "bx", "cx", "dx"):  # rax eax ax al
    REGISTERS |= dict.fromkeys(("r" + _legacy, "e" + _legacy, _legacy, _legacy[0] + "l"), _PT_REGS[_legacy])
for _pointer in ("si", "di", "bp", "sp"):  # rsi esi si sil
    REGISTERS |= dict.fromkeys(("r" + _pointer, "e" + _pointer, _pointer, _pointer + "l"), _PT_REGS[_pointer])
for _n in range(8, 16):  # r8 r8d r8w r8b
    REGISTERS |= dict.fromkeys((f"r{_n}", f"r{_n}d", f"r{_n}w", f"r{_n}b"), _PT_REGS[f"r{_n}"])
REGISTERS |= {"rip": _PT_REGS["ip"], "eip": _PT_REGS["ip"]}

_NUMBER = r"[-+]?(?:0[xX][0-9a-fA-F]+|\d+)"
_SPEC = re.compile(
    rf"(?P<size>[-+]?\d+)@(?:"
    rf"%(?P<reg>[a-z0-9]+)"
    rf"|\$(?P<const>{_NUMBER})"
    rf"|(?P<off>{_NUMBER})?\(%(?P<base>[a-z0-9]+)\)"
    rf")"
)


@dataclass(frozen=True, slots=True)
class UsdtArg:
    """One argument: where ``bpf_usdt_arg`` finds it and how it narrows it."""

    kind: ArgKind
    value: int  # the constant (CONST) or the offset added to the register (REG_DEREF); two's complement u64
    reg_offset: int  # offsetof(struct pt_regs, reg) (0 for CONST)
    size: int  # bytes: 1, 2, 4 or 8
    signed: bool

    @property
    def bitshift(self) -> int:
        return 64 - 8 * self.size

    def encode(self) -> bytes:
        return _ARG.pack(self.value, int(self.kind), self.reg_offset, int(self.signed), self.bitshift)


def parse_args(text: str) -> tuple[UsdtArg, ...]:
    """The argument specs of one note; :class:`UsdtSpecError` names the first one not understood."""
    tokens = text.split()
    if len(tokens) > MAX_ARGS:
        raise UsdtSpecError(f"{len(tokens)} arguments in {text!r}; usdt.bpf.h reads at most {MAX_ARGS}")
    return tuple(parse_arg(token, index) for index, token in enumerate(tokens))


def parse_arg(token: str, index: int = 0) -> UsdtArg:
    """One ``SIZE@LOCATION`` spec (argument number ``index``, for messages)."""
    what = f"argument #{index} spec {token!r}"
    m = _SPEC.fullmatch(token)
    if m is None:
        raise UsdtSpecError(
            f"unsupported {what}: dynbpf reads SIZE@%reg, SIZE@OFFSET(%reg), SIZE@(%reg) and SIZE@$CONSTANT "
            "(no symbol(%rip) or scaled-index memory operands)"
        )
    size = int(m["size"])
    if abs(size) not in (1, 2, 4, 8):
        raise UsdtSpecError(f"unsupported {what}: size {size} is not 1, 2, 4 or 8 bytes (negative: signed)")
    signed = size < 0
    if m["const"] is not None:
        return UsdtArg(ArgKind.CONST, _u64(int(m["const"], 0), what), 0, abs(size), signed)
    reg = m["reg"] or m["base"]
    offset = REGISTERS.get(reg)
    if offset is None:
        raise UsdtSpecError(f"unsupported {what}: no x86-64 register %{reg} in struct pt_regs")
    if m["reg"] is not None:
        return UsdtArg(ArgKind.REG, 0, offset, abs(size), signed)
    return UsdtArg(ArgKind.REG_DEREF, _u64(int(m["off"] or "0", 0), what), offset, abs(size), signed)


def encode_spec(args: tuple[UsdtArg, ...], cookie: int) -> bytes:
    """The ``struct __bpf_usdt_spec`` for a site with ``args`` and the user's ``cookie``."""
    head = b"".join(a.encode() for a in args) + bytes(_ARG.size * (MAX_ARGS - len(args)))
    return head + _TAIL.pack(cookie, len(args))


def _u64(value: int, what: str) -> int:
    if not -(1 << 63) <= value < 1 << 64:
        raise UsdtSpecError(f"unsupported {what}: {value} does not fit in 64 bits")
    return value & ((1 << 64) - 1)
