"""eBPF instructions: model, encoding, builders."""

from dynbpf.asm.insn import Insn, encode

__all__ = ["Insn", "encode"]
