"""dynbpf: a pure-Python eBPF loader and program-lifecycle manager."""

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

from dynbpf.elf import ObjectSpec, read

__version__ = "0.1.0"

__all__ = [
    "AttachError",
    "DynbpfError",
    "KernelUnsupported",
    "ObjectSpec",
    "ObjectFormatError",
    "RelocationError",
    "StateError",
    "SyscallError",
    "VerifierError",
    "read",
    "__version__",
]
