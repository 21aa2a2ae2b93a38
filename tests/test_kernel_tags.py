"""libbpf as the oracle: every fixture program libbpf 1.1 loads alone, dynbpf loads with the same tag.

The kernel tags a program with a digest of the instructions it was given
(map fds and map value offsets zeroed), so equal tags mean dynbpf sent the
very instructions libbpf sent. Because the tag ignores which map an
instruction names, the normalised listings (maps by name, value offsets
kept) are compared as well. A mismatch shows an instruction diff: that is
what makes it fixable. docs/oracle.md lists what is compared and every
intended difference.

Programs libbpf cannot load on this kernel are listed in `LIBBPF_CANNOT`
with the reason and the evidence libbpf gives; `test_libbpf_loads_alone`
checks the list is exact in both directions, so it cannot rot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from dynbpf._probes import attach as attach_features
from dynbpf._probes.kernel import BPF_FUNC_GET_ATTACH_COOKIE
from dynbpf._probes.programs import helper
from dynbpf._probes.result import Support
from dynbpf._sys.constants import ProgType
from tests.bpfbuild import build, fixture_names
from tests.helpers import EDITS, RING, kallsyms, libbpf_edits, ring_buffer
from tests.libbpf_oracle import (
    LIBBPF_REFUSES,
    LibbpfError,
    LibbpfLoad,
    computed_tag,
    diff,
    libbpf_kernel_refusal,
    listing,
    load_one,
    map_fds,
    map_name,
    missing_kfuncs,
    open_object,
    prog_facts,
    xlated,
)

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

ENOTSUPP = 524  # kernel-internal "not supported", which bpf(2) returns as is

FIXTURE_NAMES = fixture_names()

#: The synthetic 200-program agent object (bench/synth.py) and the programs sampled from it:
#: each residue of the index mod 3 and mod 4 (which maps a program touches), first and last.
SYNTH = "synth200"
SYNTH_SAMPLE = (0, 1, 2, 3, 5, 6, 7, 11, 100, 199)


@dataclass(frozen=True, slots=True)
class Cannot:
    """Why libbpf 1.1 cannot load a program here, and what libbpf says when it tries."""

    reason: str
    error: int
    evidence: str  # a piece of libbpf's messages (the verifier log included)


_UNKNOWN_SECTION = "missing BPF prog type, check ELF section name"


def _elf_programs(path: Path) -> list[str]:
    """Programs as libbpf finds them: global functions in executable sections other than .text."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection), path
        out = []
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if sym["st_info"]["type"] != "STT_FUNC" or sym["st_info"]["bind"] == "STB_LOCAL" or shndx == "SHN_UNDEF":
                continue
            section = elf.get_section(shndx)
            if section.name != ".text" and section["sh_flags"] & 0x4:  # SHF_EXECINSTR
                out.append(sym.name)
        return out


def _kernel_refuses(
    probe: Support, *programs: str, error: int = errno.EPERM, evidence: str = "Operation not permitted"
) -> dict[str, Cannot]:
    """Entries for programs using something the running kernel refuses, decided by ``probe``, not assumed."""
    if probe.supported:
        return {}
    why = f"the running kernel refuses {probe.name} ({probe.how}; docs/probes.md)"
    return {program: Cannot(why, error, evidence) for program in programs}


def _verifier_takes(fixture: str, program: str, refusal: str) -> Support:
    """Whether this kernel's verifier takes ``program`` when dynbpf loads it: unsupported only if it refuses
    it saying ``refusal``; then libbpf's refusal for the same words is the kernel's, whoever loads.

    For kernel regressions no smaller trial reproduced: Debian's 7.3 (rc7) refuses ``maps/on_exit``'s
    ``bpf_map_peek_elem`` on a bloom filter, its value on the stack, "slot poisoned by dead code
    elimination", where every other kernel here takes it (a seven-instruction peek alone loads there).
    """
    import dynbpf

    name = f"the program {fixture}/{program}"
    root = tempfile.mkdtemp(prefix="dynbpf-tags-", dir="/sys/fs/bpf")  # for the fixture's pinned maps
    try:
        with dynbpf.open(build(fixture), pin_root=root) as coll:
            try:
                coll.programs[program].load()
            except dynbpf.VerifierError as e:
                said = refusal in str(e) or refusal in (e.log or "")
                return Support(name, not said, f"dynbpf load -> {e.message or e}")
        return Support(name, True, "dynbpf load -> ok")
    finally:
        shutil.rmtree(root)


