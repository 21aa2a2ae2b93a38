"""Instructions as text, in the syntax of LLVM's BPF assembler.

For what clang 14 emits, the text is exactly what ``llvm-objdump -d`` of LLVM
14 prints, so a listing can be checked against the toolchain that produced the
object. Instructions LLVM 14 cannot print (ISA v4, stores of immediates,
``&`` jumps, load-acquire/store-release, arena casts) are spelled as newer
LLVM spells them. ldimm64s whose ``src`` asks the loader or kernel to fill in
the value use bpftool's notation (``map[fd:3]``), because LLVM prints them
lossily. docs/asm.md lists the decisions.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping

from dynbpf._asm.insn import Insn, s16, s32
from dynbpf._asm.opcodes import (
    ADDR_SPACE_CAST,
    SIGNED_DIV,
    AluOp,
    AtomicOp,
    Class,
    JmpOp,
    Mode,
    PseudoLd,
    Size,
    Source,
)
from dynbpf._asm.slots import SlotMap

UNKNOWN = "<unknown>"

_BITS = {Size.B: 8, Size.H: 16, Size.W: 32, Size.DW: 64}

_ALU: dict[int, str] = {
    AluOp.ADD: "+=",
    AluOp.SUB: "-=",
    AluOp.MUL: "*=",
    AluOp.DIV: "/=",
    AluOp.OR: "|=",
    AluOp.AND: "&=",
    AluOp.LSH: "<<=",
    AluOp.RSH: ">>=",
    AluOp.MOD: "%=",
    AluOp.XOR: "^=",
    AluOp.ARSH: "s>>=",
}

_COND: dict[int, str] = {
    JmpOp.JEQ: "==",
    JmpOp.JGT: ">",
    JmpOp.JGE: ">=",
    JmpOp.JSET: "&",
    JmpOp.JNE: "!=",
    JmpOp.JSGT: "s>",
    JmpOp.JSGE: "s>=",
    JmpOp.JLT: "<",
    JmpOp.JLE: "<=",
    JmpOp.JSLT: "s<",
    JmpOp.JSLE: "s<=",
}

_LOCK: dict[int, str] = {AtomicOp.ADD: "+=", AtomicOp.OR: "|=", AtomicOp.AND: "&=", AtomicOp.XOR: "^="}
_FETCH: dict[int, str] = {
    AtomicOp.FETCH_ADD: "add",
    AtomicOp.FETCH_OR: "or",
    AtomicOp.FETCH_AND: "and",
    AtomicOp.FETCH_XOR: "xor",
}


def text(insn: Insn, *, alu32: bool = False) -> str:
    """One instruction as LLVM prints it, or ``<unknown>`` for an undefined encoding.

    ``alu32`` picks between LLVM's two readings of sub-64-bit loads, stores
    and atomics: ``r1 = *(u32 *)(r2 + 0)`` by default, as plain
    ``llvm-objdump -d`` prints; ``w1 = *(u32 *)(r2 + 0)`` with ``alu32``, as
    ``llvm-objdump -d --mattr=+alu32`` does. Both describe the same bytes.
    Like LLVM, the text ignores fields an encoding leaves unused.
    """
    cls = insn.cls
    if cls in (Class.ALU, Class.ALU64):
        out = _alu(insn)
    elif cls in (Class.JMP, Class.JMP32):
        out = _jmp(insn)
    elif cls == Class.LD:
        out = _ld(insn)
    elif cls == Class.LDX:
        out = _ldx(insn, alu32)
    elif cls == Class.ST:
        out = _st(insn)
    else:
        out = _stx(insn, alu32)
    return UNKNOWN if out is None else out


def disassemble(insns: Iterable[Insn], *, alu32: bool = False) -> list[tuple[int, str]]:
    """``(slot, text)`` for each instruction; slot * 8 is its byte offset."""
    out: list[tuple[int, str]] = []
    slot = 0
    for insn in insns:
        out.append((slot, text(insn, alu32=alu32)))
        slot += insn.slots
    return out


def format_listing(
    insns: Iterable[Insn],
    *,
    symbols: Mapping[int, str] | None = None,
    annotate: Callable[[int, Insn], str | None] | None = None,
    source: Callable[[int], str | None] | None = None,
    raw: bool = False,
    alu32: bool = False,
) -> str:
    """A listing laid out like ``llvm-objdump -d``, for people reading programs.

    Lines carry slots, as on the wire; every key the caller passes is a list
    position in ``insns``, the unit relocations and line info use in dynbpf.
    ``symbols`` names positions (functions, labels); each starts a block with
    an ``llvm-objdump``-style header, and jump targets are shown as the
    nearest preceding symbol plus a byte offset (``<LBB0_2>``,
    ``<prog+0x10>``), or as the bare target slot without symbols. Calls get
    no target: before relocation their ``imm`` is a placeholder.
    ``annotate(position, insn)`` may return a comment for the line (a helper
    or map name), appended after ``;``. ``source(position)`` may return a
    source line, printed as ``; text`` above the instruction when it changes,
    as ``llvm-objdump -S`` does. With ``raw`` each line shows the
    instruction's bytes, as ``llvm-objdump`` does by default.
    """
    program = list(insns)
    layout = SlotMap.of(program)
    names = {i: name for i, name in (symbols or {}).items() if 0 <= i < len(program)}
    by_slot = {layout.slot(i): name for i, name in names.items()}
    marks = sorted(by_slot)
    lines: list[str] = []
    last_source: str | None = None
    for index, insn in enumerate(program):
        slot = layout.slot(index)
        name = names.get(index)
        if name is not None:
            if lines:
                lines.append("")
            lines.append(f"{slot * 8:016x} <{name}>:")
        if source is not None:
            src = source(index)
            if src and src != last_source:
                lines.append(f"; {src}")
                last_source = src
        body = text(insn, alu32=alu32)
        if body != UNKNOWN and insn.is_jump and not insn.is_gotox:
            body += f" <{_label(insn.jump_target(slot), by_slot, marks)}>"
        if raw:
            body = f"{insn.encode().hex(' ')}\t{body}"
        line = f"{slot:>8}:\t{body}"
        if annotate is not None:
            note = annotate(index, insn)
            if note:
                line += f"\t; {note}"
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def _label(target: int, names: Mapping[int, str], marks: list[int]) -> str:
    at = bisect.bisect_right(marks, target) - 1
    if at < 0:
        return str(target)
    base = marks[at]
    delta = (target - base) * 8
    return names[base] if delta == 0 else f"{names[base]}+{delta:#x}"


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


def _rel(v: int) -> str:
    return f"{v:+d}"


def _mem(base: int, off: int) -> str:
    off = s16(off)
    return f"r{base} - {-off}" if off < 0 else f"r{base} + {off}"


def _alu(insn: Insn) -> str | None:
    p = "w" if insn.cls == Class.ALU else "r"
    op, x, off, imm = insn.op, insn.source == Source.X, s16(insn.off), s32(insn.imm)
    d = f"{p}{insn.dst}"
    s = f"{p}{insn.src}"
    if op == AluOp.MOV:
        if not x:
            return f"{d} = {imm}" if off == 0 else None
        if off == 0:
            return f"{d} = {s}"
        if off in (8, 16) or (off == 32 and p == "r"):
            return f"{d} = (s{off}){s}"
        if off == ADDR_SPACE_CAST and p == "r":
            return f"{d} = addr_space_cast({s}, {(imm >> 16) & 0xFFFF}, {imm & 0xFFFF})"
        return None
    if op == AluOp.NEG:
        return f"{d} = -{d}" if not x and off == 0 else None
    if op == AluOp.END:
        if imm not in (16, 32, 64):
            return None
        if insn.cls == Class.ALU:
            name = f"{'be' if x else 'le'}{imm}"
        elif not x:
            name = f"bswap{imm}"
        else:
            return None
        return f"r{insn.dst} = {name} r{insn.dst}"
    sym = _ALU.get(op)
    if sym is None:
        return None
    if off == SIGNED_DIV and op in (AluOp.DIV, AluOp.MOD):
        sym = "s" + sym
    elif off != 0:
        return None
    return f"{d} {sym} {s if x else imm}"


def _jmp(insn: Insn) -> str | None:
    long_form = insn.cls == Class.JMP32
    p = "w" if long_form else "r"
    op, x = insn.op, insn.source == Source.X
    if op == JmpOp.JA:
        if long_form:
            return None if x else f"gotol {_rel(s32(insn.imm))}"
        return f"gotox r{insn.dst}" if x else f"goto {_rel(s16(insn.off))}"
    if op in (JmpOp.CALL, JmpOp.EXIT, JmpOp.JCOND) and long_form:
        return None
    if op == JmpOp.CALL:
        return f"callx r{insn.dst}" if x else f"call {s32(insn.imm)}"
    if op == JmpOp.EXIT:
        return "exit" if not x and s32(insn.imm) == 0 else None
    if op == JmpOp.JCOND:
        return None if x else f"may_goto {_rel(s16(insn.off))}"
    sym = _COND.get(op)
    if sym is None:
        return None
    rhs = f"{p}{insn.src}" if x else str(s32(insn.imm))
    return f"if {p}{insn.dst} {sym} {rhs} goto {_rel(s16(insn.off))}"


def _ld(insn: Insn) -> str | None:
    if insn.is_ldimm64:
        return None if insn.off else _ldimm64(insn)
    if insn.size == Size.DW:
        return None
    bits = _BITS[insn.size]
    if insn.mode == Mode.ABS:
        return f"r0 = *(u{bits} *)skb[{s32(insn.imm)}]"
    if insn.mode == Mode.IND:
        return f"r0 = *(u{bits} *)skb[r{insn.src}]"
    return None


def _ldimm64(insn: Insn) -> str:
    d = f"r{insn.dst}"
    lo, hi = s32(insn.imm), s32(insn.imm >> 32)
    src = insn.src
    if src == 0:
        return f"{d} = {_s64(insn.imm)} ll"
    if hi == 0 and src in (PseudoLd.MAP_FD, PseudoLd.MAP_IDX, PseudoLd.FUNC):
        if src == PseudoLd.FUNC:
            return f"{d} = subprog[{lo:+d}] ll"
        return f"{d} = map[{'fd' if src == PseudoLd.MAP_FD else 'idx'}:{lo}] ll"
    if src == PseudoLd.MAP_VALUE:
        return f"{d} = map[fd:{lo}][0]+{hi} ll"
    if src == PseudoLd.MAP_IDX_VALUE:
        return f"{d} = map[idx:{lo}]+{hi} ll"
    if src == PseudoLd.BTF_ID:
        return f"{d} = ksym[btf_id:{lo}] ll" if hi == 0 else f"{d} = ksym[btf_id:{lo},btf_fd:{hi}] ll"
    return f"ld_pseudo {d}, {src}, {_s64(insn.imm)}"


def _ldx(insn: Insn, alu32: bool) -> str | None:
    bits = _BITS[insn.size]
    mem = _mem(insn.src, insn.off)
    if insn.mode == Mode.MEM:
        p = "w" if alu32 and bits != 64 else "r"
        return f"{p}{insn.dst} = *(u{bits} *)({mem})"
    if insn.mode == Mode.MEMSX and bits != 64:
        return f"r{insn.dst} = *(s{bits} *)({mem})"
    return None


def _st(insn: Insn) -> str | None:
    if insn.mode != Mode.MEM:
        return None
    return f"*(u{_BITS[insn.size]} *)({_mem(insn.dst, insn.off)}) = {s32(insn.imm)}"


def _stx(insn: Insn, alu32: bool) -> str | None:
    bits = _BITS[insn.size]
    mem = _mem(insn.dst, insn.off)
    wide = bits == 64
    if insn.mode == Mode.MEM:
        p = "w" if alu32 and not wide else "r"
        return f"*(u{bits} *)({mem}) = {p}{insn.src}"
    if insn.mode != Mode.ATOMIC:
        return None
    aop = insn.imm & 0xFFFFFFFF
    p = "r" if wide else "w"
    if aop == AtomicOp.LOAD_ACQ:
        return f"{p}{insn.dst} = load_acquire((u{bits} *)({_mem(insn.src, insn.off)}))"
    if aop == AtomicOp.STORE_REL:
        return f"store_release((u{bits} *)({mem}), {p}{insn.src})"
    if bits < 32:
        return None
    v = f"{p}{insn.src}"
    if aop in _LOCK:
        if not wide and not alu32:
            v = f"r{insn.src}"
        return f"lock *(u{bits} *)({mem}) {_LOCK[aop]} {v}"
    if aop in _FETCH:
        return f"{v} = atomic_fetch_{_FETCH[aop]}((u{bits} *)({mem}), {v})"
    if aop == AtomicOp.XCHG:
        return f"{v} = xchg_64({mem}, {v})" if wide else f"{v} = xchg32_32({mem}, {v})"
    if aop == AtomicOp.CMPXCHG:
        return f"r0 = cmpxchg_64({mem}, r0, {v})" if wide else f"w0 = cmpxchg32_32({mem}, w0, {v})"
    return None
