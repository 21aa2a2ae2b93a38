"""The examples run end to end on this kernel (smaller objects than their defaults)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def test_seed_agent_loads_unloads_and_reloads_with_events_flowing() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "examples.seed_agent", "--programs", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "FAIL" not in out
    for phase in ("1. start", "2. later", "3. unload", "4. reload", "5. close"):
        assert phase in out
    assert out.count("ok  events flowing") == 4
    assert "maps only they used are freed: file_seen" in out
    assert "ok  every program unloaded and every map freed" in out


def test_feature_agent_switches_features_live_with_variants_chosen_for_this_kernel() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "examples.feature_agent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "FAIL" not in out
    for phase in ("1. start", "2. runtime", "3. resume", "4. constants", "5. files disabled", "6. close"):
        assert phase in out
    assert "exec: exec_" in out  # the decisions are shown
    assert "all checks passed" in out
