"""Slots versus list positions.

On the wire every instruction is one 8-byte slot except ldimm64, which is two.
Jump offsets, relocation offsets and ``.BTF.ext`` records all count slots (or
bytes, slot * 8), while dynbpf keeps one ``Insn`` per instruction; this module
is the one place that converts between the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate

from dynbpf.asm.insn import SLOT_SIZE, Insn
from dynbpf.asm.opcodes import LD_IMM64


def slot_offsets(insns: Iterable[Insn]) -> list[int]:
    """The slot at which each instruction starts (hot in prepare: opcodes compared directly)."""
    starts = list(accumulate([2 if i.opcode == LD_IMM64 else 1 for i in insns], initial=0))
    starts.pop()
    return starts


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Both directions between list positions and slots for one instruction sequence.

    Build it once per program (``SlotMap.of(insns)``); lookups are O(1). A slot
    that falls in the second half of an ldimm64, or past the end, belongs to
    no instruction: :meth:`index` returns ``None`` for it and the caller, who
    knows which section and record pointed there, reports the error.
    """

    starts: tuple[int, ...]
    total_slots: int
    _by_slot: dict[int, int] = field(repr=False, compare=False)

    @classmethod
    def of(cls, insns: Iterable[Insn]) -> SlotMap:
        insns = list(insns)
        starts = slot_offsets(insns)
        total = starts[-1] + insns[-1].slots if insns else 0
        return cls(tuple(starts), total, {s: i for i, s in enumerate(starts)})

    def __len__(self) -> int:
        return len(self.starts)

    def slot(self, index: int) -> int:
        """The slot where the instruction at list position ``index`` starts."""
        return self.starts[index]

    def index(self, slot: int) -> int | None:
        """The list position of the instruction starting at ``slot``, if one does."""
        return self._by_slot.get(slot)

    def byte_offset(self, index: int) -> int:
        return self.starts[index] * SLOT_SIZE

    def index_at_byte(self, offset: int) -> int | None:
        """The list position of the instruction starting at byte ``offset``, if one does."""
        if offset % SLOT_SIZE:
            return None
        return self._by_slot.get(offset // SLOT_SIZE)
