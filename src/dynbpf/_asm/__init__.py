"""eBPF instructions: model, encoding, slot offsets, disassembly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._asm.disasm import disassemble, format_listing, text
    from dynbpf._asm.insn import Insn, decode, encode
    from dynbpf._asm.slots import SlotMap, slot_offsets

__all__ = ["Insn", "SlotMap", "decode", "disassemble", "encode", "format_listing", "slot_offsets", "text"]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._asm.disasm": ("disassemble", "format_listing", "text"),
            "dynbpf._asm.insn": ("Insn", "decode", "encode"),
            "dynbpf._asm.slots": ("SlotMap", "slot_offsets"),
        },
    )
