"""eBPF instructions: model, encoding, builders."""

from dynbpf.asm.insn import Insn, decode, encode

__all__ = ["Insn", "decode", "encode"]
