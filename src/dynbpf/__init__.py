"""dynbpf: a pure-Python eBPF loader and program-lifecycle manager."""

from dynbpf.elf import ObjectSpec, read
from dynbpf.errors import (
    AttachError,
    DynbpfError,
    KernelUnsupported,
    MapEditError,
    ObjectFormatError,
    RelocationError,
    StateError,
    SyscallError,
    VerifierError,
)
from dynbpf.runtime.collection import Collection, open
from dynbpf.runtime.mapedit import MapEdit
from dynbpf.runtime.program import Program
from dynbpf.runtime.state import MapPolicy, ProgramState

__version__ = "0.1.0"

__all__ = [
    "AttachError",
    "Collection",
    "DynbpfError",
    "KernelUnsupported",
    "MapEdit",
    "MapEditError",
    "MapPolicy",
    "ObjectFormatError",
    "ObjectSpec",
    "Program",
    "ProgramState",
    "RelocationError",
    "StateError",
    "SyscallError",
    "VerifierError",
    "__version__",
    "open",
    "read",
]
