"""CO-RE: fix an object's field offsets, sizes, type ids and enum values for the running kernel.

clang marks every instruction whose constant depends on kernel types with a
``.BTF.ext`` record (root type, access string, kind). :class:`Resolver`
answers each record with a :class:`CoreResult` — the value the instruction
holds and the value it must hold — and :func:`patch` rewrites the
instruction, exactly as libbpf's ``bpf_core_calc_relo_insn`` and
``bpf_core_patch_insn`` do, so a prepared program is byte-identical to what
libbpf would load.

A relocation that cannot be satisfied (a field or enumerator the kernel does
not have) is not an error: the instruction is *poisoned* — replaced by a call
to helper ``0xbad2310`` — so a program that guards the access with
``bpf_core_field_exists()`` still loads (the verifier never reaches the dead
code), and one that does not fails with the verifier's recognisable
``invalid func unknown#195896080``. Errors are kept for what libbpf refuses
outright: malformed records, instructions that do not carry the expected
value, and ambiguity (two kernel candidates giving different answers).

Candidates are found once per local type and, as in libbpf, narrowed to the
ones that matched each relocation resolved so far; resolve an object's
relocations in ``.BTF.ext`` order to reproduce libbpf's choices exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from dynbpf._asm.insn import Insn, s16, s32
from dynbpf._asm.opcodes import Class, JmpOp, Size, Source
from dynbpf._btf import graph
from dynbpf._btf.core_access import ENUMVAL_KINDS, FIELD_KINDS, Access, match, parse, size
from dynbpf._btf.core_candidates import Candidate, CandidateFinder
from dynbpf._btf.core_compat import essential_name, skip, types_compatible, types_match
from dynbpf._btf.errors import TypeNotFound
from dynbpf._btf.ext import CoreReloKind
from dynbpf._btf.kernel import VMLINUX_PATH, KernelBtf
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Array, Enum, Enum64, Int, IntEncoding, Ptr, Struct, Union
from dynbpf.errors import DynbpfError, KernelUnsupported, RelocationError

__all__ = ["POISON_HELPER", "CoreRelocationLike", "CoreResult", "Resolver", "essential_name", "patch", "resolve"]

POISON_HELPER = 0xBAD2310
"""The helper id a poisoned instruction calls ("bad relo"); the verifier reports ``unknown#195896080``."""

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_S16_MAX = 0x7FFF
_BYTES = {Size.B: 1, Size.H: 2, Size.W: 4, Size.DW: 8}
_SIZE_OF = {v: k for k, v in _BYTES.items()}
_KIND_NAMES = {
    CoreReloKind.FIELD_BYTE_OFFSET: "byte_off",
    CoreReloKind.FIELD_BYTE_SIZE: "byte_sz",
    CoreReloKind.FIELD_EXISTS: "field_exists",
    CoreReloKind.FIELD_SIGNED: "signed",
    CoreReloKind.FIELD_LSHIFT_U64: "lshift_u64",
    CoreReloKind.FIELD_RSHIFT_U64: "rshift_u64",
    CoreReloKind.TYPE_ID_LOCAL: "local_type_id",
    CoreReloKind.TYPE_ID_TARGET: "target_type_id",
    CoreReloKind.TYPE_EXISTS: "type_exists",
    CoreReloKind.TYPE_MATCHES: "type_matches",
    CoreReloKind.TYPE_SIZE: "type_size",
    CoreReloKind.ENUMVAL_EXISTS: "enumval_exists",
    CoreReloKind.ENUMVAL_VALUE: "enumval_value",
}


class CoreRelocationLike(Protocol):
    """What a CO-RE record says (``dynbpf._elf.CoreRelocation`` is one)."""

    @property
    def type_id(self) -> int: ...
    @property
    def access(self) -> str: ...
    @property
    def kind(self) -> CoreReloKind: ...


@dataclass(frozen=True, slots=True)
class CoreResult:
    """What to do to one instruction.

    ``orig_value`` is what the compiled instruction must hold (checked only if
    ``validate``: bitfield and type-id values may legitimately differ),
    ``new_value`` what it must hold for this kernel, both as unsigned 64-bit
    numbers. For a field offset used by a load or store, ``orig_size`` and
    ``new_size`` are the memory access sizes in bytes (0 otherwise): when
    they differ the access width changes with the field, unless
    ``unsafe_resize`` (a signed or non-integer field changed size), in which
    case the load or store is poisoned instead.
    """

    poison: bool
    orig_value: int
    new_value: int
    description: str
    validate: bool = True
    orig_size: int = 0
    new_size: int = 0
    unsafe_resize: bool = False


