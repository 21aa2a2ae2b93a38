"""ELF: a clang-compiled BPF object read into an immutable ObjectSpec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._elf.reader import read
    from dynbpf._elf.spec import FunctionSpec, MapSpec, ObjectSpec, ProgramSpec, VariableSpec

__all__ = ["FunctionSpec", "MapSpec", "ObjectSpec", "ProgramSpec", "VariableSpec", "read"]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._elf.reader": ("read",),
            "dynbpf._elf.spec": ("FunctionSpec", "MapSpec", "ObjectSpec", "ProgramSpec", "VariableSpec"),
        },
    )
