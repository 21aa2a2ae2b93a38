"""Slots versus list positions.

On the wire every instruction is one 8-byte slot except ldimm64, which is two.
Jump offsets, relocation offsets and ``.BTF.ext`` records all count slots (or
bytes, slot * 8), while dynbpf keeps one ``Insn`` per instruction; this module
is the one place that converts between the two.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate

from dynbpf._asm.insn import SLOT_SIZE, Insn
from dynbpf._asm.opcodes import LD_IMM64


def slot_offsets(insns: Iterable[Insn]) -> list[int]:
    """The slot at which each instruction starts (hot in prepare: opcodes compared directly)."""
    starts = list(accumulate([2 if i.opcode == LD_IMM64 else 1 for i in insns], initial=0))
    starts.pop()
    return starts


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Both directions between list positions and slots for one instruction sequence.

    Build it once per program (``SlotMap.of(insns)``). Slots are kept packed
    (4 bytes an instruction; a dictionary per function cost a large object
    tens of megabytes) and found by binary search. A slot that falls in the
    second half of an ldimm64, or past the end, belongs to no instruction:
    :meth:`index` returns ``None`` for it and the caller, who knows which
    section and record pointed there, reports the error.
    """

    starts: array[int] = field(compare=False)
    total_slots: int

    @classmethod
    def of(cls, insns: Iterable[Insn]) -> SlotMap:
        insns = list(insns)
        starts = slot_offsets(insns)
        total = starts[-1] + insns[-1].slots if insns else 0
        return cls(array("I", starts), total)

    def __len__(self) -> int:
        return len(self.starts)

    def slot(self, index: int) -> int:
        """The slot where the instruction at list position ``index`` starts."""
        return self.starts[index]

    def index(self, slot: int) -> int | None:
        """The list position of the instruction starting at ``slot``, if one does."""
        at = bisect.bisect_left(self.starts, slot)
        return at if at < len(self.starts) and self.starts[at] == slot else None

    def byte_offset(self, index: int) -> int:
        return self.starts[index] * SLOT_SIZE

    def index_at_byte(self, offset: int) -> int | None:
        """The list position of the instruction starting at byte ``offset``, if one does."""
        if offset % SLOT_SIZE:
            return None
        return self.index(offset // SLOT_SIZE)