class Resolver:
    """CO-RE for one object against one kernel; thread-safe.

    ``targets`` is the kernel's BTF, vmlinux first, then module BTF (split on
    it), as blobs or as a :class:`~dynbpf._btf.kernel.KernelBtf`; module BTF
    is consulted only for local types vmlinux has no candidate for. The
    default is the running kernel, modules read only when needed. Candidate
    lists are cached per local type, results per distinct record.
    """

    def __init__(self, local: Spec, targets: Sequence[Spec] | KernelBtf | None = None) -> None:
        self.local = local
        self._targets = targets
        self._finder: CandidateFinder | None = None
        self._candidates: dict[int, list[Candidate]] = {}
        self._results: dict[tuple[int, str, CoreReloKind], CoreResult] = {}
        self._lock = threading.Lock()

    def resolve(self, relo: CoreRelocationLike, *, where: str = "") -> CoreResult:
        """The result for ``relo``; ``where`` (program and instruction) prefixes any error."""
        key = (relo.type_id, relo.access, relo.kind)
        with self._lock:
            result = self._results.get(key)
            if result is None:
                try:
                    result = self._resolve(*key)
                except RelocationError as e:
                    if not where:
                        raise
                    raise RelocationError(f"{where}: {e}") from None
                self._results[key] = result
            return result

    def _resolve(self, type_id: int, access_str: str, kind: CoreReloKind) -> CoreResult:
        try:
            kind = CoreReloKind(kind)
            root = self.local[type_id]
        except (ValueError, TypeNotFound) as e:
            raise RelocationError(
                f"bad CO-RE record (type [{type_id}], access {access_str!r}, kind {kind}): {e}"
            ) from None
        try:
            local = parse(self.local, type_id, access_str, kind)
        except RelocationError as e:
            raise RelocationError(f"<{_KIND_NAMES[kind]}> [{type_id}] + {access_str!r}: {e}") from None
        description = describe(local, access_str)
        try:
            return self._calculate(local, root.name if root is not None else "", description)
        except RelocationError as e:
            raise RelocationError(f"{description}: {e}") from None

    def _calculate(self, local: Access, name: str, description: str) -> CoreResult:
        if local.kind == CoreReloKind.TYPE_ID_LOCAL:
            return CoreResult(False, local.root_id, local.root_id, description, validate=False)
        root = self.local[local.root_id]
        if root is None or not name:
            raise RelocationError("libbpf does not relocate anonymous types (no name to find kernel candidates by)")
        candidates = self._candidates.get(local.root_id)
        if candidates is None:
            candidates = self._candidates[local.root_id] = self._find().find(name, root.kind)
        chosen: CoreResult | None = None
        chosen_offset = 0
        matched: list[Candidate] = []
        for cand in candidates:
            target = _match(local, cand)
            if target is None:
                continue
            result = _calc(local, target, description)
            if chosen is None:
                chosen, chosen_offset = result, target.bit_offset
            elif target.bit_offset != chosen_offset:
                raise RelocationError(
                    f"field offset ambiguity: kernel candidates [{cand.type_id}] and [{matched[0].type_id}] "
                    f"put it at bit {target.bit_offset} and bit {chosen_offset}"
                )
            elif result.poison != chosen.poison or result.new_value != chosen.new_value:
                raise RelocationError(
                    f"relocation decision ambiguity: kernel candidates [{cand.type_id}] and "
                    f"[{matched[0].type_id}] give {_verdict(result)} and {_verdict(chosen)}"
                )
            matched.append(cand)
        if chosen is None:
            return _calc(local, None, description)
        self._candidates[local.root_id] = matched
        return chosen

    def _find(self) -> CandidateFinder:
        if self._finder is None:
            targets = self._targets if self._targets is not None else KernelBtf.running()
            if isinstance(targets, KernelBtf):
                self._finder = _candidates_in(targets)
            else:
                if not targets:
                    raise RelocationError("no kernel BTF given to relocate against")
                modules = list(targets[1:])
                self._finder = CandidateFinder(targets[0], lambda: modules)
        return self._finder


def resolve(local: Spec, relo: CoreRelocationLike, targets: Sequence[Spec] | KernelBtf | None = None) -> CoreResult:
    """One relocation on its own (a :class:`Resolver` shares candidate searches across many)."""
    return Resolver(local, targets).resolve(relo)


def _candidates_in(kernel: KernelBtf) -> CandidateFinder:
    """Candidates from ``kernel``'s vmlinux, and from its modules once vmlinux has none."""
    vmlinux = kernel.vmlinux
    if vmlinux is None:
        raise KernelUnsupported("kernel BTF", f"{VMLINUX_PATH} does not exist, so CO-RE cannot relocate")
    return CandidateFinder(vmlinux, lambda: [spec for _, spec in kernel.modules()])


