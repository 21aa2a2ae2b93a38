"""Subprogram linking: one program plus every function it reaches, as one instruction stream.

The layout is libbpf's, so the kernel sees identical instructions (and
computes an identical program tag): the entry function first, then each
subprogram appended the first time a call or callback reference to it is met,
depth first in instruction order. Calls and ``rX = &func`` loads are then
pointed at the appended copies, and func_info / line_info are carried over
with their offsets rebased.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dynbpf._asm.insn import Insn
from dynbpf._asm.opcodes import PseudoLd
from dynbpf._asm.slots import SlotMap
from dynbpf._btf.ext import LineInfo
from dynbpf._elf.spec import FunctionPointer, FunctionSpec, ObjectSpec, Relocation, SubprogramCall
from dynbpf.errors import RelocationError


@dataclass(frozen=True, slots=True)
class Placed:
    """Where one function landed in a linked program."""

    function: FunctionSpec
    start: int  # list position of its first instruction in the linked program


@dataclass(frozen=True, slots=True)
class LinkedProgram:
    """A program's final instruction layout, before map, extern and CO-RE values are filled in.

    ``relocations`` are the functions' non-call relocations paired with
    their positions in ``instructions`` (a relocation's own ``index`` stays
    relative to its function); ``func_info`` and ``line_info`` are keyed by
    position as well (the kernel wants slots: ``slots`` converts).
    """

    name: str
    instructions: tuple[Insn, ...]
    functions: tuple[Placed, ...]
    relocations: tuple[tuple[int, Relocation], ...]
    func_info: tuple[tuple[int, int], ...]  # (position, BTF FUNC id)
    slots: SlotMap

    @property
    def line_info(self) -> tuple[tuple[int, LineInfo], ...]:
        """Every function's decoded line records, by position (decoding them is left to who reads them)."""
        return tuple((p.start + index, li) for p in self.functions for index, li in p.function.line_info)


def link(obj: ObjectSpec, program: str) -> LinkedProgram:
    """Lay out ``program`` and its subprograms; fix every call and function pointer."""
    order = obj.reachable(program)
    starts: dict[str, int] = {}
    position = 0
    for fn in order:
        starts[fn.name] = position
        position += len(fn.instructions)
    insns: list[Insn] = []
    for fn in order:
        insns.extend(fn.instructions)
    slots = SlotMap.of(insns)
    relocations: list[tuple[int, Relocation]] = []
    func_info: list[tuple[int, int]] = []
    for fn in order:
        base = starts[fn.name]
        if fn.func_type_id:
            func_info.append((base, fn.func_type_id))
        for r in fn.relocations:
            at = base + r.index
            if isinstance(r, SubprogramCall | FunctionPointer):
                delta = slots.slot(starts[r.function]) - (slots.slot(at) + 1)  # offsets count slots
                insns[at] = _retarget(insns[at], r, delta, f"program {program!r}: instruction {at}")
            else:
                relocations.append((at, r))
    placed = tuple(Placed(fn, starts[fn.name]) for fn in order)
    if any(fn.func_type_id for fn in order) and len(func_info) != len(order):
        missing = [fn.name for fn in order if not fn.func_type_id]
        raise RelocationError(f"program {program!r}: no BTF func_info for {', '.join(missing)}")
    return LinkedProgram(program, tuple(insns), placed, tuple(relocations), tuple(func_info), slots)


def _retarget(insn: Insn, r: Relocation, delta: int, where: str) -> Insn:
    """Point a call or ``rX = &func`` ``delta`` slots past itself: at the callee's first instruction."""
    if isinstance(r, SubprogramCall):
        if not insn.is_pseudo_call:
            raise RelocationError(f"{where} is not a BPF-to-BPF call")
        return dataclasses.replace(insn, imm=delta)
    if not insn.is_ldimm64:
        raise RelocationError(f"{where} is not an ldimm64 for a callback")
    return dataclasses.replace(insn, src=PseudoLd.FUNC, imm=delta & 0xFFFFFFFF)
