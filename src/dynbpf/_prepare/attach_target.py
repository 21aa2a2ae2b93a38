"""Attach targets that live in kernel BTF, found once at prepare so a load reads only immutable data.

tp_btf, fentry/fexit/fmod_ret, lsm and iter programs name a kernel
function or tracepoint; the kernel wants the BTF id of a type derived from
that name (libbpf's prefixes below), and for a module's BTF the module BTF
fd as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynbpf._btf import kernel
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._elf.sections import BtfTarget, ProgramKind
from dynbpf._sys.constants import AttachType, ProgType
from dynbpf.errors import RelocationError

_PREFIXES: dict[AttachType, tuple[str, Kind]] = {
    AttachType.TRACE_RAW_TP: ("btf_trace_", Kind.TYPEDEF),
    AttachType.LSM_MAC: ("bpf_lsm_", Kind.FUNC),
    AttachType.LSM_CGROUP: ("bpf_lsm_", Kind.FUNC),
    AttachType.TRACE_ITER: ("bpf_iter_", Kind.FUNC),
}


@dataclass(frozen=True, slots=True)
class KernelTarget:
    """The BTF id to load against; ``module`` None for vmlinux."""

    btf_id: int
    module: str | None = None


def needs_kernel_target(kind: ProgramKind) -> bool:
    """True for kinds whose target is a kernel BTF type (not a BPF program: freplace)."""
    return kind.attach_btf and kind.prog_type != ProgType.EXT


def find_kernel_target(
    kind: ProgramKind,
    *,
    program: str,
    vmlinux: Spec | None = None,
    modules: Sequence[str] | None = None,
) -> KernelTarget:
    """Look ``kind``'s target up in vmlinux, then in module BTF (or only where the section says)."""
    target = kind.target
    if not isinstance(target, BtfTarget):
        why = kind.error or f"section {kind.section!r} names no kernel attach target"
        raise RelocationError(f"program {program!r}: {why} (the kernel verifies it against that target)")
    attach = kind.expected_attach_type
    prefix, btf_kind = _PREFIXES.get(attach, ("", Kind.FUNC)) if attach is not None else ("", Kind.FUNC)
    name = prefix + target.name
    if target.module in (None, "vmlinux"):
        base = vmlinux if vmlinux is not None else kernel.vmlinux()
        if base is None:
            raise RelocationError(
                f"program {program!r}: the kernel exposes no BTF (/sys/kernel/btf/vmlinux), needed for {name!r}"
            )
        ids = base.find(name, btf_kind)
        if ids:
            return KernelTarget(ids[0])
    if target.module != "vmlinux":
        for module in modules if modules is not None else _module_candidates(target.module):
            spec = kernel.module(module)
            own = [i for i in spec.find(name, btf_kind) if i >= spec.first_id]
            if own:
                return KernelTarget(own[0], module)
    where = "vmlinux" if target.module in (None, "vmlinux") else f"module {target.module!r}"
    also = " or any module" if target.module is None else ""
    raise RelocationError(
        f"program {program!r} (section {kind.section!r}): attach target {name!r} ({btf_kind.name}) "
        f"not found in {where}{also} BTF"
    )


def _module_candidates(module: str | None) -> list[str]:
    return kernel.module_names() if module is None else [module]
