"""The prepare/serial-load benchmark still runs: a few programs, both sides, nothing timed.

bench/prepare_load.py is run as a user would run it (a subprocess per
scenario), so these tests catch a renamed API, a generator the kernel no
longer verifies, or a report that no longer adds up.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from bench import runtime_load, synth_agent
from bench.prepare_load import parse_stats

from tests.helpers import run_bench
from tests.libbpf_oracle import open_object

FAMILIES = {"file", "exit", "cred", "rawproc", "btfproc", "exec", "net", "sock", "str"}
SECTION_KINDS = {"tracepoint", "raw_tp", "tp_btf"}


def test_parse_stats_reads_the_verifiers_closing_lines() -> None:
    log = (
        "verification time 10507 usec\nstack depth 0+312+0\n"
        "processed 8384 insns (limit 1000000) max_states_per_insn 4 total_states 610 peak_states 610 mark_read 58\n"
    )
    assert parse_stats(log) == {"usec": 10507, "insns": 8384}
    assert parse_stats("") == {}


def test_any_prefix_of_the_plan_mixes_families() -> None:
    plan = synth_agent.plan(len(FAMILIES))
    assert {hook.family for _, hook in plan} == FAMILIES
    names = [name for name, _ in synth_agent.plan(450)]
    assert len(set(names)) == 450, "program names must be unique even when hooks repeat"


@pytest.mark.needs_clang
def test_generated_object_has_the_planned_programs_and_maps() -> None:
    n = len(FAMILIES)
    obj = open_object(synth_agent.build(n))
    assert [p.name for p in obj.programs] == [name for name, _ in synth_agent.plan(n)]
    assert {p.section.split("/")[0] for p in obj.programs} == SECTION_KINDS
    maps = {m.name for m in obj.maps}
    assert {"events", "procs", "settings", "scratch", "pending", "policy", "file_seen", "net_peers"} <= maps
    assert {"agent.rodata", "agent.bss"} <= maps


def _row(out: str, label: str) -> list[float]:
    for line in out.splitlines():
        if line.startswith(label):
            return [float(x) for x in re.findall(r"\d+\.\d+", line[len(label) :])]
    raise AssertionError(f"no row {label!r} in:\n{out}")


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_benchmark_runs_both_sides_on_a_small_object() -> None:
    n = len(FAMILIES)
    out = run_bench("--programs", str(n), "--repeat", "1", "--runs", "2", "--verifier-stats")
    assert "FAILED" not in out, out
    for label in (
        "dynbpf read + prepare (no maps)",
        "dynbpf.open (+ map creation)",
        "libbpf open + load, no programs",
        "dynbpf open + load all, serial",
        "libbpf open + bpf_object__load, all",
        "ratio dynbpf serial load / libbpf load",
    ):
        assert min(_row(out, label)[:2]) > 0, label
    for side in ("libbpf", "dynbpf"):
        assert f"verifier, {side}: {n} programs" in out
    # Every program reached the verifier's closing statistics on both sides.
    assert out.count("verification time (us): min") == 2


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_both_sides_give_the_verifier_the_same_real_work() -> None:
    """Same processed-instruction count per program: the two loaders' programs verify alike."""
    from bench.prepare_load import dynbpf_stats, libbpf_stats

    path = synth_agent.build(len(FAMILIES))
    theirs = libbpf_stats(path)
    ours = dynbpf_stats(path)
    assert len(theirs) == len(FAMILIES)
    cheap = {name: s for name, s in theirs.items() if s.get("insns", 0) < 2000}
    assert not cheap, f"programs the verifier barely walks (a generator change made them trivial): {cheap}"
    assert {n: s["insns"] for n, s in ours.items()} == {n: s["insns"] for n, s in theirs.items()}


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_runtime_load_bench_runs_every_scenario(tmp_path: Path) -> None:
    """bench/runtime_load.py end to end on a small object: every scenario, the goals, the saved results."""
    out = tmp_path / "results.json"
    stdout = run_bench("--programs", "9", "--repeat", "1", "--json", str(out), bench="bench.runtime_load")
    assert "full parallel load >= 1.8x libbpf" in stdout
    assert "selective 10 % <= 0.15x libbpf full" in stdout
    saved = json.loads(out.read_text())
    assert set(saved["summary"]) == set(runtime_load.scenarios())
    later = saved["summary"]["dynbpf-later"]
    assert later["load_one"] > 0
    assert later["reload_one"] > 0


def test_import_time_bench_reports_every_row_and_the_goal() -> None:
    """bench/import_time.py in both bytecode states, one process per cell; nothing timed."""
    out = run_bench("--runs", "1", bench="bench.import_time")
    rows = {label: _row(out, label) for label in ("bare interpreter", "import dynbpf", "dynbpf.open ready")}
    assert len(rows["bare interpreter"]) == 2, out  # a median per bytecode state
    for label in ("import dynbpf", "dynbpf.open ready"):
        assert len(rows[label]) == 4, out  # median and difference to bare, per bytecode state
        assert min(rows[label][::2]) > 0, label
        assert re.search(rf"^{re.escape(label)} .* \d+/\d+$", out, re.M), out  # modules added
    assert "goal: import dynbpf <= bare interpreter + 60 ms:" in out
