"""dynbpf: a pure-Python eBPF loader and program-lifecycle manager.

Only the error classes are imported with the package; every other public
name is imported on first use (``dynbpf._lazy``), so ``import dynbpf`` stays
cheap for code that does not load anything.
"""

from __future__ import annotations

from dynbpf import _lazy
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

TYPE_CHECKING = False  # not typing's: importing typing costs a bare `import dynbpf` ~20 ms; mypy knows the name
if TYPE_CHECKING:
    from dynbpf.attach.link import IterLink, Link, LinkGroup
    from dynbpf.elf.reader import read
    from dynbpf.elf.spec import ObjectSpec
    from dynbpf.maps.events import EventLoop
    from dynbpf.maps.map import Map
    from dynbpf.maps.perfbuf import PerfBuffer
    from dynbpf.maps.record import Record
    from dynbpf.maps.ringbuf import RingBuffer
    from dynbpf.maps.variables import Variables
    from dynbpf.prepare.cache import CacheError
    from dynbpf.prepare.prepared import PreparedProgram
    from dynbpf.runtime.collection import Collection, open
    from dynbpf.runtime.mapedit import MapEdit
    from dynbpf.runtime.program import ClonedProgram, Program
    from dynbpf.runtime.state import MapPolicy, ProgramState

__version__ = "0.1.0"

__all__ = [
    "AttachError",
    "CacheError",
    "ClonedProgram",
    "Collection",
    "DynbpfError",
    "EventLoop",
    "IterLink",
    "KernelUnsupported",
    "Link",
    "LinkGroup",
    "Map",
    "MapEdit",
    "MapEditError",
    "MapPolicy",
    "ObjectFormatError",
    "ObjectSpec",
    "PerfBuffer",
    "PreparedProgram",
    "Program",
    "ProgramState",
    "Record",
    "RelocationError",
    "RingBuffer",
    "StateError",
    "SyscallError",
    "Variables",
    "VerifierError",
    "__version__",
    "open",
    "read",
]

if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute of the package
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf.attach.link": ("IterLink", "Link", "LinkGroup"),
            "dynbpf.elf.reader": ("read",),
            "dynbpf.elf.spec": ("ObjectSpec",),
            "dynbpf.maps.events": ("EventLoop",),
            "dynbpf.maps.map": ("Map",),
            "dynbpf.maps.perfbuf": ("PerfBuffer",),
            "dynbpf.maps.record": ("Record",),
            "dynbpf.maps.ringbuf": ("RingBuffer",),
            "dynbpf.maps.variables": ("Variables",),
            "dynbpf.prepare.cache": ("CacheError",),
            "dynbpf.prepare.prepared": ("PreparedProgram",),
            "dynbpf.runtime.collection": ("Collection", "open"),
            "dynbpf.runtime.mapedit": ("MapEdit",),
            "dynbpf.runtime.program": ("ClonedProgram", "Program"),
            "dynbpf.runtime.state": ("MapPolicy", "ProgramState"),
        },
    )
