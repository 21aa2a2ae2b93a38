"""The statically linked agent is what it was designed to be, and the whole-start benchmark still runs.

bench/linked_agent.py stands for deployed agents (many C files joined by
libbpf's static linker, small programs on one BTF tracepoint, tail calls);
these tests keep it that way: the full variant's shape from the plan (no
compiler needed), the small variant as libbpf 1.1 and the kernel see it, and
bench/whole_start.py end to end on small objects. Nothing is timed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
from bench import linked_agent, whole_start
from bench.linked_agent import FULL, SMALL
from bench.prepare_load import Libbpf, libbpf_stats
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from tests.helpers import run_bench
from tests.libbpf_oracle import open_object, prog_tag

SHARED_MAPS = {"events", "auxmap", "syscall_enter_table", "syscall_exit_table", "procs", "settings", "counters"}


def test_full_variant_has_the_shape_of_a_deployed_agent() -> None:
    plan = linked_agent.plan(FULL)
    assert len(plan) >= 200
    assert len({p.name for p in plan}) == len(plan)
    assert sum(p.section == "tp_btf/sys_enter" for p in plan) >= 150
    assert len({p.file for p in plan}) == FULL.files + 1
    roles = Counter(p.role for p in plan)
    assert roles["stage"] == roles["exit"] == FULL.files
    for table in ("enter", "exit"):
        slots = [p.slot for p in plan if p.role == table]
        assert len(slots) == len(set(slots)), f"two {table} handlers share a syscall slot"
        assert all(s is not None and 0 <= s < 512 for s in slots)


def test_every_handler_file_reuses_the_same_static_names_for_different_things() -> None:
    texts = linked_agent.sources(FULL)
    files = [t for name, t in texts.items() if name != "main"]
    assert len(files) == FULL.files
    for text in files:
        for decl in ("static __noinline u64 classify(", "static __noinline int note(", "static u64 hits;"):
            assert decl in text
        assert "extern struct" in text
        assert "extern u64 dropped;" in text
    bodies = {re.search(r"u64 classify\(u64 v\)\n\{\n(.*?)\n\}", t, re.S).group(1) for t in files}  # type: ignore[union-attr]
    assert len(bodies) > 1
    tables = {re.search(r"weights\[\d+\] = \{ (\d+),", t).group(1) for t in files}  # type: ignore[union-attr]
    assert len(tables) == len(files), "each file's static table holds its own data"


def _symbols(path: Path) -> tuple[Counter[tuple[str, str]], set[str]]:
    """(name, kind) of every local symbol, and the programs the .maps relocations name (declared slots)."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        local = Counter(
            (s.name, s["st_info"]["type"]) for s in symtab.iter_symbols() if s["st_info"]["bind"] == "STB_LOCAL"
        )
        rel = elf.get_section_by_name(".rel.maps")
        assert isinstance(rel, RelocationSection)
        slots = {symtab.get_symbol(r["r_info_sym"]).name for r in rel.iter_relocations()}
    return local, slots


@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_small_variant_as_libbpf_opens_it() -> None:
    path = linked_agent.build(SMALL)
    obj = open_object(path)
    plan = linked_agent.plan(SMALL)
    assert {(p.name, p.section) for p in obj.programs} == {(p.name, p.section) for p in plan}
    maps = {m.name: m for m in obj.maps}
    assert SHARED_MAPS | {f"stages_f{f:02d}" for f in range(SMALL.files)} <= set(maps)
    rodata = next(m for m in obj.maps if m.name.endswith(".rodata"))
    assert rodata.value_size >= SMALL.files * SMALL.table_entries * 5 + SMALL.port_entries * 2
    local, slots = _symbols(path)
    for name, kind in (("classify", "STT_FUNC"), ("note", "STT_FUNC"), ("hits", "STT_OBJECT")):
        assert local[(name, kind)] == SMALL.files, f"one static {name} per file survives the link"
    assert slots == {f"f{f:02d}_stage" for f in range(SMALL.files)}


@pytest.mark.kernel
@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_libbpf_and_bpftool_load_every_program_of_the_small_variant() -> None:
    path = linked_agent.build(SMALL)
    names = {p.name for p in linked_agent.plan(SMALL)}
    libbpf = Libbpf()
    with libbpf.object(path) as obj:
        libbpf.load(obj)
        assert {n for n, p in libbpf.programs(obj) if libbpf.lib.bpf_program__fd(p) >= 0} == names
    pins = Path("/sys/fs/bpf") / f"dynbpf-test-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["bpftool", "prog", "loadall", str(path), str(pins)], check=True, capture_output=True)
        assert {p.name for p in pins.iterdir()} == names
    finally:
        shutil.rmtree(pins, ignore_errors=True)


@pytest.mark.kernel
@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_handlers_are_small_programs_for_the_verifier() -> None:
    """Processed instructions (deterministic, unlike time): agents' handlers are 1-8 thousand, not tens."""
    stats = libbpf_stats(linked_agent.build(SMALL))
    handlers = {p.name for p in linked_agent.plan(SMALL) if p.role in ("enter", "exit", "stage")}
    processed = {name: stats[name]["insns"] for name in handlers}
    assert all(1000 <= n <= 8000 for n in processed.values()), processed


@pytest.mark.kernel
@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_dynbpf_loads_the_linked_agent_as_libbpf_does() -> None:
    """Same kernel tags: each file's same-named static helpers stay its own, the declared slots are filled."""
    import dynbpf

    path = linked_agent.build(SMALL)
    libbpf = Libbpf()
    with libbpf.object(path) as obj:
        libbpf.load(obj)
        theirs = {n: prog_tag(libbpf.lib.bpf_program__fd(p)) for n, p in libbpf.programs(obj)}
    with dynbpf.open(path) as coll:
        assert not coll.load(workers=2)
        ours = {name: prog_tag(p.fd) for name, p in coll.programs.items()}
    assert ours == theirs


@pytest.mark.kernel
@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_whole_start_bench_reports_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    stdout = run_bench(
        "--small", "--programs", "9", "--repeat", "1", "--sweep", "9", "--import-repeat", "1", "--json", str(out),
        bench="bench.whole_start",
    )  # fmt: skip
    saved = json.loads(out.read_text())
    measures = Counter((row["measure"].split(" (")[0], row["object"]) for row in saved["table"])
    for name in ("synthetic", "linked"):
        for measure in ("whole start", "whole start, warm prepared cache", "selective start, 10 % of programs"):
            assert measures[(measure, name)] == 1, (measure, name, stdout)
        assert measures[("peak RSS, open + load all", name)] == 1
    assert {"python -c 'import dynbpf'", "time to first event"} <= {m for m, _ in measures}
    for row in saved["table"]:
        if row["goal"]:
            assert row["verdict"] in ("met", "missed", "not available", "error"), row
    # libbpf's side of every whole start ran; both tools delivered their first event.
    for name in ("synthetic", "linked"):
        libbpf = saved["summary"]["objects"][name]["libbpf-full"]
        assert libbpf.get("total", 0) > 0, (name, libbpf)  # an error entry says what libbpf refused
        assert libbpf["cpu"] > 0, "the worker's own CPU time is recorded"
    first = saved["summary"]["first_event"]
    assert first["c"]["event"] > 0
    assert first["python"]["event"] > 0
    assert saved["summary"]["sweep"]["libbpf"][0]["total"] > 0
    assert saved["summary"]["described"]["linked"]["programs"] == len(linked_agent.plan(SMALL))
    assert whole_start.GOALS.keys() == {"synthetic", "linked"}
