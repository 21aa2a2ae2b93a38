"""The kernel's program tag, computed from the instructions a loader is about to send.

The kernel names every loaded program with a tag (``bpf_prog_info.tag``,
``bpftool prog``'s ``tag``): the first 8 bytes of a digest of the
instructions as they were given, map references blanked so that the tag
names the code rather than the fd numbers one process happened to have
(``bpf_prog_calc_tag``, kernel/bpf/core.c). Comparing the tag of a pinned
program with the tag of the instructions this process would load says
whether that program is the one it would load, without loading it.

The kernel's rule, kept exactly: a ``BPF_LD | BPF_IMM | BPF_DW`` whose
source is ``BPF_PSEUDO_MAP_FD`` or ``BPF_PSEUDO_MAP_VALUE`` has its ``imm``
zeroed, and so does the next slot's when it is a bare second half (opcode,
registers and offset all 0); other ldimm64s (BTF ids, functions, map
indexes into ``fd_array``) are hashed as given. The digest is SHA-1 on
older kernels and SHA-256 on newer ones (the signed-programs work); which
one a kernel uses is a probe's business (``dynbpf._probes.kernel.sha256_tags``).
"""

from __future__ import annotations

import hashlib

__all__ = ["TAG_DIGESTS", "prog_tag"]

TAG_DIGESTS = ("sha1", "sha256")
_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW
_MAP_REFERENCES = (1, 2)  # BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE


def prog_tag(code: bytes, digest: str) -> str:
    """The tag (16 hex digits) the kernel gives a program loaded from ``code``, hashing with ``digest``."""
    if digest not in TAG_DIGESTS:
        raise ValueError(f"a kernel tags programs with {' or '.join(TAG_DIGESTS)}, not {digest!r}")
    if len(code) % 8:
        raise ValueError(f"instructions are 8-byte slots; {len(code)} bytes is not a whole number of them")
    out = bytearray(code)
    was_ld_map = False
    for at in range(0, len(out), 8):
        opcode, regs, off = out[at], out[at + 1], out[at + 2 : at + 4]
        if not was_ld_map and opcode == _LD_IMM64 and regs >> 4 in _MAP_REFERENCES:
            was_ld_map = True
            out[at + 4 : at + 8] = bytes(4)
        elif was_ld_map and opcode == 0 and regs == 0 and off == b"\0\0":
            was_ld_map = False
            out[at + 4 : at + 8] = bytes(4)
        else:
            was_ld_map = False
    return hashlib.new(digest, bytes(out)).hexdigest()[:16]