def _libbpf_refuses_on_this_kernel(fixture: str) -> dict[str, Cannot]:
    """Entries for every program of ``fixture`` when libbpf 1.1 cannot resolve the object's externs on the
    running kernel (a strong kfunc its BTF lacks, a kernel version uname does not spell): libbpf resolves
    every extern of the object whichever programs it loads, and says EINVAL."""
    evidence = libbpf_kernel_refusal(fixture)
    if evidence is None:
        return {}
    missing = missing_kfuncs(fixture)
    why = (
        f"the running kernel's BTF lacks {missing} (strong __ksym kfuncs must resolve)"
        if missing
        else f"libbpf 1.1 cannot tell LINUX_KERNEL_VERSION from uname release {os.uname().release!r}"
    )
    return {f"{fixture}/{p}": Cannot(why, errno.EINVAL, evidence) for p in _elf_programs(build(fixture))}


#: "fixture/program" -> why libbpf 1.1 cannot load it alone on the test kernel. Exact (see module docstring).
LIBBPF_CANNOT: dict[str, Cannot] = {
    "broken/bad_map_value": Cannot(
        "deliberately out of bounds: the verifier rejects it (verifier-error fixture)",
        errno.EACCES,
        "invalid access to map value",
    ),
    "broken/bad_stack": Cannot(
        "deliberately dereferences an uninitialised stack slot: the verifier rejects it",
        errno.EACCES,
        "invalid mem access 'scalar'",
    ),
    "broken/bad_core": Cannot(
        "deliberately reads a field no kernel has: the CO-RE relocation is poisoned and the verifier rejects it",
        errno.EINVAL,
        "failed to resolve CO-RE relocation",
    ),
    **(
        {}
        if "runqueues" in kallsyms()
        else {
            "externs/runqueue_depth": Cannot(
                "the kernel resolves a typed per-CPU __ksym through kallsyms, which lists data symbols only with "
                "CONFIG_KALLSYMS_ALL (off on this kernel: /proc/kallsyms has no runqueues): refused whoever loads it",
                errno.ENOENT,
                "failed to find the address for kernel symbol 'runqueues'",
            )
        }
    ),
    "features_app/broken_getpgid": Cannot(
        "deliberately writes to a tracepoint's read-only context (a variant the verifier rejects)",
        errno.EACCES,
        "invalid bpf_context access",
    ),
    "lifecycle/refused": Cannot(
        "deliberately reads packet data without a bounds check (parallel-load failure fixture)",
        errno.EACCES,
        "invalid access to packet",
    ),
    "kinds/uprobe_multi_getpp": Cannot(
        "libbpf 1.1 does not know SEC(uprobe.multi) (newer than it)", errno.EINVAL, _UNKNOWN_SECTION
    ),
    "kinds/tcx_ingress": Cannot("libbpf 1.1 does not know SEC(tcx/...) (newer)", errno.EINVAL, _UNKNOWN_SECTION),
    "kinds/tcx_egress": Cannot("libbpf 1.1 does not know SEC(tcx/...) (newer)", errno.EINVAL, _UNKNOWN_SECTION),
    "kinds/netfilter_accept": Cannot(
        "libbpf 1.1 does not know SEC(netfilter) (newer than it)", errno.EINVAL, _UNKNOWN_SECTION
    ),
    "net_attach/judge_skb": Cannot(
        "libbpf 1.1 does not know SEC(sk_skb/verdict) (newer than it)", errno.EINVAL, _UNKNOWN_SECTION
    ),
    "net_attach/tcx_drop": Cannot("libbpf 1.1 does not know SEC(tcx/...) (newer)", errno.EINVAL, _UNKNOWN_SECTION),
    "net_attach/tcx_next": Cannot("libbpf 1.1 does not know SEC(tcx/...) (newer)", errno.EINVAL, _UNKNOWN_SECTION),
    "net_attach/netkit_primary": Cannot(
        "libbpf 1.1 does not know SEC(netkit/...) (newer)", errno.EINVAL, _UNKNOWN_SECTION
    ),
    "net_attach/netkit_peer": Cannot(
        "libbpf 1.1 does not know SEC(netkit/...) (newer)", errno.EINVAL, _UNKNOWN_SECTION
    ),
    **_kernel_refuses(
        attach_features.trampolines(),
        "kinds/fentry_openat2",
        "kinds/fexit_openat2",
        "kinds/fmod_ret_test",
        "kinds/optional_vfs_read",
        "features_app/fexit_getpgid",
        "features_decl/exec_fexit",  # the feature map's preferred variants; this kernel falls back
        "features_decl/open_fexit",
    ),
    **_kernel_refuses(
        attach_features.trampolines(),
        *(f"tracing/{p}" for p in ("trc_fentry_test1", "trc_fexit_test2", "trc_fmod_ret", "trc_fexit_modify")),
        "tracing/trc_fentry_read",
        "tracing/trc_fexit_read",
        "tracing/trc_fmod_ret_deny",
    ),
    **(
        _kernel_refuses(
            attach_features.modify_return(),
            "kinds/fmod_ret_test",
            "tracing/trc_fmod_ret",
            error=errno.EINVAL,
            evidence="bpf_modify_return_test() is not modifiable",
        )
        if attach_features.trampolines().supported
        else {}
    ),
    **_kernel_refuses(
        helper(ProgType.RAW_TRACEPOINT, BPF_FUNC_GET_ATTACH_COOKIE),
        "tracing/trc_raw_tp_cookie",
        "tracing/trc_tp_btf_cookie",
        error=errno.EINVAL,
        evidence="unknown func bpf_get_attach_cookie",
    ),
    **_libbpf_refuses_on_this_kernel("externs"),
    **_libbpf_refuses_on_this_kernel("externs_kconfig"),
    **_kernel_refuses(attach_features.lsm(), "kinds/lsm_file_open", "kinds/lsm_s_committed_creds"),
    **_kernel_refuses(attach_features.lsm(), "tracing/trc_lsm_deny", "tracing/trc_lsm_s_deny"),
    "tracing/trc_kprobe_session": Cannot(
        "libbpf 1.1 does not know SEC(kprobe.session) (newer than it)", errno.EINVAL, _UNKNOWN_SECTION
    ),
    **{
        f"tracing/{name}": Cannot(
            "a bare SEC(fentry)/SEC(fexit) names no target: it is given at load (attach_targets=, clone)",
            errno.EINVAL,
            "no BTF-based attach target is specified",
        )
        for name in ("trc_prog_fentry", "trc_prog_fexit")
    },
    "tracing/trc_replace": Cannot(
        "a freplace program loads only against its target program, given at load (attach_targets=, clone)",
        errno.EINVAL,
        "attach program FD is not set",
    ),
    **_kernel_refuses(attach_features.iterator_target("bpf_map_elem"), "attach/number_lines"),
    **_kernel_refuses(
        _verifier_takes("maps", "on_exit", "slot poisoned by dead code elimination"),
        "maps/on_exit",
        error=errno.EACCES,
        evidence="slot poisoned by dead code elimination",
    ),
    "twofiles/unknown_kind": Cannot(
        "deliberately in a section no convention knows: libbpf opens the object and fails this program",
        errno.EINVAL,
        _UNKNOWN_SECTION,
    ),
    "struct_ops/dyn_link_init": Cannot(
        "libbpf 1.1 does not know SEC(struct_ops.s/...) (sleepable struct_ops, newer than it)",
        errno.EINVAL,
        _UNKNOWN_SECTION,
    ),
    **{
        f"struct_ops/{name}": Cannot(
            "libbpf 1.1 ignores the .struct_ops.link section (newer than it), so the program fills no struct_ops "
            "member, gets no attach BTF id, and the kernel answers ENOTSUPP",
            ENOTSUPP,
            f"prog '{name}': BPF program load failed",
        )
        for name in ("dyn_link_ssthresh", "dyn_link_cong_avoid", "dyn_link_undo_cwnd")
    },
}

