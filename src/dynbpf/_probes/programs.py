"""Program type and helper probes.

A program type counts as supported if *some* program of that type loads.
libbpf asks one question per type (for TRACING: can a fentry program load?),
which on kernels that forbid trampolines misreports TRACING as unsupported
even though tp_btf and iterator programs load fine; here each attach flavour
is tried against a real kernel target, and the result names the ones that
worked and the ones the kernel refused.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from dynbpf._asm.insn import Insn, call, exit_, return_imm
from dynbpf._btf import Kind
from dynbpf._probes.result import Support, cached
from dynbpf._probes.trial import Trial, kernel_btf_id, load
from dynbpf._sys.constants import ENOTSUPP, HELPER_NAMES, AttachType, ProgFlags, ProgType, type_name


@dataclass(frozen=True)
class Flavour:
    """One way to load a program of a type: expected attach type, BTF target, flags."""

    label: str
    expected_attach_type: AttachType | int = 0
    target: tuple[str, Kind] | None = None  # vmlinux BTF type to attach to
    raw_btf_id: int = 0  # a fixed attach_btf_id (libbpf-style probe) instead of a target
    prog_flags: int = 0
    #: the load is expected to fail with this errno (and log text) when the type exists
    expect_errno: int = 0
    expect_log: str = ""


_DEFAULT = Flavour("plain")

FLAVOURS: dict[ProgType, tuple[Flavour, ...]] = {
    ProgType.CGROUP_SOCK_ADDR: (Flavour("connect4", AttachType.CGROUP_INET4_CONNECT),),
    ProgType.CGROUP_SOCKOPT: (Flavour("getsockopt", AttachType.CGROUP_GETSOCKOPT),),
    ProgType.SK_LOOKUP: (Flavour("sk_lookup", AttachType.SK_LOOKUP),),
    ProgType.LIRC_MODE2: (Flavour("lirc_mode2", AttachType.LIRC_MODE2),),
    ProgType.NETFILTER: (Flavour("netfilter", AttachType.NETFILTER),),
    ProgType.SYSCALL: (Flavour("sleepable", prog_flags=ProgFlags.SLEEPABLE),),
    ProgType.TRACING: (
        Flavour("fentry", AttachType.TRACE_FENTRY, ("bpf_fentry_test1", Kind.FUNC)),
        Flavour("tp_btf", AttachType.TRACE_RAW_TP, ("btf_trace_sched_switch", Kind.TYPEDEF)),
        Flavour("iter", AttachType.TRACE_ITER, ("bpf_iter_task", Kind.FUNC)),
    ),
    ProgType.LSM: (Flavour("lsm", AttachType.LSM_MAC, ("bpf_lsm_file_open", Kind.FUNC)),),
    # freplace needs a BTF-carrying target program; like libbpf, accept the kernel's specific
    # refusal of a kernel-function target as proof that the type exists.
    ProgType.EXT: (
        Flavour("freplace", raw_btf_id=1, expect_errno=errno.EINVAL, expect_log="Cannot replace kernel functions"),
    ),
    # struct_ops programs need a struct_ops map to validate against; ENOTSUPP means "known type,
    # missing target", EINVAL would mean "unknown program type".
    ProgType.STRUCT_OPS: (Flavour("no target", expect_errno=ENOTSUPP),),
}


def _try(
    prog_type: ProgType, flavour: Flavour, insns: list[Insn], *, with_log: bool = False
) -> tuple[Trial | None, str]:
    """Load with ``flavour``; returns the trial (None if not attempted) and a description."""
    btf_id = flavour.raw_btf_id
    target = ""
    if flavour.target is not None:
        found = kernel_btf_id(*flavour.target)
        if found is None:
            return None, f"{flavour.label}: not attempted (no {flavour.target[0]} in kernel BTF)"
        btf_id = found
        target = f" -> {flavour.target[0]}"
    trial = load(
        prog_type,
        insns,
        expected_attach_type=flavour.expected_attach_type,
        attach_btf_id=btf_id,
        prog_flags=flavour.prog_flags,
        with_log=with_log or bool(flavour.expect_log),
    )
    return trial, f"{flavour.label}{target} -> {trial.result}"


def _accepted(flavour: Flavour, trial: Trial) -> bool:
    if flavour.expect_errno:
        return trial.errno == flavour.expect_errno and (not flavour.expect_log or flavour.expect_log in trial.log)
    return trial.ok


@cached
def _loadable_flavour(prog_type: ProgType) -> tuple[Flavour | None, str]:
    """The first flavour of ``prog_type`` that loads for real, and the evidence for all tried."""
    notes = []
    found: Flavour | None = None
    for flavour in FLAVOURS.get(prog_type, (_DEFAULT,)):
        trial, note = _try(prog_type, flavour, return_imm(0))
        if trial is not None:
            with trial:
                if _accepted(flavour, trial):
                    note += " (accepted)" if flavour.expect_errno else ""
                    found = found or flavour
        notes.append(note)
        if found is not None and not flavour.expect_errno:
            break
    return found, "; ".join(notes)


@cached
def prog_type(pt: ProgType) -> Support:
    flavour, notes = _loadable_flavour(pt)
    name = f"program type {type_name(ProgType, pt)}"
    return Support(name, flavour is not None, f"BPF_PROG_LOAD {{r0 = 0; exit}}: {notes}")


_REFUSALS = ("invalid func ", "unknown func ", "program of this type cannot use helper ")


def helper_name(helper_id: int) -> str:
    return f"bpf_{HELPER_NAMES[helper_id]}" if 0 <= helper_id < len(HELPER_NAMES) else f"helper#{helper_id}"


@cached
def helper(pt: ProgType, helper_id: int) -> Support:
    """Can a program of type ``pt`` call helper ``helper_id``?

    The probe program is ``call helper; exit``: the verifier checks the helper
    id and whether the type may use it before it looks at arguments, so any
    rejection other than those two is evidence the helper is available.
    """
    name = f"{helper_name(helper_id)} in {type_name(ProgType, pt)} programs"
    flavour, _ = _loadable_flavour(pt)
    if flavour is None or flavour.expect_errno:
        why = f"not probed: no {type_name(ProgType, pt)} program loads on this kernel without a target"
        return Support(name, False, why)
    trial, note = _try(pt, flavour, [call(helper_id), exit_()], with_log=True)
    assert trial is not None  # the flavour loaded before, so its target exists
    with trial:
        refusal = next((line for line in trial.log.splitlines() if line.startswith(_REFUSALS)), "")
    how = f"BPF_PROG_LOAD {{call {helper_id}; exit}} as {note}"
    if refusal:
        return Support(name, False, f"{how}: verifier: {refusal.strip()}")
    return Support(name, True, how if trial.ok else f"{how}: rejected for another reason, so the helper is known")


def probeable_for_helpers(pt: ProgType) -> bool:
    flavour, _ = _loadable_flavour(pt)
    return flavour is not None and not flavour.expect_errno
