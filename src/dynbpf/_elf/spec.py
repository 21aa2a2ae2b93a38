"""What a BPF object contains, as immutable data: the output of the ELF reader.

Everything is addressed the way later stages need it: instructions as one
list per function (ldimm64 counted once), relocations by position in that
list, maps and variables by name. Nothing here refers to the kernel.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from dynbpf import _section_names as section_names
from dynbpf._asm.insn import Insn
from dynbpf._btf.ext import CoreReloKind, LineInfo
from dynbpf._btf.spec import Spec
from dynbpf._elf.dwarf import DwarfTypes
from dynbpf._elf.names import source_name
from dynbpf._elf.sections import ProgramKind
from dynbpf._sys.constants import MapType


@dataclass(frozen=True, slots=True)
class MapReference:
    """``ldimm64`` of a map's address (``&map``)."""

    index: int
    map: str


@dataclass(frozen=True, slots=True)
class DataReference:
    """``ldimm64`` of an address inside a global data section (a variable, or a section plus offset)."""

    index: int
    map: str
    offset: int


@dataclass(frozen=True, slots=True)
class SubprogramCall:
    """A BPF-to-BPF call; ``function`` is the callee's name."""

    index: int
    function: str


@dataclass(frozen=True, slots=True)
class FunctionPointer:
    """``ldimm64`` of a function's address: a callback for bpf_loop, for_each_map_elem, timers."""

    index: int
    function: str


@dataclass(frozen=True, slots=True)
class ExternReference:
    """``ldimm64`` of a ``__kconfig`` or ``__ksym`` variable."""

    index: int
    extern: str


@dataclass(frozen=True, slots=True)
class KfuncCall:
    """A call to a kernel function declared ``extern ... __ksym``."""

    index: int
    extern: str


@dataclass(frozen=True, slots=True)
class CoreRelocation:
    """A CO-RE record from ``.BTF.ext``: fix this instruction for the running kernel's types."""

    index: int
    type_id: int
    access: str
    kind: CoreReloKind


Relocation = (
    MapReference | DataReference | SubprogramCall | FunctionPointer | ExternReference | KfuncCall | CoreRelocation
)


class FunctionBody(NamedTuple):
    """What a function's bytes decode to: the costly part of a :class:`FunctionSpec`."""

    instructions: tuple[Insn, ...]
    relocations: tuple[Relocation, ...] = ()
    func_type_id: int = 0  # BTF FUNC of this function (from func_info), 0 without BTF
    line_words: bytes = b""  # bpf_line_info records, slots from the function's start, the object's string offsets


