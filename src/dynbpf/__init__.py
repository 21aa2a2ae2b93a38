"""dynbpf: a pure-Python eBPF loader and program-lifecycle manager.

Only the error classes are imported with the package; every other public
name is imported on first use (``dynbpf._lazy``), so ``import dynbpf`` stays
cheap for code that does not load anything.
"""

from __future__ import annotations

from dynbpf import _lazy
from dynbpf.errors import (
    ApplyError,
    AttachError,
    AttributeNotFound,
    DynbpfError,
    FeatureMapError,
    KernelDataError,
    KernelUnsupported,
    MapEditError,
    NotFound,
    ObjectFormatError,
    OptionError,
    PinError,
    RelocationError,
    StateError,
    SyscallError,
    VerifierError,
)

TYPE_CHECKING = False  # not typing's: importing typing costs a bare `import dynbpf` ~20 ms; mypy knows the name
if TYPE_CHECKING:
    from dynbpf._attach.auto import Attached
    from dynbpf._attach.binaries import BinaryNotFoundError
    from dynbpf._attach.link import IterLink, Link, LinkGroup
    from dynbpf._attach.symbols import SymbolError
    from dynbpf._elf.reader import read
    from dynbpf._elf.spec import ObjectSpec
    from dynbpf._features.application import Application, FeatureState
    from dynbpf._features.model import Feature, FeatureMap, Hook, Requirement, Variant
    from dynbpf._features.tags import include_dir
    from dynbpf._maps.errors import CodecError, MapTypeError
    from dynbpf._maps.events import EventLoop
    from dynbpf._maps.map import Map
    from dynbpf._maps.perfbuf import PerfBuffer
    from dynbpf._maps.record import Record
    from dynbpf._maps.ringbuf import RingBuffer
    from dynbpf._maps.variables import Variables
    from dynbpf._prepare.cache import CacheError
    from dynbpf._prepare.prepared import PreparedProgram
    from dynbpf._runtime.adopt import Adoption
    from dynbpf._runtime.collection import Collection, open
    from dynbpf._runtime.mapedit import MapEdit
    from dynbpf._runtime.program import ClonedProgram, Program
    from dynbpf._runtime.state import MapPolicy, ProgramState
    from dynbpf._runtime.struct_ops import StructOps, StructOpsLink
    from dynbpf._tools.clock import KernelClock
    from dynbpf._tools.histogram import Histogram
    from dynbpf._tools.symbolize import StackFrame, Symbolizer

__version__ = "0.1.0"

__all__ = [
    "Adoption",
    "Application",
    "ApplyError",
    "AttachError",
    "Attached",
    "AttributeNotFound",
    "BinaryNotFoundError",
    "CacheError",
    "ClonedProgram",
    "CodecError",
    "Collection",
    "DynbpfError",
    "EventLoop",
    "Feature",
    "FeatureMap",
    "FeatureMapError",
    "FeatureState",
    "Histogram",
    "Hook",
    "IterLink",
    "KernelClock",
    "KernelDataError",
    "KernelUnsupported",
    "Link",
    "LinkGroup",
    "Map",
    "MapEdit",
    "MapEditError",
    "MapPolicy",
    "MapTypeError",
    "NotFound",
    "ObjectFormatError",
    "ObjectSpec",
    "OptionError",
    "PerfBuffer",
    "PinError",
    "PreparedProgram",
    "Program",
    "ProgramState",
    "Record",
    "RelocationError",
    "Requirement",
    "RingBuffer",
    "StackFrame",
    "StateError",
    "StructOps",
    "StructOpsLink",
    "SymbolError",
    "Symbolizer",
    "SyscallError",
    "Variables",
    "Variant",
    "VerifierError",
    "__version__",
    "include_dir",
    "open",
    "read",
]

if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute of the package
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._attach.auto": ("Attached",),
            "dynbpf._attach.binaries": ("BinaryNotFoundError",),
            "dynbpf._attach.link": ("IterLink", "Link", "LinkGroup"),
            "dynbpf._attach.symbols": ("SymbolError",),
            "dynbpf._elf.reader": ("read",),
            "dynbpf._elf.spec": ("ObjectSpec",),
            "dynbpf._maps.errors": ("CodecError", "MapTypeError"),
            "dynbpf._features.application": ("Application", "FeatureState"),
            "dynbpf._features.model": ("Feature", "FeatureMap", "Hook", "Requirement", "Variant"),
            "dynbpf._features.tags": ("include_dir",),
            "dynbpf._maps.events": ("EventLoop",),
            "dynbpf._maps.map": ("Map",),
            "dynbpf._maps.perfbuf": ("PerfBuffer",),
            "dynbpf._maps.record": ("Record",),
            "dynbpf._maps.ringbuf": ("RingBuffer",),
            "dynbpf._maps.variables": ("Variables",),
            "dynbpf._prepare.cache": ("CacheError",),
            "dynbpf._prepare.prepared": ("PreparedProgram",),
            "dynbpf._runtime.adopt": ("Adoption",),
            "dynbpf._runtime.collection": ("Collection", "open"),
            "dynbpf._runtime.mapedit": ("MapEdit",),
            "dynbpf._runtime.program": ("ClonedProgram", "Program"),
            "dynbpf._runtime.state": ("MapPolicy", "ProgramState"),
            "dynbpf._runtime.struct_ops": ("StructOps", "StructOpsLink"),
            "dynbpf._tools.clock": ("KernelClock",),
            "dynbpf._tools.symbolize": ("StackFrame", "Symbolizer"),
            "dynbpf._tools.histogram": ("Histogram",),
        },
    )