#: Programs libbpf must load together with the one compared: libbpf 1.1 fails the whole object load when a
#: prog array's initial slots (``.values = { [i] = &prog }``) name a program it did not load. Their own tags are
#: unaffected; dynbpf loads the compared program alone.
LOAD_TOGETHER: dict[str, tuple[str, ...]] = {
    "tailcalls": ("xdp_stage_parse", "xdp_stage_count", "xdp_stage_drop"),
    "lifecycle": ("stage_drop",),
    "stress": (*(f"sx_xdp_stage{i}" for i in range(4)), "sx_sk_stage0", "sx_sk_stage1"),
    "twofiles": ("second_stage",),
}


@contextlib.contextmanager
def map_edits(fixture: str) -> Iterator[tuple[dict[str, dict[str, object]], dict[str, Any]]]:
    """The map edits a fixture needs before load (sizes it leaves to the loader): libbpf's and dynbpf's."""
    if fixture != "map_edits":
        yield {}, {}
        return
    with ring_buffer(RING) as inner:
        yield libbpf_edits(inner), EDITS


def object_path(fixture: str) -> Path:
    if fixture == SYNTH:
        from bench.synth import build as build_synth

        return build_synth(200)
    return build(fixture)


def _params() -> list[Any]:
    if shutil.which("clang") is None:
        # collected anyway, so the needs_clang marker reports the missing compiler (a failure under CI)
        return [pytest.param(name, "", id=f"{name}/?") for name in FIXTURE_NAMES]
    params = []
    for fixture in FIXTURE_NAMES:
        try:
            names = _elf_programs(build(fixture))
        except Exception as e:  # reported by the test, not as a collection error of the whole module
            params.append(pytest.param(fixture, "", id=f"{fixture}/?"))
            _unbuildable[fixture] = f"{type(e).__name__}: {e}"
            continue
        params += [pytest.param(fixture, p, id=f"{fixture}/{p}") for p in names]
    params += [pytest.param(SYNTH, f"handle_{i}", id=f"{SYNTH}/handle_{i}") for i in SYNTH_SAMPLE]
    return params


