"""``dynbpf demo`` (what ``./run.sh`` runs): the bundled application under a real agent, features switched
through the control API, the agent restarted with keep_on_exit, everything cleaned up; run end to end as a
process, its ``-j`` summary checked against a golden schema and against the kernel. Ctrl-C or SIGTERM at any
point stop the agent and remove the pins."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from examples.feature_agent import build as build_feature_agent

from dynbpf._probes import attach as attach_probes
from dynbpf._sys.commands import ObjKind
from tests import kernel_state as ks
from tests.agent_run import ENV, command
from tests.bpfbuild import build
from tests.helpers import assert_schema, patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

COUNTS = {"exec": int, "exit": int, "open": int, "connect": int}
AGENT = {
    "pid": int,
    "ready_seconds": float,
    "open_seconds": float,
    "apply_seconds": float,
    "programs": {str: {"id": int, "state": str, "verification_ms": float}},
    "exit_status": int,
}
SWITCH = {
    "feature": str,
    "from": str,
    "to": str,
    "seconds": float,
    "kind": str,
    "counted_before": int,
    "counted_after": int,
    "took_effect": bool,
    "programs": {str: {"id": int, "before": (int, type(None))}},
    "decisions": [str],
}
SUMMARY = {
    "object": str,
    "app": str,
    "duration": float,
    "seconds": float,
    "completed": bool,
    "interrupted": type(None),
    "agents": [AGENT],
    "switches": [SWITCH],
    "restart": {
        "seconds": float,
        "stop_seconds": float,
        "no_agent_seconds": float,
        "pins_while_stopped": {"prog": int, "link": int, "map": int},
        "programs_before": {str: int},
        "programs_after": {str: int},
        "adopted": [str],
        "loaded_anew": [str],
        "old_programs_running": int,
        "counts_map_kept": bool,
        "counted_with_no_agent": int,
        "reported": {"programs": [str], "maps": [str], "not_adopted": {str: str}, "refused": type(None)},
    },
    "events": {"before_restart": COUNTS, "during_restart": COUNTS, "after_restart": COUNTS, "total": COUNTS},
    "longest_pause_seconds": float,
    "load": {"pid": int, "exec": int, "open": int, "connect": int},
    "cleanup": {
        "agents_stopped": bool,
        "pin_root": str,
        "pins_removed": int,
        "pin_root_removed": bool,
        "workspace_removed": bool,
        "freed": int,
        "left": [{"kind": str, "id": int}],
    },
    "checks": {
        "events_counted": bool,
        "switches_took_effect": bool,
        "agent_restarted": bool,
        "programs_adopted": bool,
        "counting_went_on": bool,
        "cleaned_up": bool,
    },
}


def demo(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command("demo", str(build_feature_agent()), *args),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _first_variants() -> tuple[str, str]:
    """The exec and openat programs this kernel runs: fexit where trampolines work, else tp_btf and a tracepoint."""
    if attach_probes.trampolines().supported:
        return "exec_fexit", "openat_fexit"
    return "exec_btf", "openat_tp"


def assert_live_view(err: str, exec_prog: str) -> None:
    """What the demo says on stderr when piped: plain lines, with the variants the kernel passed over and why."""
    passed_over = re.findall(r"^  exec runs (\S+) \((.*)\)$", err, re.M)
    if exec_prog == "exec_fexit":
        assert passed_over == []
    else:
        assert passed_over[0][0] == "exec_btf"
        assert passed_over[0][1].startswith("exec_fexit skipped: trampolines refused ("), passed_over
    assert "events/s" in err
    assert "features: process enabled, files paused, network disabled" in err
    assert "\x1b[" not in err


def test_the_demo_runs_end_to_end() -> None:
    run = demo("--duration", "4.5", "-j")
    out, err = run.communicate(timeout=patience(120))
    assert run.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert_schema(summary, SUMMARY)
    assert summary["completed"]
    assert all(summary["checks"].values()), summary["checks"]

    first, second = summary["agents"]
    assert first["exit_status"] == second["exit_status"] == 0
    exec_prog, open_prog = _first_variants()  # fexit on kernels with trampolines: its target is portable
    assert exec_prog in first["programs"], (exec_prog, first["programs"], err[-3000:])
    assert first["programs"][exec_prog]["state"] == "attached"
    assert first["programs"][open_prog]["state"] == "loaded"  # files starts paused
    assert "connect_tp" not in first["programs"]  # network starts disabled: not loaded
    assert {p["state"] for p in second["programs"].values()} == {"attached"}  # the file says what was switched

    files, network = summary["switches"]
    assert (files["feature"], files["from"], files["to"]) == ("files", "paused", "enabled")
    assert files["programs"][open_prog]["id"] == files["programs"][open_prog]["before"]  # resumed: attached
    assert (network["feature"], network["from"], network["to"]) == ("network", "disabled", "enabled")
    assert network["programs"]["connect_tp"]["before"] is None  # loaded at the switch
    for switch in (files, network):
        assert switch["counted_before"] == 0 < switch["counted_after"], switch

    restart = summary["restart"]
    assert restart["pins_while_stopped"]["map"] >= 1  # the counts map, pinned by policy
    assert restart["counted_with_no_agent"] > 0  # what the old agent ran went on running
    assert set(restart["programs_before"]) == set(restart["programs_after"]) == set(second["programs"])
    # adopted: every program the old agent ran runs on under its id, and the agent says so itself
    assert restart["adopted"] == sorted(restart["programs_before"])
    assert restart["loaded_anew"] == []
    assert restart["programs_after"] == restart["programs_before"]
    assert sorted(restart["reported"]["programs"]) == restart["adopted"]
    assert "counts" not in restart["reported"]["maps"]  # pinned by its policy, at the pin root: reused, not adopted
    assert restart["reported"]["not_adopted"] == {}
    assert restart["old_programs_running"] == 0
    assert restart["counts_map_kept"]

    events = summary["events"]
    assert all(sum(events[part].values()) > 0 for part in ("before_restart", "during_restart", "after_restart"))
    for kind, n in events["total"].items():
        parts = events["before_restart"][kind] + events["during_restart"][kind] + events["after_restart"][kind]
        assert parts == n
    assert events["total"]["exec"] >= summary["load"]["exec"] > 0  # every exec of the load counted, and more
    # no blind window: had the programs stopped with the agent, no exec would count for all the time without one
    assert summary["longest_pause_seconds"] < restart["no_agent_seconds"]

    cleanup = summary["cleanup"]
    assert not os.path.exists(cleanup["pin_root"])
    assert cleanup["pins_removed"] >= 1
    assert cleanup["left"] == []
    assert cleanup["freed"] > 0
    ids = {p["id"] for a in summary["agents"] for p in a["programs"].values()}
    assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, ids))
    assert all(gone(a["pid"]) for a in summary["agents"])
    assert gone(summary["load"]["pid"])

    assert_live_view(err, exec_prog)


@pytest.mark.parametrize(
    ("moment", "how"),
    [
        (r"^agent 1 \(pid \d+\) answers", "SIGINT to the process group"),  # a terminal's Ctrl-C, agent 1 running
        (r"; no agent runs, ", "SIGTERM to the demo"),  # between the agents: only the pins hold the programs
    ],
    ids=["ctrl-c-while-running", "sigterm-between-agents"],
)
def test_an_interrupted_demo_cleans_up(moment: str, how: str) -> None:
    run = demo("--duration", "4.5", "-j", start_new_session=True)
    assert run.stderr is not None
    seen = []
    for line in run.stderr:
        seen.append(line)
        if re.search(moment, line):
            break
    else:
        pytest.fail("".join(seen))
    if how.startswith("SIGINT"):
        os.killpg(run.pid, signal.SIGINT)
        expected = signal.SIGINT
    else:
        run.send_signal(signal.SIGTERM)
        expected = signal.SIGTERM
    out, err = run.communicate(timeout=patience(60))
    assert run.returncode == 128 + expected, err
    summary = json.loads(out)
    assert not summary["completed"]
    assert summary["interrupted"] == expected.name
    cleanup = summary["cleanup"]
    assert all(cleanup[k] for k in ("agents_stopped", "pin_root_removed", "workspace_removed")), cleanup
    assert cleanup["left"] == []
    assert not os.path.exists(cleanup["pin_root"])
    assert all(gone(a["pid"]) for a in summary["agents"])
    assert summary["load"] is None or gone(summary["load"]["pid"])
    assert "interrupted" in err


def test_an_object_that_is_not_the_demo_is_refused_before_anything_runs(tmp_path: Path) -> None:
    before = {p for p in os.listdir("/sys/fs/bpf") if p.startswith("dynbpf-demo-")}
    done = subprocess.run(
        command("demo", str(build("features_decl")), "--duration", "3"),  # features process and files only
        env={**ENV, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=patience(60),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "is not the demo's application (examples/feature_agent.bpf.c)" in done.stderr
    assert "apps.demo.features.network: features_decl has no feature 'network'" in done.stderr
    assert "agent.toml" not in done.stderr  # the file the demo wrote and removed is no help
    assert {p for p in os.listdir("/sys/fs/bpf") if p.startswith("dynbpf-demo-")} == before
    assert not os.listdir(tmp_path)


def test_the_demo_needs_root(tmp_path: Path) -> None:
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command("demo", "x.bpf.o")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=patience(60),
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "run it as root" in done.stderr
