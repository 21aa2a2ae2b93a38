"""Reading a verifier log: which instruction the verifier rejected, and what it said.

The log is free text, but its shape is stable across kernels: the verifier
prints each instruction it checks as ``N: (op) text`` (N the slot, op the
opcode in hex) before checking it, so the last such line before the
complaint names the instruction it rejected. Everything after that line,
except the statistics the kernel appends, is the complaint. Errors found
before the instruction walk (control-flow checks) name their instruction in
the message instead (``back-edge from insn 5 to 3``).

The kernel keeps the *end* of a log that overflows its buffer (since 6.4), so
these functions only need the tail; a truncated head does not matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: ``call unknown#195896080``: the helper id CO-RE writes into an instruction it could not relocate.
CORE_POISON = "unknown#195896080"

_INSN = re.compile(r"^(\d+): \(([0-9a-f]{2})\) (.*)$")
_PROCESSED = re.compile(r"^processed (\d+) insns")
# Lines the kernel appends after the verdict, or prints between instructions, that are not the complaint.
_NOT_MESSAGE = (
    re.compile(r"^processed \d+ insns"),
    re.compile(r"^verification time \d+ usec"),
    re.compile(r"^stack depth [\d+]+"),
    re.compile(r"^func#\d+ @\d+$"),
    re.compile(r"^; "),
    re.compile(r"^\d+: (?:R\d|frame\d+:)"),  # register state at an instruction
    re.compile(r"^\d+: \(.*$"),
    re.compile(r"^from \d+ to \d+: "),
    re.compile(r"^mark_precise: "),
    re.compile(r"^(?:caller|callee|returning from callee):$"),
    re.compile(r"^\s"),  # indented: liveness tables, frames of a call
    re.compile(r"^Validating \S+ func#\d+\.\.\.$"),
)
# Checks made before the walk name the instruction in the message (kernel/bpf/verifier.c).
_FROM_INSN = re.compile(r"\b[Ii]nsn (\d+)\b")


@dataclass(frozen=True, slots=True)
class Rejection:
    """What a log says about a rejected load.

    ``instruction`` is the slot the verifier rejected, ``instruction_text``
    the kernel's own rendering of it (``(79) r1 = *(u64 *)(r1 +0)``); both
    are None when the log does not name an instruction. ``message`` is the
    verifier's complaint, possibly several lines, "" for an empty log.
    """

    message: str
    instruction: int | None
    instruction_text: str | None

    @property
    def core_poisoned(self) -> bool:
        """The rejected instruction is one CO-RE poisoned (a relocation this kernel cannot satisfy)."""
        return CORE_POISON in self.message or (
            self.instruction_text is not None and CORE_POISON in self.instruction_text
        )


def rejection(log: str) -> Rejection:
    """The failing instruction and the complaint of a rejected load's log."""
    lines = [line.rstrip() for line in log.splitlines()]
    last_insn = None
    for i in range(len(lines) - 1, -1, -1):
        if _INSN.match(lines[i]):
            last_insn = i
            break
    tail = lines[last_insn + 1 :] if last_insn is not None else lines
    message_lines = [line for line in tail if line.strip() and not _skipped(line)]
    if last_insn is None:
        # No instruction walk: a control-flow check failed; its complaint is the last thing it said.
        message_lines = message_lines[-1:]
        slot = _slot_in(message_lines[0]) if message_lines else None
        return Rejection("\n".join(message_lines), slot, None)
    m = _INSN.match(lines[last_insn])
    assert m is not None
    return Rejection("\n".join(message_lines), int(m.group(1)), f"({m.group(2)}) {m.group(3)}")


def processed_insns(log: str) -> int | None:
    """``processed N insns``: how many instructions the verifier walked (None if the log does not say)."""
    for line in reversed(log.splitlines()):
        m = _PROCESSED.match(line)
        if m:
            return int(m.group(1))
    return None


def tail(log: str, lines: int = 20) -> str:
    """The last ``lines`` non-empty lines: where the verdict is."""
    kept = [line for line in log.rstrip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _skipped(line: str) -> bool:
    return any(p.match(line) for p in _NOT_MESSAGE)


def _slot_in(message: str) -> int | None:
    m = _FROM_INSN.search(message)
    return int(m.group(1)) if m else None
