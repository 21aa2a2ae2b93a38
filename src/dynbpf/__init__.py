"""dynbpf: a pure-Python eBPF loader and program-lifecycle manager."""

from dynbpf.elf import ObjectSpec, read
from dynbpf.errors import (
    AttachError,
    DynbpfError,
    KernelUnsupported,
    ObjectFormatError,
    RelocationError,
    StateError,
    SyscallError,
    VerifierError,
)

__version__ = "0.1.0"

__all__ = [
    "AttachError",
    "DynbpfError",
    "KernelUnsupported",
    "ObjectFormatError",
    "ObjectSpec",
    "RelocationError",
    "StateError",
    "SyscallError",
    "VerifierError",
    "__version__",
    "read",
]
