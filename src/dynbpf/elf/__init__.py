"""ELF: a clang-compiled BPF object read into an immutable ObjectSpec."""

from dynbpf.elf.reader import read
from dynbpf.elf.spec import FunctionSpec, MapSpec, ObjectSpec, ProgramSpec, VariableSpec

__all__ = ["FunctionSpec", "MapSpec", "ObjectSpec", "ProgramSpec", "VariableSpec", "read"]