def _match(local: Access, cand: Candidate) -> Access | None:
    """``local`` found in the candidate, or None; type relocations keep an empty path."""
    if local.kind in FIELD_KINDS or local.kind in ENUMVAL_KINDS:
        return match(local, cand.btf, cand.type_id)
    if local.kind == CoreReloKind.TYPE_MATCHES:
        ok = types_match(local.btf, local.root_id, cand.btf, cand.type_id)
    else:
        ok = types_compatible(local.btf, local.root_id, cand.btf, cand.type_id)
    return Access(cand.btf, cand.type_id, local.kind, (), (), 0) if ok else None


@dataclass(frozen=True, slots=True)
class _Field:
    value: int
    mem_size: int = 0
    mem_type_id: int = 0
    validate: bool | None = None  # None: leave as it was


def _calc(local: Access, target: Access | None, description: str) -> CoreResult:
    """``bpf_core_calc_relo``: the local and the kernel value of one relocation."""
    kind = local.kind
    if kind in FIELD_KINDS:
        orig = _field(local)
        if target is None and kind != CoreReloKind.FIELD_EXISTS:
            return CoreResult(True, orig.value, 0, description, validate=orig.validate is not False)
        new = _field(target)
        validate = orig.validate is not False
        unsafe = False
        if orig.mem_size != new.mem_size:
            assert target is not None
            orig_t, new_t = local.btf[orig.mem_type_id], target.btf[new.mem_type_id]
            both_ptr = isinstance(orig_t, Ptr) and isinstance(new_t, Ptr)
            both_unsigned = (  # the whole encoding, as libbpf compares it
                isinstance(orig_t, Int)
                and isinstance(new_t, Int)
                and IntEncoding.SIGNED not in (orig_t.encoding, new_t.encoding)
            )
            unsafe = not (both_ptr or both_unsigned)
        return CoreResult(False, orig.value, new.value, description, validate, orig.mem_size, new.mem_size, unsafe)
    if kind in ENUMVAL_KINDS:
        orig_value = _enumval(local)
        if target is None:
            if kind == CoreReloKind.ENUMVAL_VALUE:
                return CoreResult(True, orig_value, 0, description)
            return CoreResult(False, orig_value, 0, description)
        return CoreResult(False, orig_value, _enumval(target), description)
    validate = kind != CoreReloKind.TYPE_ID_TARGET
    new_value = 0 if target is None else _type_value(target)
    return CoreResult(False, _type_value(local), new_value, description, validate)