_unbuildable: dict[str, str] = {}
PROGRAMS = _params()
COMPARABLE = [
    p
    for p in PROGRAMS
    if p.values[1] and p.values[0] not in LIBBPF_REFUSES and f"{p.values[0]}/{p.values[1]}" not in LIBBPF_CANNOT
]


def _require_program(fixture: str, program: str) -> None:
    assert fixture not in _unbuildable, f"{fixture}.bpf.c does not build: {_unbuildable[fixture]}"
    assert program, "clang is missing"


@pytest.mark.parametrize(("fixture", "program"), PROGRAMS)
def test_libbpf_loads_alone(fixture: str, program: str, no_fd_leak: None) -> None:
    """libbpf loads exactly the programs not listed as impossible, and for the stated reason when not."""
    _require_program(fixture, program)
    key = f"{fixture}/{program}"
    if fixture in LIBBPF_REFUSES:
        with pytest.raises(LibbpfError):
            load_one(object_path(fixture), program)
        return
    with map_edits(fixture) as (edits, _):
        lib = load_one(object_path(fixture), program, also=LOAD_TOGETHER.get(fixture, ()), edits=edits)
    cannot = LIBBPF_CANNOT.get(key)
    if cannot is None:
        assert lib.loaded, f"libbpf cannot load {key}; if that is expected, list it in LIBBPF_CANNOT:\n{lib.why()}"
        assert lib.insns, "libbpf 1.1 no longer had the program's instructions after load"
        # the instructions read back are exactly those the kernel tagged
        assert lib.tag in {computed_tag(lib.insns, "sha256"), computed_tag(lib.insns, "sha1")}, key
        assert lib.xlated
        return
    assert not lib.loaded, f"{key} loads with libbpf: remove it from LIBBPF_CANNOT ({cannot.reason})"
    assert lib.error == cannot.error, f"{key}: expected {errno.errorcode.get(cannot.error, cannot.error)}\n{lib.why()}"
    assert cannot.evidence in "\n".join(lib.log), f"{key}: libbpf failed otherwise than listed:\n{lib.why()}"


@pytest.mark.parametrize("fixture", [n for n in FIXTURE_NAMES if n not in LIBBPF_REFUSES])
def test_programs_are_those_libbpf_finds(fixture: str) -> None:
    """The parameters above come from the symbol table; libbpf must see the same programs."""
    path = build(fixture)
    assert sorted(_elf_programs(path)) == sorted(p.name for p in open_object(path).programs)


def test_cannot_list_names_real_programs() -> None:
    known = {f"{p.values[0]}/{p.values[1]}" for p in PROGRAMS}
    assert set(LIBBPF_CANNOT) <= known, f"stale LIBBPF_CANNOT entries: {sorted(set(LIBBPF_CANNOT) - known)}"
    for fixture, together in LOAD_TOGETHER.items():
        assert {f"{fixture}/{p}" for p in together} <= known


