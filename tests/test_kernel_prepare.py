"""dynbpf._prepare on every fixture: instructions final, map fds reserved, dependency sets exact."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

import dynbpf
from dynbpf._asm.insn import R0, mov64_imm
from dynbpf._asm.opcodes import PseudoLd
from dynbpf._btf import Spec, kernel
from dynbpf._btf.types import Int, IntEncoding, Member, Struct
from dynbpf._elf.spec import ObjectSpec
from dynbpf._prepare.linker import link
from dynbpf._prepare.object import KCONFIG_MAP, PreparedObject, prepare
from dynbpf._prepare.prepared import PreparedProgram
from dynbpf.errors import RelocationError, VerifierError
from tests.bpfbuild import build, fixture_names
from tests.helpers import compile_snippet
from tests.libbpf_oracle import missing_kfuncs

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

ALL_FIXTURES = fixture_names()


def numbers() -> Callable[[str], int]:
    """Reserved fd numbers handed out like the runtime does, without creating anything."""
    counter = itertools.count(1000)
    given: dict[str, int] = {}
    return lambda name: given.setdefault(name, next(counter))


def prepared(name: str) -> tuple[ObjectSpec, PreparedObject, Callable[[str], int]]:
    obj = dynbpf.read(build(name))
    fds = numbers()
    return obj, prepare(obj, fds), fds


#: Programs that cannot be prepared on purpose (libbpf cannot load them either).
UNPREPARABLE = {"twofiles": {"unknown_kind"}}


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
def test_every_fixture_prepares_with_map_references_on_reserved_numbers(fixture: str) -> None:
    obj, prep, fds = prepared(fixture)
    with prep:
        unpreparable = UNPREPARABLE.get(fixture, set()) | set(missing_kfuncs(fixture))  # kfuncs: 6.1
        assert set(prep.failed) == unpreparable, {n: str(e) for n, e in prep.failed.items()}
        for program, kfuncs in missing_kfuncs(fixture).items():
            assert kfuncs[0] in str(prep.failed[program])
        assert set(prep.programs) == set(obj.programs) - unpreparable
        for name, p in prep.programs.items():
            expected = set(obj.maps_used(name))
            if any(e in prep.externs.kconfig_offsets for e in obj.externs_used(name)):
                expected.add(KCONFIG_MAP)
            assert set(p.maps) == expected, name
            by_number = {fds(m): m for m in p.maps}
            for insn in p.instructions:
                if insn.is_ldimm64 and insn.src in (PseudoLd.MAP_FD, PseudoLd.MAP_VALUE):
                    assert insn.imm & 0xFFFFFFFF in by_number, f"{name}: {insn} holds no reserved number"
            assert len(p.code) == 8 * sum(i.slots for i in p.instructions)
            assert p.func_info_count == (len(obj.reachable(name)) if prep.btf is not None else 0)
            assert (p.line_info_count > 0) == (prep.btf is not None)
            assert_source_lines_follow_line_info(obj, name, p)


def assert_source_lines_follow_line_info(obj: ObjectSpec, name: str, p: PreparedProgram) -> None:
    """Every slot maps to the nearest line_info at or before it, across subprogram boundaries."""
    linked = link(obj, name)
    flat = [(linked.slots.slot(position), li) for position, li in linked.line_info]
    for slot in range(p.insn_count):
        before = [li for s, li in flat if s <= slot]
        got = p.source_line(slot)
        if not before:
            assert got is None, (name, slot)
        else:
            assert got is not None, (name, slot)
            assert (got.file, got.line, got.text) == (before[-1].file_name, before[-1].line_num, before[-1].line)


def test_prepare_is_deterministic_and_numbers_are_the_only_map_dependency() -> None:
    obj = dynbpf.read(build("maps"))
    first, second = numbers(), numbers()
    with prepare(obj, first) as a, prepare(obj, second) as b:
        for name in obj.programs:
            assert a.programs[name].code == b.programs[name].code
    shifted: dict[str, int] = {}
    with prepare(obj, lambda m: shifted.setdefault(m, 2000 + len(shifted))) as c, prepare(obj, numbers()) as d:
        ours, theirs = c.programs["on_exec"].instructions, d.programs["on_exec"].instructions
        differing = [i for i, (x, y) in enumerate(zip(ours, theirs, strict=True)) if x != y]
        assert differing
        assert all(c.programs["on_exec"].instructions[i].is_ldimm64 for i in differing)


def test_guarded_core_failures_are_recorded_with_the_access_path() -> None:
    _obj, prep, _ = prepared("core_heavy")
    with prep:
        failures = [f for p in prep.programs.values() for f in p.core_failures]
        assert failures, "core_heavy guards relocations this kernel cannot satisfy"
        assert all("struct" in f.description or "enum" in f.description for f in failures)


def test_an_unguarded_core_failure_names_the_access_path() -> None:
    path = compile_snippet(
        """
