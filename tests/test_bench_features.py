"""bench/features.py still runs and reports what it should: a tiny run, its output checked for sense, not speed.

The benchmark is run as its docs say (``python -m bench.features``), so a
renamed API, a generated program the kernel no longer takes, a loss count
that cannot see losses or a report that no longer adds up fail here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from bench import features

from tests.helpers import run_bench
from tests.libbpf_oracle import open_object

MEASURES = (
    "enable from disabled, first after open",
    "enable from disabled, first after open, prepared cache",
    "enable from disabled, again",
    "pause",
    "resume",
)


def test_the_feature_map_has_ten_hooks_each_with_a_raw_and_a_tracepoint_variant() -> None:
    fm = features.feature_map()
    assert list(fm.features) == [features.FEATURE]
    assert fm.features[features.FEATURE].hooks == tuple(features.SYSCALLS)
    for name, hook in fm.hooks.items():
        expected = ["raw", "tp", "btf"] if name == features.SWITCHED else ["raw", "tp"]
        assert [v.name for v in hook.variants] == [f"{family}_{name}" for family in expected]
    for family in features.FAMILIES:
        assert len(features.programs(family)) == 10


@pytest.mark.needs_clang
def test_generated_object_has_every_variant_program() -> None:
    obj = open_object(features.build())
    sections = {p.name: p.section for p in obj.programs}
    for sc in features.SYSCALLS:
        assert sections[f"tp_{sc}"] == f"tracepoint/syscalls/sys_enter_{sc}"
        assert sections[f"raw_{sc}"] == "raw_tp/sys_enter"
    assert sections[f"btf_{features.SWITCHED}"] == "tp_btf/sys_enter"
    assert len(sections) == 2 * len(features.SYSCALLS) + 1
    assert {"events", "procs", "counts", "seen", "features.rodata"} <= {m.name for m in obj.maps}


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_benchmark_reports_every_measure_for_both_variant_families(tmp_path: Path) -> None:
    out = tmp_path / "features.json"
    stdout = run_bench(
        "--repeat", "1", "--switches", "3", "--settle", "0.03", "--json", str(out), bench="bench.features"
    )
    saved = json.loads(out.read_text())
    table = saved["table"]
    seen = Counter((row["measure"], row["variants"]) for row in table)
    for family in features.FAMILIES.values():
        for measure in MEASURES:
            assert seen[(measure, family)] == 1, (measure, family, stdout)
    for row in table:
        if row["goal"] and row["goal"] != "latency reported":
            assert row["verdict"] in ("met", "missed"), row
    for family, f in saved["summary"]["families"].items():
        for key in ("enable_first", "enable_cached", "enable_again", "pause", "resume", "libbpf_total"):
            assert f[key]["median"] > 0, (family, key)
            assert f[key]["min"] <= f[key]["median"] <= f[key]["max"], (family, key)
        for when in ("first", "cached", "again"):
            verify = f[f"enable_{when}_verify"]["median"]
            assert verify > 0
            assert f[f"enable_{when}_goal"] == pytest.approx(verify / features.CORES + features.ENABLE_SLACK_MS)
    samples = saved["raw"]["switch"]["samples"]
    assert [(s["from"], s["to"]) for s in samples] == [("raw", "btf"), ("btf", "tp"), ("tp", "raw")]
    assert all(s["ms"] > 0 for s in samples)
    switch = saved["summary"]["switch"]
    assert switch["sent"] > 0
    assert switch["lost"] == 0, "a make-before-break switch lost events"
    control = saved["summary"]["control"]
    assert 0 < control["lost"] < control["sent"], "the loss count must see the events a pause loses"
    assert "events lost across the switches" in stdout