@pytest.mark.parametrize(("fixture", "program"), COMPARABLE)
def test_same_tag_as_libbpf(fixture: str, program: str, pin_root: str, no_fd_leak: None) -> None:
    import dynbpf

    _require_program(fixture, program)
    with map_edits(fixture) as (edits, ours):
        lib = load_one(object_path(fixture), program, also=LOAD_TOGETHER.get(fixture, ()), edits=edits)
    assert lib.loaded, lib.why()
    with dynbpf.open(object_path(fixture), map_edits=ours, pin_root=pin_root) as coll:
        prog = coll.programs[program]
        prog.load()
        our_maps = {fd: map_name(fd) for fd in map_fds(prog.prepared.instructions)}
        problem = mismatch(prog, our_maps, lib)
    assert not problem, problem


def mismatch(prog: Any, our_maps: dict[int, str], lib: LibbpfLoad) -> str:
    """ "" if dynbpf's load equals libbpf's; otherwise what differs, with the instruction diff."""
    ours = prog.prepared.instructions
    insn_diff = diff(ours, our_maps, lib.insns, lib.map_fds)
    facts = prog_facts(prog.fd)
    other_facts = {k: (v, lib.facts[k]) for k, v in facts.items() if v != lib.facts[k]}
    if prog.tag == lib.tag and not insn_diff and not other_facts:
        return ""
    lines = [f"{lib.path.name} {lib.program}: dynbpf tag {prog.tag}, libbpf tag {lib.tag}"]
    if other_facts:
        lines.append("bpf_prog_info differs (dynbpf, libbpf): " + ", ".join(f"{k}={v}" for k, v in other_facts.items()))
    if prog.tag != lib.tag or insn_diff:
        lines += [
            f"dynbpf's instructions hash to {computed_tag(ours)} (sha256), {computed_tag(ours, 'sha1')} (sha1)",
            f"slots: dynbpf {sum(i.slots for i in ours)}, libbpf {sum(i.slots for i in lib.insns)}",
        ]
    if insn_diff:
        lines += ["instructions (- dynbpf, + libbpf; maps by name):", insn_diff]
    elif prog.tag != lib.tag:
        lines += [
            "prepared instructions equal after naming maps; the kernel's translated views:",
            diff(xlated(prog.fd), _ids(our_maps), lib.xlated, lib.map_ids) or "(equal too)",
        ]
    return "\n".join(lines)


def _ids(maps: dict[int, str]) -> dict[int, str]:
    from dynbpf._sys import commands

    return {commands.map_info(fd).id: name for fd, name in maps.items()}


def test_a_mismatch_is_shown_as_an_instruction_diff() -> None:
    """The report a real mismatch would give, from two different programs of one object."""
    import dynbpf

    path = build("globals")
    lib = load_one(path, "xdp_port_gate")
    with dynbpf.open(path) as coll:
        prog = coll.programs["count_writes"]
        prog.load()
        report = mismatch(prog, {fd: map_name(fd) for fd in map_fds(prog.prepared.instructions)}, lib)
        tag = prog.tag
    assert report.startswith(f"globals.bpf.o xdp_port_gate: dynbpf tag {tag}, libbpf tag {lib.tag}\n")
    assert "bpf_prog_info differs (dynbpf, libbpf): type=(5, 6)" in report  # tracepoint vs xdp
    assert "instructions (- dynbpf, + libbpf; maps by name):\n@@ dynbpf slot 0, libbpf slot 0 @@" in report
    assert "+           0  r1 = map[.data]+8 ll" in report


def test_listing_names_maps() -> None:
    """The normalisation the diff relies on: fds and ids become names, value offsets stay."""
    from dynbpf._asm.insn import ld_map_fd, ld_map_value

    insns = [ld_map_fd(1, 7), ld_map_value(2, 9, 16)]
    assert listing(insns, {7: "events", 9: ".bss"}) == [(0, "r1 = map[events] ll"), (2, "r2 = map[.bss]+16 ll")]
    assert diff(insns, {7: "a", 9: "b"}, [ld_map_fd(1, 3), ld_map_value(2, 4, 16)], {3: "a", 4: "b"}) == ""
    shown = diff(insns, {7: "a", 9: "b"}, [ld_map_fd(1, 3), ld_map_value(2, 4, 8)], {3: "a", 4: "b"})
    assert shown.splitlines() == [
        "@@ dynbpf slot 0, libbpf slot 0 @@",
        "      0     0  r1 = map[a] ll",
        "-     2        r2 = map[b]+16 ll",
        "+           2  r2 = map[b]+8 ll",
    ]