def _field(acc: Access | None) -> _Field:
    """``bpf_core_calc_field_relo`` for one side (None: the field is missing, only FIELD_EXISTS gets here)."""
    if acc is None:
        return _Field(0)
    kind = acc.kind
    if kind == CoreReloKind.FIELD_EXISTS:
        return _Field(1)
    btf, last = acc.btf, acc.steps[-1]
    if last.name is None:  # an array element
        if kind == CoreReloKind.FIELD_BYTE_OFFSET:
            return _Field(acc.bit_offset // 8, _element_size(btf, last.type_id), last.type_id, True)
        if kind == CoreReloKind.FIELD_BYTE_SIZE:
            return _Field(size(btf, last.type_id), validate=True)
        raise RelocationError(f"{_KIND_NAMES[kind]} cannot be applied to an array element")

    parent = btf[last.type_id]
    assert isinstance(parent, Struct | Union)
    m = parent.members[last.index]
    field_id, ft = skip(btf, m.type)
    bit_off, bit_sz = acc.bit_offset, m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        if not isinstance(ft, Int | Enum | Enum64) or ft.size == 0:
            raise RelocationError(f"bitfield {m.name!r} is not an integer or enum")
        byte_sz = ft.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise RelocationError(f"bitfield {m.name!r} cannot be read with one 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = size(btf, field_id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8

    validate = not bitfield
    match kind:
        case CoreReloKind.FIELD_BYTE_OFFSET:
            if bitfield:
                return _Field(byte_off & _U32, validate=validate)
            return _Field(byte_off & _U32, _element_size(btf, field_id), field_id, validate)
        case CoreReloKind.FIELD_BYTE_SIZE:
            return _Field(byte_sz & _U32, validate=validate)
        case CoreReloKind.FIELD_SIGNED:
            signed = (isinstance(ft, Enum | Enum64) and ft.signed) or (
                isinstance(ft, Int) and bool(ft.encoding & IntEncoding.SIGNED)
            )
            return _Field(int(signed), validate=True)
        case CoreReloKind.FIELD_LSHIFT_U64:
            return _Field((64 - (bit_off + bit_sz - byte_off * 8)) & _U32, validate=validate)
        case _:  # FIELD_RSHIFT_U64
            return _Field((64 - bit_sz) & _U32, validate=True)


def _element_size(btf: Spec, type_id: int) -> int:
    """Size of what a load of this field reads: for an array, one element (of the innermost array)."""
    type_id, t = skip(btf, type_id)
    for _ in range(graph.MAX_DEPTH):
        if not isinstance(t, Array):
            return size(btf, type_id)
        type_id, t = skip(btf, t.type)
    raise RelocationError(f"arrays nested deeper than {graph.MAX_DEPTH} levels")


def _enumval(acc: Access) -> int:
    if acc.kind == CoreReloKind.ENUMVAL_EXISTS:
        return 1
    step = acc.steps[0]
    t = acc.btf[step.type_id]
    assert isinstance(t, Enum | Enum64)
    value = t.values[step.index].value
    if isinstance(t, Enum):  # libbpf reads a 32-bit enumerator as s32 and widens it
        value &= _U32
        value -= (value & 0x80000000) << 1
    return value & _U64


def _type_value(acc: Access) -> int:
    match acc.kind:
        case CoreReloKind.TYPE_ID_TARGET:
            return acc.root_id
        case CoreReloKind.TYPE_SIZE:
            return size(acc.btf, acc.root_id)
        case _:  # TYPE_EXISTS, TYPE_MATCHES
            return 1


def _verdict(result: CoreResult) -> str:
    return "failure" if result.poison else f"success {result.new_value}"


def describe(acc: Access, access: str) -> str:
    """The relocation as a reader would write it: ``<byte_off> struct task_struct.real_parent (0:71)``."""
    kind_name = f"<{_KIND_NAMES[acc.kind]}>"
    try:
        root = graph.format_type(acc.btf, acc.root_id)
    except DynbpfError:
        root = f"[{acc.root_id}]"
    if acc.kind in ENUMVAL_KINDS:
        return f"{kind_name} {root}::{acc.steps[0].name}"
    if acc.kind in FIELD_KINDS:
        path = ""
        for i, step in enumerate(acc.steps):
            if step.name is not None:
                path += f".{step.name}"
            elif i > 0 or step.index > 0:
                path += f"[{step.index}]"
        return f"{kind_name} {root}{path} ({access})"
    return f"{kind_name} {root}"


def poison() -> Insn:
    """The instruction libbpf puts in place of one it could not relocate."""
    return Insn(Class.JMP | JmpOp.CALL, imm=POISON_HELPER)


def patch(insn: Insn, result: CoreResult, *, where: str) -> tuple[Insn, ...]:
    """``insn`` rewritten for the kernel (``bpf_core_patch_insn``); as many slots as it had.

    The result is a tuple because a poisoned ldimm64 becomes two poison
    calls, one per slot, as libbpf writes it; every other case is one
    instruction. ``where`` (program and instruction) prefixes errors.
    """
    if result.poison:
        return (poison(), poison()) if insn.is_ldimm64 else (poison(),)

    def fail(problem: str) -> RelocationError:
        return RelocationError(f"{where}: {result.description}: {problem}")

    orig, new = result.orig_value, result.new_value
    cls = insn.cls
    if cls in (Class.ALU, Class.ALU64):
        if insn.source != Source.K:
            raise fail(f"expected an ALU instruction with an immediate, found {insn}")
        if result.validate and s32(insn.imm) & _U64 != orig:
            raise fail(f"unexpected instruction value: got {s32(insn.imm)}, expected {orig} -> {new}")
        return (replace(insn, imm=s32(new)),)
    if cls in (Class.LDX, Class.ST, Class.STX):
        if result.validate and s16(insn.off) & _U64 != orig:
            raise fail(f"unexpected offset: got {insn.off}, expected {orig} -> {new}")
        if new > _S16_MAX:
            raise fail(f"offset {new} does not fit a load or store (at most {_S16_MAX})")
        if result.unsafe_resize:
            return (poison(),)
        patched = replace(insn, off=new)
        if result.new_size != result.orig_size:
            width = _BYTES.get(Size(insn.size))
            if width != result.orig_size:
                raise fail(f"unexpected memory access size: got {width}, expected {result.orig_size}")
            new_size = _SIZE_OF.get(result.new_size)
            if new_size is None:
                raise fail(f"field size {result.new_size} cannot be loaded or stored in one instruction")
            patched = replace(patched, opcode=insn.mode | new_size | cls)
        return (patched,)
    if cls == Class.LD:
        if not insn.is_ldimm64 or insn.src != 0 or insn.off != 0:
            raise fail(f"expected a plain 64-bit immediate load, found {insn}")
        if result.validate and insn.imm & _U64 != orig:
            raise fail(f"unexpected instruction value: got {insn.imm & _U64}, expected {orig} -> {new}")
        return (replace(insn, imm=new & _U64),)
    raise fail(f"cannot relocate {insn} (opcode {insn.opcode:#04x})")
