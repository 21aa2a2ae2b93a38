"""Attach targets that live in kernel BTF, found once at prepare so a load reads only immutable data.

tp_btf, fentry/fexit/fmod_ret, lsm and iter programs name a kernel
function or tracepoint; the kernel wants the BTF id of a type derived from
that name (libbpf's prefixes below), and for a module's BTF the module BTF
fd as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynbpf._btf.kernel import VMLINUX_PATH, KernelBtf
from dynbpf._btf.kinds import Kind
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
    """True for kinds whose target is a kernel BTF type named in the section.

    Not for freplace (its target is a BPF program), nor for a bare
    ``SEC("fentry")``/``SEC("fexit")``: like libbpf's sections without a
    target, the target comes at load time (``Program.clone(attach_prog_fd=...,
    attach_btf_id=...)``: fentry on a BPF program).
    """
    return kind.attach_btf and kind.prog_type != ProgType.EXT and kind.target is not None


def find_kernel_target(kind: ProgramKind, *, program: str, kernel: KernelBtf | None = None) -> KernelTarget:
    """Look ``kind``'s target up in vmlinux, then in module BTF (or only where the section says).

    ``kernel`` is the BTF searched (default: the running kernel's).
    """
    target = kind.target
    if not isinstance(target, BtfTarget):
        why = kind.error or f"section {kind.section!r} names no kernel attach target"
        raise RelocationError(f"program {program!r}: {why} (the kernel verifies it against that target)")
    attach = kind.expected_attach_type
    prefix, btf_kind = _PREFIXES.get(attach, ("", Kind.FUNC)) if attach is not None else ("", Kind.FUNC)
    name = prefix + target.name
    if kernel is None:
        kernel = KernelBtf.running()
    if target.module in (None, "vmlinux") and kernel.vmlinux is None:
        raise RelocationError(f"program {program!r}: the kernel exposes no BTF ({VMLINUX_PATH}), needed for {name!r}")
    found = kernel.find(name, (btf_kind,), only=target.module)
    if found is not None:
        return KernelTarget(found.type_id, found.module)
    where = "vmlinux" if target.module in (None, "vmlinux") else f"module {target.module!r}"
    also = " or any module" if target.module is None else ""
    raise RelocationError(
        f"program {program!r} (section {kind.section!r}): attach target {name!r} ({btf_kind.name}) "
        f"not found in {where}{also} BTF"
    )