#include <bpf/bpf_core_read.h>
struct task_struct___dynbpf { int dynbpf_missing_field; } __attribute__((preserve_access_index));
int out;
SEC("raw_tp/sys_enter") int reads_missing(void *ctx)
{
    struct task_struct___dynbpf *t = (void *)bpf_get_current_task();
    out = BPF_CORE_READ(t, dynbpf_missing_field);
    return 0;
}
""",
    )
    with dynbpf.open(path) as coll:
        prog = coll.programs["reads_missing"]
        assert prog.prepared.core_failures
        with pytest.raises(VerifierError) as exc:
            prog.load()
        assert "task_struct___dynbpf.dynbpf_missing_field" in str(exc.value)


def test_core_takes_candidates_from_module_btf_when_vmlinux_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libbpf's bpf_core_find_cands: a type vmlinux lacks is looked for in each module's BTF.

    This kernel has no module BTF, so a stand-in for /sys/kernel/btf holds a
    vmlinux and one module that has the type.
    """
    path = compile_snippet(
        """
#include <bpf/bpf_core_read.h>
struct dynbpf_mod_only { int a; int b; } __attribute__((preserve_access_index));
SEC("socket") int offset_of_b(void *ctx) { return bpf_core_field_offset(struct dynbpf_mod_only, b); }
""",
    )
    obj = dynbpf.read(path)
    base = Spec.from_types([Int("int", 4, IntEncoding.SIGNED, 0, 32)])
    members = (Member("pad", 1, 0), Member("a", 1, 32), Member("b", 1, 64))
    module = Spec.from_types([Struct("dynbpf_mod_only", 12, members)], base=base)
    (tmp_path / "vmlinux").write_bytes(base.encode())
    (tmp_path / "dynbpf_mod").write_bytes(module.encode())
    monkeypatch.setattr(kernel, "BTF_DIR", str(tmp_path))
    monkeypatch.setattr(kernel, "VMLINUX_PATH", str(tmp_path / "vmlinux"))
    kernel.clear_cache()
    try:
        with prepare(obj, numbers()) as prep:
            prog = prep.programs["offset_of_b"]
    finally:
        kernel.clear_cache()
    assert prog.core_failures == ()
    assert (prog.instructions[0].opcode, prog.instructions[0].imm) == (mov64_imm(R0, 0).opcode, 8)


def test_a_missing_attach_target_fails_only_that_program() -> None:
    path = compile_snippet(
        """
SEC("tp_btf/dynbpf_no_such_tracepoint") int ghost(void *ctx) { return 0; }
SEC("raw_tp/sys_enter") int fine(void *ctx) { return 0; }
""",
    )
    with dynbpf.open(path) as coll:
        assert not coll.load(["fine"])
        with pytest.raises(RelocationError, match=r"btf_trace_dynbpf_no_such_tracepoint.*not found"):
            coll.programs["ghost"].load()