class LazyBody:
    """A body decoded on first use, once: a large object's unloaded programs are never decoded.

    Line records are decoded into ``LineInfo`` objects separately, only when
    someone reads them (a verifier error's source line, inspect): a load
    needs only the raw records.
    """

    __slots__ = ("_lines", "_load", "_lock", "_value", "_value_lines")

    def __init__(
        self,
        load: Callable[[], FunctionBody],
        lock: threading.Lock,
        lines: Callable[[], tuple[tuple[int, LineInfo], ...]] | None = None,
    ) -> None:
        self._load = load
        self._lines = lines
        self._lock = lock
        self._value: FunctionBody | None = None
        self._value_lines: tuple[tuple[int, LineInfo], ...] | None = None

    def get(self) -> FunctionBody:
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    value = self._value = self._load()
        return value

    def lines(self) -> tuple[tuple[int, LineInfo], ...]:
        value = self._value_lines
        if value is None:
            with self._lock:
                value = self._value_lines
                if value is None:
                    value = self._value_lines = self._lines() if self._lines is not None else ()
        return value


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One BPF function: an entry program or a subprogram.

    ``offset`` is the function's byte offset in its ELF section; ``relocations``
    and ``line_info`` use positions in ``instructions``. The instructions,
    relocations and ``.BTF.ext`` records are decoded from ``code`` when first
    used (see :func:`dynbpf._elf.read`'s ``lazy``); a malformed function then
    raises ``ObjectFormatError`` at that moment.
    """

    name: str
    section: str
    offset: int
    code: bytes | memoryview = field(repr=False)  # the bytes the instructions decode from (a view of the file)
    global_function: bool = False  # a non-static function: verified on its own by the kernel
    hidden: bool = False  # global but with hidden visibility: libbpf makes its BTF FUNC static
    body: LazyBody = field(repr=False, compare=False, kw_only=True)

    @property
    def instructions(self) -> tuple[Insn, ...]:
        return self.body.get().instructions

    @property
    def relocations(self) -> tuple[Relocation, ...]:
        return self.body.get().relocations

    @property
    def func_type_id(self) -> int:
        return self.body.get().func_type_id

    @property
    def line_info(self) -> tuple[tuple[int, LineInfo], ...]:
        """``.BTF.ext`` line records as (instruction position, line), decoded on first use."""
        return self.body.lines()

    @property
    def line_words(self) -> bytes:
        """The line records as the kernel takes them, slots from the function's start."""
        return self.body.get().line_words

    @property
    def slot_count(self) -> int:
        """Instruction slots (8 bytes each; an ldimm64 takes two), known without decoding."""
        return len(self.code) // 8

    @property
    def symbol_name(self) -> str:
        """The name the object gives this function (``name`` is unique in the object, this need not be)."""
        return source_name(self.name)

    def encoded(self) -> bytes:
        """The function's bytes as in the object (before any relocation), as a copy of their own."""
        return bytes(self.code)

    @property
    def calls(self) -> tuple[str, ...]:
        """Direct callees (subprogram calls and callbacks), in order of first use, no duplicates."""
        seen: dict[str, None] = {}
        for r in self.relocations:
            if isinstance(r, SubprogramCall | FunctionPointer):
                seen.setdefault(r.function)
        return tuple(seen)

    @property
    def core_relocations(self) -> tuple[CoreRelocation, ...]:
        return tuple(r for r in self.relocations if isinstance(r, CoreRelocation))


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """An entry point: a function in a program section, with its section's kind."""

    function: FunctionSpec
    kind: ProgramKind

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def section(self) -> str:
        """The section name without the ``?`` that turns autoload off (as libbpf reports it)."""
        return self.kind.section


class Pinning(enum.IntEnum):
    NONE = 0
    BY_NAME = 1


@dataclass(frozen=True, slots=True)
class MapSpec:
    """A map as declared by the object.

    ``key_type``/``value_type`` are BTF ids (0 when declared by size only).
    ``contents`` holds initial entries for prog arrays and maps of maps as
    (slot, program or map name); ``data`` is the initial value of a global
    data or struct_ops map. ``program_slots`` maps struct_ops members to programs.
    """

    name: str
    type: MapType
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    numa_node: int = 0
    map_extra: int = 0
    pinning: Pinning = Pinning.NONE
    key_type: int = 0
    value_type: int = 0
    inner: MapSpec | None = None
    contents: tuple[tuple[int, str], ...] = ()
    data: bytes | None = None
    section: str = section_names.MAPS
    program_slots: tuple[tuple[str, str], ...] = ()
    btf_var: int = 0  # the BTF VAR declaring the map (BTF-defined maps and data sections)


class DataKind(enum.Enum):
    DATA = "data"
    RODATA = "rodata"
    BSS = "bss"


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """A global variable inside a data section map."""

    name: str
    section: str
    offset: int
    size: int
    type_id: int
    is_global: bool
    initial: bytes


class ExternKind(enum.Enum):
    KCONFIG = "kconfig"
    KSYM = "ksym"
    KFUNC = "kfunc"


@dataclass(frozen=True, slots=True)
class ExternSpec:
    """An ``extern`` resolved at prepare time: a kernel config value, kernel symbol or kfunc.

    ``type_id`` is the BTF VAR's type (kconfig, typed ksym), the FUNC_PROTO of a
    kfunc, or 0 for an untyped ``const void`` ksym.
    """

    name: str
    kind: ExternKind
    type_id: int
    weak: bool
    btf_id: int  # the VAR or FUNC in the object's BTF


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """A whole BPF object; see :func:`dynbpf._elf.read`."""

    name: str
    license: str
    kernel_version: int
    programs: Mapping[str, ProgramSpec]
    functions: Mapping[str, FunctionSpec]  # every function, programs and subprograms alike
    maps: Mapping[str, MapSpec]
    variables: Mapping[str, VariableSpec]
    externs: Mapping[str, ExternSpec]
    btf: Spec | None = field(default=None, repr=False)
    digest: bytes = field(default=b"", repr=False)  # sha256 of the object file: what a prepared cache is keyed by
    #: the types of the object's DWARF (``-g``), translated to BTF on first use; None without ``.debug_info``
    dwarf: DwarfTypes | None = field(default=None, repr=False, compare=False)

    @property
    def subprograms(self) -> Mapping[str, FunctionSpec]:
        return {n: f for n, f in self.functions.items() if n not in self.programs}

    def reachable(self, name: str) -> tuple[FunctionSpec, ...]:
        """The function ``name`` followed by every function it calls, transitively (each once)."""
        order: dict[str, FunctionSpec] = {}
        stack = [_a_name(name, "a function's name")]
        while stack:
            fn = self.functions[stack.pop()]
            if fn.name in order:
                continue
            order[fn.name] = fn
            stack.extend(reversed([c for c in fn.calls if c not in order]))
        return tuple(order.values())

    def maps_used(self, name: str) -> tuple[str, ...]:
        """Every map a program references, directly or through the subprograms it calls."""
        used: dict[str, None] = {}
        for fn in self.reachable(name):
            for r in fn.relocations:
                if isinstance(r, MapReference | DataReference):
                    used.setdefault(r.map)
        return tuple(used)

    def externs_used(self, name: str) -> tuple[str, ...]:
        used: dict[str, None] = {}
        for fn in self.reachable(name):
            for r in fn.relocations:
                if isinstance(r, ExternReference | KfuncCall):
                    used.setdefault(r.extern)
        return tuple(used)

    def users(self, map_name: str) -> Iterator[str]:
        """Programs that use ``map_name``."""
        _a_name(map_name, "a map's name")  # now, not on iteration: a spec matched no map and answered "none"
        return (p for p in self.programs if map_name in self.maps_used(p))


def _a_name(value: object, expected: str) -> str:
    """``value`` if it is a name; a spec passed instead is a TypeError saying to pass its name.

    The graph queries look names up in mappings, so a spec (hashable, being
    frozen) would be a KeyError quoting the whole spec, or, as a map name,
    match nothing and silently answer "no program".
    """
    if isinstance(value, str):
        return value
    hint = ": pass its .name" if isinstance(getattr(value, "name", None), str) else ""
    raise TypeError(f"{expected} (str), not {type(value).__name__}{hint}")
