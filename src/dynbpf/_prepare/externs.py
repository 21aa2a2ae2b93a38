"""Resolve an object's externs against the running kernel, and patch the instructions that use them.

Three kinds, as libbpf handles them:

- ``__kconfig`` variables live in a read-only ``.kconfig`` array map the
  loader builds (:mod:`dynbpf._prepare.kconfig`); an instruction reading one
  becomes a map-value load.
- ``__ksym`` variables: with a BTF type, the kernel's VAR of that name (in
  vmlinux or a module's BTF, type-checked as libbpf does), loaded as a
  ``BTF_ID`` pseudo ldimm64; untyped (``const void``), a plain address from
  ``/proc/kallsyms``.
- kfuncs (``__ksym`` functions): the kernel FUNC of that name with a
  compatible prototype; calls become ``KFUNC_CALL``s, module ones through
  the program's ``fd_array``.

Resolution happens once per object and never fails because one extern is
missing: a strong extern the kernel lacks is recorded in
:attr:`ResolvedExterns.failures`, and only the programs that use it fail,
when :func:`relocate_extern` patches their instructions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dynbpf import _section_names as section_names
from dynbpf._asm.insn import Insn
from dynbpf._asm.opcodes import PseudoCall, PseudoLd
from dynbpf._btf import graph
from dynbpf._btf import kernel as kernel_btf
from dynbpf._btf.core_compat import essential_name, types_compatible
from dynbpf._btf.kernel import Found, KernelBtf
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Func, Var
from dynbpf._elf.spec import ExternKind, ExternReference, ExternSpec, KfuncCall, MapSpec, ObjectSpec
from dynbpf._prepare import kconfig
from dynbpf._prepare.kallsyms import Kallsyms, read_kallsyms
from dynbpf._sys.constants import MapFlags, MapType
from dynbpf.errors import DynbpfError, KernelUnsupported, RelocationError

KCONFIG_MAP = section_names.KCONFIG  # the map is named after the section
#: libbpf creates ``.kconfig`` read-only for programs and mmap-able (its value is written before freezing).
KCONFIG_MAP_FLAGS = MapFlags.RDONLY_PROG | MapFlags.MMAPABLE
_FD_ARRAY_MAX = 0x7FFF  # a kfunc call's fd_array index travels in the s16 ``off``


@dataclass(frozen=True, slots=True)
class KsymValue:
    """A ``__ksym`` variable: an address (untyped) or a kernel BTF VAR id (typed; ``module`` None for vmlinux)."""

    resolved: bool
    address: int = 0
    btf_id: int = 0
    module: str | None = None


@dataclass(frozen=True, slots=True)
class KfuncTarget:
    """A kfunc: the kernel FUNC's BTF id, in vmlinux (``module`` None) or a module's BTF."""

    resolved: bool
    btf_id: int = 0
    module: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedExterns:
    """Every extern of an object, resolved once against one kernel.

    ``failures`` names the externs no instruction may use, with why: strong
    ones the kernel lacks, and kconfig values the extern's type cannot hold.
    """

    kconfig_map: MapSpec | None
    kconfig_offsets: Mapping[str, int]
    ksyms: Mapping[str, KsymValue]
    kfuncs: Mapping[str, KfuncTarget]
    failures: Mapping[str, str] = field(default_factory=dict)


def resolve_externs(
    obj: ObjectSpec,
    *,
    config: Mapping[str, str] | None = None,
    kallsyms: Mapping[str, int] | None = None,
    kernel: Sequence[Spec] | None = None,
    modules: Mapping[str, Spec] | None = None,
    linux: Callable[[str], int | None] | None = None,
) -> ResolvedExterns:
    """Resolve ``obj``'s externs as libbpf 1.1 would on this kernel.

    ``config`` (``CONFIG_X`` -> value as the config file spells it) and
    ``kallsyms`` (name -> address) default to the running kernel's, read
    only if an extern needs them. ``kernel`` is the vmlinux BTF to search
    (a one-element sequence; None: the running kernel's). ``modules`` is
    module BTF by name, searched when vmlinux lacks a name; None means the
    running kernel's loaded modules when the vmlinux searched is the running
    kernel's own, and none otherwise (module BTF is split on one vmlinux).
    ``linux`` gives the ``LINUX_*`` kconfig values (None for a name libbpf
    does not provide); None: libbpf's, probed on the running kernel.

    Raises :class:`~dynbpf.errors.RelocationError` only for what libbpf
    refuses at open: a kconfig extern of a type it cannot fill.
    """
    externs = list(obj.externs.values())
    failures: dict[str, str] = {}

    kconfig_map, offsets = None, {}
    kconfig_externs = [e for e in externs if e.kind is ExternKind.KCONFIG]
    if kconfig_externs:
        if obj.btf is None:
            raise RelocationError("kconfig externs need the object's BTF, which it does not have")
        layout = kconfig.layout(obj.btf, kconfig_externs)
        values = kconfig.fill(layout, config, virtual=linux)
        failures.update(values.failures)
        offsets = layout.offsets
        datasec = obj.btf.find(KCONFIG_MAP, Kind.DATASEC)
        kconfig_map = MapSpec(
            name=KCONFIG_MAP,
            type=MapType.ARRAY,
            key_size=4,
            value_size=layout.size,
            max_entries=1,
            flags=int(KCONFIG_MAP_FLAGS),
            value_type=datasec[0] if datasec else 0,
            data=values.data,
            section=KCONFIG_MAP,
        )

    # kernel BTF only when a typed ksym or kfunc needs it: parsing vmlinux's costs a tenth of a second
    needs_btf = any(e.kind is ExternKind.KFUNC or (e.kind is ExternKind.KSYM and e.type_id) for e in externs)
    search = _search_in(kernel, modules) if needs_btf else KernelBtf(None, {})
    ksyms: dict[str, KsymValue] = {}
    kfuncs: dict[str, KfuncTarget] = {}
    untyped = [e for e in externs if e.kind is ExternKind.KSYM and e.type_id == 0]
    if untyped:
        ksyms.update(_resolve_untyped(untyped, kallsyms, failures))
    for ext in externs:
        if ext.kind is ExternKind.KSYM and ext.type_id:
            assert obj.btf is not None  # the reader types externs from BTF
            ksyms[ext.name] = _resolve_typed(obj.btf, ext, search, failures)
        elif ext.kind is ExternKind.KFUNC:
            assert obj.btf is not None
            kfuncs[ext.name] = _resolve_kfunc(obj.btf, ext, search, failures)
    return ResolvedExterns(kconfig_map, offsets, ksyms, kfuncs, failures)


def _resolve_untyped(
    externs: list[ExternSpec], kallsyms: Mapping[str, int] | None, failures: dict[str, str]
) -> dict[str, KsymValue]:
    out: dict[str, KsymValue] = {}
    unreadable = ""
    if kallsyms is None:
        try:
            kallsyms = read_kallsyms()
        except KernelUnsupported as e:
            kallsyms, unreadable = {}, f" ({e.how})"
    for ext in externs:
        found = kallsyms.addresses(ext.name) if isinstance(kallsyms, Kallsyms) else _one(kallsyms, ext.name)
        if len(found) > 1:
            listed = " or ".join(f"{a:#x}" for a in found)
            failures[ext.name] = f"ksym {ext.name!r} is ambiguous: /proc/kallsyms lists it at {listed}"
            out[ext.name] = KsymValue(False)
        elif found:
            out[ext.name] = KsymValue(True, address=found[0])
        else:
            if not ext.weak:
                failures[ext.name] = (
                    f"ksym {ext.name!r} is not in /proc/kallsyms{unreadable} "
                    "(data symbols are listed only with CONFIG_KALLSYMS_ALL)"
                )
            out[ext.name] = KsymValue(False)
    return out


def _one(kallsyms: Mapping[str, int], name: str) -> tuple[int, ...]:
    address = kallsyms.get(name)
    return () if address is None else (address,)


def _resolve_typed(btf: Spec, ext: ExternSpec, search: KernelBtf, failures: dict[str, str]) -> KsymValue:
    found = _find(search, ext, ext.name, Kind.VAR, failures)
    if found is None:
        return KsymValue(False)
    module, spec = found.module, found.spec
    var = spec[found.type_id]
    assert isinstance(var, Var)
    local_id = graph.resolve(btf, ext.type_id)
    target_id = graph.resolve(spec, var.type)
    if not _compatible(btf, local_id, spec, target_id):
        failures[ext.name] = (
            f"ksym {ext.name!r}: the object declares it as {graph.format_type(btf, local_id)!r}, "
            f"but {module or 'vmlinux'} has {graph.format_type(spec, target_id)!r} [{target_id}]"
        )
        return KsymValue(False)
    return KsymValue(True, btf_id=found.type_id, module=module)


def _resolve_kfunc(btf: Spec, ext: ExternSpec, search: KernelBtf, failures: dict[str, str]) -> KfuncTarget:
    found = _find(search, ext, essential_name(ext.name), Kind.FUNC, failures)
    if found is None:
        return KfuncTarget(False)
    module, spec = found.module, found.spec
    func = spec[found.type_id]
    assert isinstance(func, Func)
    if not _compatible(btf, ext.type_id, spec, func.type):
        if not ext.weak:
            failures[ext.name] = (
                f"kfunc {ext.name!r}: the object's prototype {graph.format_type(btf, ext.type_id)!r} is "
                f"incompatible with {module or 'vmlinux'}'s {graph.format_type(spec, func.type)!r}"
            )
        return KfuncTarget(False)
    return KfuncTarget(True, btf_id=found.type_id, module=module)


def _compatible(local: Spec, local_id: int, target: Spec, target_id: int) -> bool:
    try:
        return types_compatible(local, local_id, target, target_id)
    except RelocationError:
        return False  # libbpf's -EINVAL (too deep): not compatible


def _find(search: KernelBtf, ext: ExternSpec, name: str, kind: Kind, failures: dict[str, str]) -> Found | None:
    """The kernel's ``kind`` called ``name`` for extern ``ext``; a strong extern the kernel lacks is a failure."""
    found = search.find(name, (kind,))
    if found is None and not ext.weak:
        why = "" if search.vmlinux is not None else f" (the kernel has no BTF: {kernel_btf.VMLINUX_PATH} is missing)"
        what = "kfunc" if kind == Kind.FUNC else "ksym"
        failures[ext.name] = f"{what} {ext.name!r}: no {kind.name} of that name in kernel BTF{why}"
    return found


def _search_in(kernel: Sequence[Spec] | None, modules: Mapping[str, Spec] | None) -> KernelBtf:
    """:func:`resolve_externs`'s ``kernel`` and ``modules``, as the kernel BTF to search (see there)."""
    if kernel is None:
        return KernelBtf(kernel_btf.vmlinux(), modules)
    if len(kernel) > 1:
        raise ValueError("kernel= takes vmlinux BTF only; pass module BTF by name through modules=")
    return KernelBtf(kernel[0] if kernel else None, modules)


def relocate_extern(
    insn: Insn,
    ref: ExternReference | KfuncCall,
    externs: ResolvedExterns,
    *,
    kconfig_fd: int,
    module_btf_fd: Callable[[str], int],
    fd_array_index: Callable[[str], int],
    where: str,
) -> Insn:
    """The instruction libbpf 1.1 makes of ``insn``, which uses extern ``ref.extern``.

    - kconfig: ``MAP_VALUE`` ldimm64 of the ``.kconfig`` map (``kconfig_fd``) at the extern's offset;
    - typed ksym, or a kfunc's address: ``BTF_ID`` ldimm64, the module's BTF fd in the upper half;
    - untyped ksym, or one that stayed unresolved: a plain ldimm64 of the address (0 if unresolved);
    - kfunc call: ``KFUNC_CALL`` of the FUNC id, ``off`` the ``fd_array`` index of its module (0: vmlinux);
      an unresolved weak kfunc becomes a ``KFUNC_CALL`` with id 0, which the kernel accepts only as
      dead code (libbpf 1.1's encoding; later libbpf writes a poisoned helper call instead).

    ``module_btf_fd(name)`` and ``fd_array_index(name)`` are asked only for
    externs found in module BTF. Raises :class:`~dynbpf.errors.RelocationError`
    (prefixed with ``where``) if the extern failed to resolve or the
    instruction is not what the relocation expects.
    """
    name = ref.extern
    failure = externs.failures.get(name)
    if failure is not None:
        raise RelocationError(f"{where}: {failure}")
    try:
        if isinstance(ref, KfuncCall):
            return _kfunc_call(insn, name, externs, fd_array_index)
        if not insn.is_ldimm64:
            raise RelocationError(f"extern {name!r} is referenced by {insn}, which is not an ldimm64")
        offset = externs.kconfig_offsets.get(name)
        if offset is not None:
            return dataclasses.replace(insn, src=PseudoLd.MAP_VALUE, imm=(kconfig_fd & 0xFFFFFFFF) | (offset << 32))
        target: KsymValue | KfuncTarget | None = externs.ksyms.get(name) or externs.kfuncs.get(name)
        if target is None:
            raise RelocationError(f"extern {name!r} is not one of the object's externs")
        if target.resolved and target.btf_id:
            fd = module_btf_fd(target.module) if target.module is not None else 0
            return dataclasses.replace(insn, src=PseudoLd.BTF_ID, imm=target.btf_id | (fd << 32))
        address = target.address if isinstance(target, KsymValue) else 0
        return dataclasses.replace(insn, imm=address)
    except RelocationError as e:
        raise RelocationError(f"{where}: {e}") from None
    except DynbpfError as e:  # opening a module's BTF
        raise RelocationError(f"{where}: extern {name!r}: {e}") from e


def _kfunc_call(insn: Insn, name: str, externs: ResolvedExterns, fd_array_index: Callable[[str], int]) -> Insn:
    if not insn.is_call:
        raise RelocationError(f"kfunc {name!r} is called by {insn}, which is not a call")
    target = externs.kfuncs.get(name)
    if target is None:
        raise RelocationError(f"extern {name!r} is called but is not a kfunc")
    if not target.resolved:
        return dataclasses.replace(insn, src=PseudoCall.KFUNC_CALL, imm=0, off=0)
    index = fd_array_index(target.module) if target.module is not None else 0
    if not 0 <= index <= _FD_ARRAY_MAX:
        raise RelocationError(f"kfunc {name!r}: fd_array index {index} of module {target.module!r} does not fit")
    return dataclasses.replace(insn, src=PseudoCall.KFUNC_CALL, imm=target.btf_id, off=index)


__all__ = [
    "KCONFIG_MAP",
    "KCONFIG_MAP_FLAGS",
    "KfuncTarget",
    "KsymValue",
    "ResolvedExterns",
    "relocate_extern",
    "resolve_externs",
]
