"""eBPF instructions: model, encoding, slot offsets, disassembly."""

from dynbpf.asm.disasm import disassemble, format_listing, text
from dynbpf.asm.insn import Insn, decode, encode
from dynbpf.asm.slots import SlotMap, slot_offsets

__all__ = ["Insn", "SlotMap", "decode", "disassemble", "encode", "format_listing", "slot_offsets", "text"]
