"""What prepare produces: programs whose bytes are final, ready for one BPF_PROG_LOAD each.

Nothing here changes after prepare. A load reads these fields and nothing
else, so any number of threads may load any programs in any order; the
fd numbers embedded in ``code`` and ``fd_array`` are reserved for the life of
the collection (see ``dynbpf._sys.placeholder``).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from dynbpf._asm.insn import Insn, decode
from dynbpf._btf.ext import LineInfo
from dynbpf._elf.sections import ProgramKind
from dynbpf._sys.constants import ProgType
from dynbpf.errors import DynbpfError

FUNC_INFO_REC_SIZE = 8  # struct bpf_func_info: insn_off (slots), type_id
LINE_INFO_REC_SIZE = 16  # struct bpf_line_info: insn_off, file_name_off, line_off, line_col
_FUNC_INFO = struct.Struct("=II")  # native order, as the kernel reads it


@dataclass(frozen=True, slots=True)
class CoreFailure:
    """A CO-RE relocation this kernel cannot satisfy; its instruction was poisoned.

    The verifier rejects the program only if the poisoned instruction is
    reachable, so this is reported with the verifier's error, not at prepare.
    """

    slot: int
    description: str  # e.g. "struct task_struct.real_parent->pid (field_byte_offset): no match"


@dataclass(frozen=True, slots=True)
class SourceLine:
    """Where a BPF instruction came from (from the object's line_info)."""

    file: str
    line: int
    column: int
    text: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f":{self.column}" if self.column else "")
        return f"{where}: {self.text.strip()}" if self.text.strip() else where


@dataclass(frozen=True, slots=True)
class PreparedProgram:
    """One program, final: the exact BPF_PROG_LOAD request, minus the object's BTF fd.

    ``maps`` is the dependency set: every map the instructions refer to,
    directly or through subprograms and externs (the ``.kconfig`` map), by
    name. ``fd_array`` holds module BTF fds for kfuncs (index 0 unused, as
    the kernel reserves it for vmlinux).
    """

    name: str
    kind: ProgramKind
    license: str
    kernel_version: int
    code: bytes
    func_info: bytes = b""
    line_info: bytes = b""
    #: Where each function landed, in layout order: (first slot, function name); ``sources(name)`` gives its
    #: source lines as ((slot within it, line), ...), decoded only when a message needs one.
    lines: tuple[tuple[int, str], ...] = ()
    sources: Callable[[str], tuple[tuple[int, LineInfo], ...]] | None = field(default=None, compare=False, repr=False)
    attach_btf_id: int = 0
    attach_btf_obj_fd: int = 0  # 0: vmlinux
    expected_attach_type: int = 0
    maps: tuple[str, ...] = ()
    fd_array: tuple[int, ...] = ()
    core_failures: tuple[CoreFailure, ...] = ()
    absent_maps: tuple[tuple[int, str], ...] = ()  # (slot, map): poisoned loads of maps that are not created

    @property
    def instructions(self) -> tuple[Insn, ...]:
        """``code`` decoded (on each call: a load sends the bytes, and only messages and tests read these)."""
        return tuple(decode(self.code))

    @property
    def prog_type(self) -> ProgType:
        return self.kind.prog_type

    @property
    def prog_flags(self) -> int:
        return int(self.kind.prog_flags)

    @property
    def insn_count(self) -> int:
        """Length in 8-byte slots (what the kernel counts)."""
        return len(self.code) // 8

    @property
    def func_info_count(self) -> int:
        return len(self.func_info) // FUNC_INFO_REC_SIZE

    @property
    def line_info_count(self) -> int:
        return len(self.line_info) // LINE_INFO_REC_SIZE

    def source_line(self, slot: int) -> SourceLine | None:
        """The source line an instruction slot was compiled from: the nearest line_info at or before it."""
        if self.sources is None:
            return None
        at = bisect.bisect_right(self.lines, slot, key=_start) - 1
        while at >= 0:
            start, function = self.lines[at]
            try:
                lines = self.sources(function)
            except DynbpfError:  # a line record the object got wrong: no source line, not a second error
                return None
            i = bisect.bisect_right(lines, slot - start, key=_start) - 1
            if i >= 0:
                li = lines[i][1]
                return SourceLine(li.file_name, li.line_num, li.column, li.line)
            at -= 1
        return None

    def absent_map(self, slot: int) -> str | None:
        """The map that is not created whose (poisoned) load sits at ``slot``, if one does."""
        for at, name in self.absent_maps:
            if slot in (at, at + 1):
                return name
        return None

    def core_failure(self, slot: int) -> CoreFailure | None:
        for f in self.core_failures:
            if f.slot == slot:
                return f
        return None


def encode_func_info(records: list[tuple[int, int]]) -> bytes:
    """``(slot, FUNC type id)`` pairs as the kernel's ``bpf_func_info`` array."""
    return b"".join(_FUNC_INFO.pack(slot, type_id) for slot, type_id in records)


def encode_line_info(records: list[tuple[int, int, int, int, int]]) -> bytes:
    """``(slot, file_name_off, line_off, line_num, column)`` as ``bpf_line_info`` records."""
    words = array("I")
    for slot, file_off, line_off, line, col in records:
        words.extend((slot, file_off, line_off, (line << 10) | (col & 0x3FF)))
    return words.tobytes()  # native order, as the kernel reads it


def _start(entry: tuple[int, object]) -> int:
    return entry[0]
