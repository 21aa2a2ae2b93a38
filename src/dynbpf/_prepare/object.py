"""Prepare a whole object: every program's instructions made final for the running kernel.

Per program: subprograms linked in, CO-RE applied, map and global-data
references pointed at reserved fd numbers, externs filled in, attach target
found. Per object: externs resolved once, BTF fixed up, sanitised and loaded
once. A program that cannot be prepared (a missing attach target, a
non-weak extern the kernel lacks) does not stop the others: its error is
kept and raised when someone tries to load it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynbpf._asm.insn import Insn, call
from dynbpf._asm.opcodes import PseudoLd
from dynbpf._asm.slots import slot_offsets
from dynbpf._btf import kernel
from dynbpf._btf.core import Resolver, patch
from dynbpf._btf.ext import LineInfo
from dynbpf._btf.kernel import KernelBtf
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Struct
from dynbpf._elf.sections import Attacher, AttachTarget
from dynbpf._elf.spec import (
    DataReference,
    ExternKind,
    ExternReference,
    FunctionPointer,
    FunctionSpec,
    KfuncCall,
    MapReference,
    MapSpec,
    ObjectSpec,
    ProgramSpec,
    SubprogramCall,
)
from dynbpf._prepare import btf_fixup, btf_sanitize
from dynbpf._prepare.attach_target import KernelTarget, find_kernel_target, needs_kernel_target
from dynbpf._prepare.externs import ResolvedExterns, relocate_extern, resolve_externs
from dynbpf._prepare.linker import link
from dynbpf._prepare.modules import ModuleBtf
from dynbpf._prepare.prepared import CoreFailure, PreparedProgram, encode_func_info
from dynbpf._section_names import KCONFIG, is_data_section
from dynbpf._sys.closing import Closing
from dynbpf._sys.constants import AttachType, MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, NotFound, ObjectFormatError, RelocationError

if TYPE_CHECKING:
    from dynbpf._prepare.cache import PreparedCache

KCONFIG_MAP = KCONFIG  # the map is named after the section


@dataclass(frozen=True, slots=True)
class StructOpsSlot:
    """Where a struct_ops program plugs in: the kernel struct's BTF id and the member's index."""

    map: str
    struct_id: int
    member: int


@dataclass(frozen=True, slots=True)
class PreparedObject(Closing):
    """An object ready for loading: the maps programs need, the object's BTF in the kernel, final programs.

    Per-object work (externs, BTF fix-up and load, the CO-RE resolver) is
    done by :func:`prepare`; each program is made final the first time
    someone asks for it (:meth:`program`), exactly once, and kept. So a
    caller who loads a tenth of a large object's programs prepares a tenth
    of them, and a parallel load prepares each program in the worker that
    then verifies it, overlapping Python with the kernel's verifier.
    ``programs`` and ``failed`` prepare everything (libbpf's contract).
    Owns the BTF fd and module BTF fds it opened; :meth:`close` releases
    them. Like libbpf, an object whose BTF the kernel refuses is still
    loadable without it (``btf_error`` says why), unless it has struct_ops maps.
    """

    spec: ObjectSpec
    maps: Mapping[str, MapSpec]
    btf: Spec | None
    btf_fd: Fd | None
    externs: ResolvedExterns = field(repr=False)
    modules: ModuleBtf = field(repr=False)
    table: _Programs = field(repr=False, compare=False)
    btf_error: DynbpfError | None = None  # why the kernel refused the object's BTF, if it did

    def result(self, name: str) -> PreparedProgram | DynbpfError:
        """Program ``name`` made final, or why it cannot be (prepared now if it was not yet)."""
        return self.table.result(name)

    def program(self, name: str) -> PreparedProgram:
        """Program ``name`` made final; raises why it cannot be."""
        got = self.table.result(name)
        if isinstance(got, DynbpfError):
            raise got
        return got

    @property
    def programs(self) -> Mapping[str, PreparedProgram]:
        """Every program that can be prepared (preparing all of them)."""
        return {n: r for n in self.spec.programs if not isinstance(r := self.result(n), DynbpfError)}

    @property
    def failed(self) -> Mapping[str, DynbpfError]:
        """Every program that cannot be prepared, with why (preparing all of them)."""
        return {n: r for n in self.spec.programs if isinstance(r := self.result(n), DynbpfError)}

    @property
    def cache(self) -> PreparedCache | None:
        """The prepared cache programs come from and go to (``hits``, ``misses``), if one was asked for."""
        return self.table.cache

    @property
    def vmlinux(self) -> Spec | None:
        """The kernel BTF programs are prepared against (the running kernel's, parsed on first need)."""
        return self.table.vmlinux

    def save_cache(self) -> None:
        """Write programs prepared since the last save to the prepared cache, if there is one."""
        if self.table.cache is not None:
            self.table.cache.save()

    def close(self) -> None:
        if self.btf_fd is not None:
            self.btf_fd.close()
        self.modules.close()


class _Programs:
    """Programs prepared on first request, once each; any thread may ask.

    Preparing is Python work that holds the GIL, so one lock serialises it
    at no cost in parallelism; results are immutable and read without it.
    """

    def __init__(self, context: _Context, cache: PreparedCache | None = None) -> None:
        self._context = context
        self._results: dict[str, PreparedProgram | DynbpfError] = {}
        self._lock = threading.Lock()
        self.cache = cache
        self._numbers: dict[int, str] | None = None  # reserved fd number -> map, for the cache

    def done(self, name: str) -> bool:
        return name in self._results

    @property
    def vmlinux(self) -> Spec | None:
        return self._context.vmlinux

    def result(self, name: str) -> PreparedProgram | DynbpfError:
        got = self._results.get(name)
        if got is not None:
            return got
        prog = self._context.obj.programs.get(name)
        if prog is None:
            raise NotFound(f"object {self._context.obj.name!r}", "program", name, self._context.obj.programs)
        with self._lock:
            got = self._results.get(name)
            if got is None:
                got = self.cache.get(name) if self.cache is not None else None
            if got is None:
                try:
                    got = self._context.program(prog)
                except DynbpfError as e:
                    got = e
                else:
                    if self.cache is not None and self._cacheable(name):
                        self.cache.put(got, self._map_numbers())
            self._results[name] = got
            return got

    def _cacheable(self, name: str) -> bool:
        """Not a program using ``__ksym`` externs or kfuncs: addresses, module BTF and weak misses change with
        modules loaded and unloaded, which nothing in a cache key sees."""
        obj = self._context.obj
        if name in self._context.program_targets:
            return False  # prepared without its section's kernel target: not what another open would want
        return all(obj.externs[e].kind is ExternKind.KCONFIG for e in obj.externs_used(name))

    def _map_numbers(self) -> dict[int, str]:
        if self._numbers is None:
            context = self._context
            names = [*context.obj.maps, *([KCONFIG_MAP] if context.externs.kconfig_map is not None else [])]
            self._numbers = {context.map_fd(n): n for n in names}
        return self._numbers


def prepare(
    obj: ObjectSpec,
    map_fd: Callable[[str], int],
    *,
    vmlinux: Spec | None = None,
    config: Mapping[str, str] | None = None,
    kallsyms: Mapping[str, int] | None = None,
    btf_support: btf_sanitize.BtfSupport | None = None,
    layout: btf_fixup.ElfLayout | None = None,
    absent_maps: frozenset[str] = frozenset(),
    program_targets: frozenset[str] = frozenset(),
    lazy: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_key: bytes = b"",
) -> PreparedObject:
    """Make every program of ``obj`` final; ``map_fd(name)`` gives the reserved fd number of a map.

    With ``lazy``, only the per-object work is done now; each program is
    prepared when first asked for (see :class:`PreparedObject`).
    With ``cache_dir``, programs prepared by an earlier run under the same
    ``cache_key`` (which must cover everything the instructions depend on
    beyond this object's BTF; see :mod:`dynbpf._prepare.cache`) are taken
    from there, and programs prepared now are kept for :meth:`PreparedObject.save_cache`.
    ``absent_maps`` are maps that will not be created (libbpf's
    ``bpf_map__set_autocreate(map, false)``): like libbpf, references to
    them are poisoned, so a program fails to load only if one is reachable.
    ``program_targets`` are programs whose attach target is a BPF program
    given at load (libbpf's ``bpf_program__set_attach_target``): their
    section's name is not looked up in kernel BTF, and they are not cached.

    ``vmlinux``, ``config`` and ``kallsyms`` default to the running
    kernel's; tests pass others. ``layout`` is what the BTF fix-up needs
    from the ELF file beyond the spec (symbol visibility); without it the
    spec's own record is used.
    """
    externs = resolve_externs(obj, config=config, kallsyms=kallsyms, kernel=[vmlinux] if vmlinux is not None else None)
    maps = dict(obj.maps)
    if externs.kconfig_map is not None:
        maps[KCONFIG_MAP] = externs.kconfig_map
    modules = ModuleBtf()
    btf: Spec | None = None
    btf_fd: Fd | None = None
    btf_error: DynbpfError | None = None
    try:
        if obj.btf is not None:
            size = externs.kconfig_map.value_size if externs.kconfig_map is not None else 0
            fixed = btf_fixup.fixup(obj, layout=layout, kconfig_offsets=externs.kconfig_offsets, kconfig_size=size)
            support = btf_support if btf_support is not None else btf_sanitize.BtfSupport.probe()
            btf = btf_sanitize.sanitize(fixed, support)
            try:
                btf_fd = btf_sanitize.load(btf, name=obj.name)
            except btf_sanitize.BtfLoadError as e:
                if any(m.type == MapType.STRUCT_OPS for m in obj.maps.values()):
                    raise  # struct_ops maps cannot exist without the object's BTF in the kernel
                btf_error, btf = e, None  # like libbpf: load without BTF; programs lose func/line info
            if btf_fd is not None and not btf_sanitize.func_info_supported(support):
                btf_fd.close()
                btf_fd, btf = None, None
        context = _Context(
            obj,
            map_fd,
            externs=externs,
            modules=modules,
            vmlinux=vmlinux,
            with_btf_info=btf is not None,
            absent_maps=absent_maps,
            program_targets=program_targets,
        )
        cached = None
        if cache_dir is not None:
            from dynbpf._prepare.cache import PreparedCache  # pickle and tempfile only for those who cache

            key = PreparedCache.key([cache_key, b"with btf info" if btf is not None else b"without btf info"])
            cached = PreparedCache(cache_dir, key, map_fd, context.function_lines)
        table = _Programs(context, cached)
        if not lazy:
            for name in obj.programs:
                table.result(name)
    except BaseException:
        if btf_fd is not None:
            btf_fd.close()
        modules.close()
        raise
    return PreparedObject(obj, maps, btf, btf_fd, externs, modules, table, btf_error)


@dataclass(frozen=True, slots=True)
class _Relocated:
    """One function after relocation: its bytes (a poisoned ldimm64 is two calls) and what they need."""

    code: bytes
    core_failures: tuple[tuple[int, str], ...]  # (slot within the function, description)
    maps: tuple[str, ...]
    linked_by_layout: tuple[int, ...]  # positions of calls and callback loads (the linker fixes those)
    absent_maps: tuple[tuple[int, str], ...] = ()  # (slot within the function, map): poisoned references


class _Context:
    """What preparing each program of one object shares: one CO-RE resolver, fd_array indexes."""

    def __init__(
        self,
        obj: ObjectSpec,
        map_fd: Callable[[str], int],
        *,
        externs: ResolvedExterns,
        modules: ModuleBtf,
        vmlinux: Spec | None,
        with_btf_info: bool,
        absent_maps: frozenset[str] = frozenset(),
        program_targets: frozenset[str] = frozenset(),
    ) -> None:
        self.obj = obj
        self.map_fd = map_fd
        self.externs = externs
        self.modules = modules
        self._vmlinux = vmlinux  # None: the running kernel's, parsed when something first needs it
        self.with_btf_info = with_btf_info
        self.absent_maps = absent_maps
        self.program_targets = program_targets
        self.map_index = _libbpf_map_order(obj)
        self._resolver: Resolver | None = None
        self.fd_array: list[int] = [0]  # index 0 is vmlinux by the kernel's convention
        self.fd_index: dict[str, int] = {}
        self.fn_lines: dict[str, tuple[tuple[int, LineInfo], ...]] = {}
        self.relocated: dict[str, _Relocated | DynbpfError] = {}
        self.kernel_targets: dict[tuple[AttachType | None, AttachTarget | None], KernelTarget] = {}
        self._kernel_btf: KernelBtf | None = None
        self._struct_ops: dict[str, StructOpsSlot] | None = None

    # Kernel BTF is parsed only when a program needs it (CO-RE, a BTF attach target, struct_ops): a warm
    # start from the prepared cache, or an object without such programs, never parses it.

    @property
    def vmlinux(self) -> Spec | None:
        if self._vmlinux is None:
            self._vmlinux = kernel.vmlinux()
        return self._vmlinux

    @property
    def kernel_btf(self) -> KernelBtf:
        """What CO-RE and attach targets search: :attr:`vmlinux`, and the loaded modules if it is the running one."""
        if self._kernel_btf is None:
            self._kernel_btf = KernelBtf(self.vmlinux)
        return self._kernel_btf

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            assert self.obj.btf is not None  # the reader only makes CO-RE records from .BTF.ext
            self._resolver = Resolver(self.obj.btf, self.kernel_btf)
        return self._resolver

    @property
    def struct_ops(self) -> dict[str, StructOpsSlot]:
        if self._struct_ops is None:
            needed = any(m.type == MapType.STRUCT_OPS for m in self.obj.maps.values())
            self._struct_ops = _struct_ops_slots(self.obj, self.vmlinux) if needed else {}
        return self._struct_ops

    def fd_array_index(self, module: str) -> int:
        index = self.fd_index.get(module)
        if index is None:
            index = self.fd_index[module] = len(self.fd_array)
            self.fd_array.append(self.modules.fd(module))
        return index

    def program(self, prog: ProgramSpec) -> PreparedProgram:
        name = prog.name
        if prog.kind.prog_type == ProgType.UNSPEC:
            raise ObjectFormatError(f"program {name!r} cannot be loaded: {prog.kind.error}")
        linked = link(self.obj, name)
        slots = linked.slots
        code = bytearray()
        core_failures: list[CoreFailure] = []
        absent: list[tuple[int, str]] = []
        used: dict[str, None] = {}
        for placed in linked.functions:
            fn, start = placed.function, placed.start
            done = self._relocated(fn)
            base = slots.slot(start)
            code += done.code
            core_failures.extend(CoreFailure(base + slot, text) for slot, text in done.core_failures)
            absent.extend((base + slot, m) for slot, m in done.absent_maps)
            used.update(dict.fromkeys(done.maps))
            for index in done.linked_by_layout:  # calls and callback loads: retargeted by the linker
                insn = linked.instructions[start + index]
                at = 8 * slots.slot(start + index)
                code[at : at + 8 * insn.slots] = insn.encode()
        func_info, line_info = b"", b""
        if self.with_btf_info and self.obj.btf is not None:
            func_info = encode_func_info([(slots.slot(p), t) for p, t in linked.func_info])
            line_info = b"".join(self._line_records(p.function, slots.slot(p.start)) for p in linked.functions)
        lines = tuple((slots.slot(p.start), p.function.name) for p in linked.functions)
        attach_btf_id, attach_obj_fd, expected = 0, 0, prog.kind.expected_attach_type
        expected_attach_type = int(expected) if expected is not None else 0
        if prog.kind.attacher is Attacher.USDT and expected is None and _uprobe_multi_links():
            expected_attach_type = int(AttachType.TRACE_UPROBE_MULTI)  # as libbpf: one link for all its call sites
        if needs_kernel_target(prog.kind) and name not in self.program_targets:
            target = self._kernel_target(prog)
            attach_btf_id = target.btf_id
            if target.module is not None:
                attach_obj_fd = self.modules.fd(target.module)
        slot = self.struct_ops.get(name)
        if slot is not None:
            attach_btf_id, expected_attach_type = slot.struct_id, slot.member
        return PreparedProgram(
            name=name,
            kind=prog.kind,
            license=self.obj.license,
            kernel_version=self.obj.kernel_version,
            code=bytes(code),
            func_info=func_info,
            line_info=line_info,
            lines=lines,
            sources=self.function_lines,
            attach_btf_id=attach_btf_id,
            attach_btf_obj_fd=attach_obj_fd,
            expected_attach_type=expected_attach_type,
            maps=tuple(used),
            fd_array=tuple(self.fd_array) if len(self.fd_array) > 1 else (),
            core_failures=tuple(core_failures),
            absent_maps=tuple(absent),
        )

    def _kernel_target(self, prog: ProgramSpec) -> KernelTarget:
        """Looked up once per distinct target: 200 programs on one tracepoint search kernel BTF once."""
        kind = prog.kind
        key = (kind.expected_attach_type, kind.target)
        found = self.kernel_targets.get(key)
        if found is None:
            found = self.kernel_targets[key] = find_kernel_target(kind, program=prog.name, kernel=self.kernel_btf)
        return found

    def _relocated(self, fn: FunctionSpec) -> _Relocated:
        """``fn`` with its map, extern and CO-RE relocations applied: the same in every program that links it.

        Computed once per function (a failure too), so a subprogram shared by
        200 programs is relocated once; only call targets depend on the layout.
        """
        done = self.relocated.get(fn.name)
        if done is None:
            try:
                done = self._relocate(fn)
            except DynbpfError as e:
                done = e
            self.relocated[fn.name] = done
        if isinstance(done, DynbpfError):
            raise done
        return done

    def _relocate(self, fn: FunctionSpec) -> _Relocated:
        insns = list(fn.instructions)
        starts = slot_offsets(insns)
        spliced: dict[int, tuple[Insn, ...]] = {}
        failures: list[tuple[int, str]] = []
        absent: list[tuple[int, str]] = []
        used: dict[str, None] = {}
        by_layout: list[int] = []
        for r in fn.relocations:
            at = r.index
            where = f"function {fn.name!r}: instruction {starts[at]}"
            insn = insns[at]
            if isinstance(r, SubprogramCall | FunctionPointer):
                by_layout.append(at)
            elif isinstance(r, MapReference | DataReference) and r.map in self.absent_maps:
                spliced[at] = _poisoned_map_load(self.map_index[r.map])
                absent.append((starts[at], r.map))
            elif isinstance(r, MapReference | DataReference):
                insns[at] = self._map_ref(insn, r, where)
                used.setdefault(r.map)
            elif isinstance(r, ExternReference | KfuncCall):
                insns[at] = relocate_extern(
                    insn,
                    r,
                    self.externs,
                    kconfig_fd=self._kconfig_fd(r),
                    module_btf_fd=self.modules.fd,
                    fd_array_index=self.fd_array_index,
                    where=where,
                )
                if r.extern in self.externs.kconfig_offsets:
                    used.setdefault(KCONFIG_MAP)
            else:
                result = self.resolver.resolve(r, where=where)
                patched = patch(insn, result, where=where)
                if result.poison:
                    failures.append((starts[at], result.description))
                if len(patched) == 1:
                    insns[at] = patched[0]
                else:
                    spliced[at] = patched
        code = bytearray(fn.encoded())
        original = fn.instructions
        for r in fn.relocations:  # only relocated positions can differ from the object's bytes
            at = r.index
            if insns[at] is not original[at] or at in spliced:
                encoded = b"".join(i.encode() for i in spliced.get(at, (insns[at],)))
                code[8 * starts[at] : 8 * starts[at] + len(encoded)] = encoded
        return _Relocated(bytes(code), tuple(failures), tuple(used), tuple(by_layout), tuple(absent))

    def _map_ref(self, insn: Insn, r: MapReference | DataReference, where: str) -> Insn:
        if not insn.is_ldimm64:
            raise RelocationError(f"{where}: map {r.map!r} referenced by a non-ldimm64 instruction {insn}")
        if r.map not in self.obj.maps:
            raise RelocationError(f"{where}: refers to map {r.map!r}, which the object does not define")
        fd = self.map_fd(r.map)
        if isinstance(r, MapReference):
            return dataclasses.replace(insn, src=PseudoLd.MAP_FD, imm=fd)
        return dataclasses.replace(insn, src=PseudoLd.MAP_VALUE, imm=fd | (r.offset << 32))

    def _kconfig_fd(self, r: ExternReference | KfuncCall) -> int:
        return self.map_fd(KCONFIG_MAP) if r.extern in self.externs.kconfig_offsets else -1

    def function_lines(self, name: str) -> tuple[tuple[int, LineInfo], ...]:
        """Function ``name``'s source lines by slot within it: what a message about one of its instructions quotes."""
        lines = self.fn_lines.get(name)
        if lines is None:
            fn = self.obj.functions[name]
            starts = slot_offsets(fn.instructions)
            lines = self.fn_lines[name] = tuple((starts[i], li) for i, li in fn.line_info)
        return lines

    def _line_records(self, fn: FunctionSpec, base: int) -> bytes:
        """``fn``'s bpf_line_info records with slots counted from ``base``: the object's records, shifted."""
        words = fn.line_words
        if not base or not words:
            return words
        placed = array("I", words)
        placed[0::4] = array("I", map(base.__add__, placed[0::4]))
        return placed.tobytes()


def _libbpf_map_order(obj: ObjectSpec) -> dict[str, int]:
    """Each map's index in libbpf's bpf_object: .maps (and legacy) maps, global data, .kconfig, then struct_ops.

    The poison of a load of an absent map names that index, so it must be libbpf's for the tags to agree.
    """
    struct_ops = [n for n, m in obj.maps.items() if m.type == MapType.STRUCT_OPS]
    data = [n for n, m in obj.maps.items() if m.name == m.section and is_data_section(m.section)]
    user = [n for n in obj.maps if n not in struct_ops and n not in data]
    kconfig = [KCONFIG_MAP] if obj.externs and any(e.kind is ExternKind.KCONFIG for e in obj.externs.values()) else []
    return {name: i for i, name in enumerate([*user, *data, *kconfig, *struct_ops])}


#: libbpf's poison for a load of a map that is not created: ``call 2001000000 + map index``, reported by the
#: verifier as ``invalid func unknown#2001000NNN`` only if the load is reachable.
MAP_POISON_BASE = 2001000000


def _poisoned_map_load(map_index: int) -> tuple[Insn, Insn]:
    """Both slots of a map's ldimm64 turned into calls of a helper that does not exist (as libbpf does)."""
    return (call(MAP_POISON_BASE + map_index), call(MAP_POISON_BASE + map_index))


def _struct_ops_slots(obj: ObjectSpec, vmlinux: Spec | None) -> dict[str, StructOpsSlot]:
    """Each struct_ops program's kernel struct and member index, from the maps that name it."""
    found: dict[str, StructOpsSlot] = {}
    for m in obj.maps.values():
        if m.type != MapType.STRUCT_OPS or not m.program_slots or obj.btf is None or vmlinux is None:
            continue
        local = obj.btf[m.value_type]
        struct_name = getattr(local, "name", "")
        ids = vmlinux.find(struct_name, Kind.STRUCT) if struct_name else []
        if not ids:
            continue  # the map's creation reports the missing kernel struct
        kernel_struct = vmlinux[ids[0]]
        assert isinstance(kernel_struct, Struct)
        members = [mem.name for mem in kernel_struct.members]
        for member, program in m.program_slots:
            if member in members and program not in found:
                found[program] = StructOpsSlot(m.name, ids[0], members.index(member))
    return found


def _uprobe_multi_links() -> bool:
    """Whether the running kernel has uprobe_multi links (usdt programs are loaded for them if so)."""
    from dynbpf._probes import attach as attach_features

    return attach_features.uprobe_multi().supported
