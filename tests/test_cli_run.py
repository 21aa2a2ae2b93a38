"""``dynbpf run`` as a user runs it (the installed command, in its own process): real events from syscalls this
test makes, real histograms, JSON lines of a known shape, and a stop (SIGTERM, Ctrl-C, --duration) that frees
everything and exits 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner

from dynbpf._cli.main import cli
from dynbpf._sys import commands
from tests import kernel_state
from tests.bpfbuild import build
from tests.helpers import assert_schema, patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

DYNBPF = str(Path(sys.executable).parent / "dynbpf")
SRC = str(Path(__file__).resolve().parent.parent / "src")

RECORD = {"seq": int, "pid": int, "syscall": int, "arg": int, "comm": str, "label": str}
STARTED = {"type": str, "object": str, "programs": [{"name": str, "id": int, "links": [str]}]}
EVENT = {"type": str, "map": str, "cpu": (int, type(None)), "record": RECORD}
BUCKET = {"low": int, "high": int, "count": int}
HISTOGRAM = {
    "type": str,
    "map": str,
    "time": str,
    "histograms": [
        {
            "kind": str,
            "unit": str,
            "step": int,
            "base": int,
            "section": (int, str, type(None)),
            "section_name": str,
            "total": int,
            "buckets": [BUCKET],
        }
    ],
}
STOPPED = {"type": str, "reason": str, "seconds": float, "events": {"events": int}, "lost": {}, "undecoded": {}}


class Run:
    """A ``dynbpf run`` in its own process, read line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "80"}  # this tree's dynbpf, as a pipe 80 wide
        self.proc = subprocess.Popen(
            [DYNBPF, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        self.out: IO[str] = self.proc.stdout

    def line(self) -> str:
        line = self.out.readline()
        assert line, self.finish()[1]
        return line

    def finish(self, timeout: float = 60) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=patience(timeout))
        return out, err


@contextlib.contextmanager
def running(*args: str) -> Iterator[Run]:
    run = Run(*args)
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()  # (closes the pipes too)


def syscalls(getpgid: tuple[int, ...] = (), getppid: int = 0) -> None:
    for arg in getpgid:
        with contextlib.suppress(OSError):
            os.getpgid(arg)
    for _ in range(getppid):
        os.getppid()


def freed(started: dict[str, Any]) -> bool:
    ids = {p["id"] for p in started["programs"]}
    return kernel_state.eventually(lambda: not (ids & set(commands.ids(commands.ObjKind.PROG))))


def test_events_and_histograms_stream_as_json_lines_until_sigterm() -> None:
    obj = str(build("cli_tool"))
    args = [obj, "--const", f"target_tgid={os.getpid()}", "--const", "label=cli", "--const", "bias=-1"]
    args += ["--events", "events=event", "--events", "samples=struct event", "--hist", "arg_log2"]
    args += ["--hist", "by_syscall", "--interval", "0.2", "-j"]
    with running(*args) as run:
        started = json.loads(run.line())
        assert_schema(started, STARTED)
        assert started["type"] == "started"
        assert {p["name"]: p["links"] for p in started["programs"]} == {
            "on_getppid": ["tracepoint syscalls/sys_enter_getppid"],
            "on_getpgid": ["tracepoint syscalls/sys_enter_getpgid"],
        }
        syscalls(getpgid=(1, 2, 3, 100), getppid=2)
        events: list[dict[str, Any]] = []
        hists: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30

        def total(name: str) -> int:
            return sum(h["total"] for h in hists[name]["histograms"]) if name in hists else 0

        while len(events) < 6 or total("arg_log2") < 4 or total("by_syscall") < 6:
            assert time.monotonic() < deadline, (events, hists)
            line = json.loads(run.line())
            if line["type"] == "event":
                events.append(line)
            elif line["type"] == "histogram":
                hists[line["map"]] = line
        run.proc.send_signal(signal.SIGTERM)
        out, err = run.finish()
    assert run.proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    stopped = lines[-1]
    assert_schema(stopped, {**STOPPED, "events": {"events": int, "samples": int}, "lost": {"samples": int}})
    assert stopped["reason"] == "SIGTERM"
    events += [line for line in lines if line["type"] == "event"]
    for event in events:
        assert_schema(event, EVENT)
    by_map = {m: [e["record"] for e in events if e["map"] == m] for m in ("events", "samples")}
    assert [(r["syscall"], r["arg"]) for r in by_map["events"]] == [(1, -1), (1, -1)]  # getppid: arg 0, bias -1
    assert sorted(r["arg"] for r in by_map["samples"]) == [0, 1, 2, 99]  # getpgid(1, 2, 3, 100) with bias -1
    assert all(e["cpu"] is not None for e in events if e["map"] == "samples")
    assert {(r["pid"], r["comm"], r["label"]) for r in by_map["events"] + by_map["samples"]} == {
        (os.getpid(), Path("/proc/self/comm").read_text().strip(), "cli")
    }
    for hist in hists.values():
        assert_schema(hist, HISTOGRAM)
    log2 = hists["arg_log2"]["histograms"][0]
    assert {(b["low"], b["count"]) for b in log2["buckets"] if b["count"]} == {(0, 1), (2, 2), (64, 1)}
    sections = {h["section"]: h["total"] for h in hists["by_syscall"]["histograms"]}
    assert sections == {1: 2, 2: 4}
    assert freed(started)


@pytest.fixture
def obj_and_pid() -> tuple[str, int]:
    return str(build("cli_tool")), os.getpid()


def test_events_arrive_in_text_and_duration_stops_with_a_final_histogram(obj_and_pid: tuple[str, int]) -> None:
    obj, pid = obj_and_pid
    args = [obj, "--const", f"target_tgid={pid}", "--events", "samples=event"]
    args += ["--hist", "arg_linear", "--hist-kind", "linear", "--hist-step", "10", "--hist-unit", "arg"]
    with running(*args, "--duration", "3") as run:
        assert run.proc.stderr is not None
        assert run.proc.stderr.readline() == "running cli_tool (Ctrl-C stops it, detaches and frees everything):\n"
        assert run.proc.stderr.readline() == "  on_getppid: tracepoint syscalls/sys_enter_getppid\n"
        assert run.proc.stderr.readline() == "  on_getpgid: tracepoint syscalls/sys_enter_getpgid\n"
        syscalls(getpgid=(5, 25))
        out, err = run.finish()
    assert run.proc.returncode == 0, err
    samples = [line for line in out.splitlines() if line.startswith("samples cpu ")]
    assert len(samples) == 2
    assert "syscall=2 arg=5 comm=" in samples[0]
    assert "label=none" in samples[0]
    final = out.rsplit("arg_linear\n", 1)[1].splitlines()
    assert final[0] == "     arg                 : count    distribution"
    assert final[1].startswith("         0 -> 9          : 1        |")
    assert final[3].startswith("        20 -> 29         : 1        |")
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "stopped (--duration reached)" in err


def test_ctrl_c_stops_it_and_frees_everything(obj_and_pid: tuple[str, int]) -> None:
    obj, pid = obj_and_pid
    with running(obj, "--const", f"target_tgid={pid}", "--events", "events=event", "-j") as run:
        started = json.loads(run.line())
        run.proc.send_signal(signal.SIGINT)
        out, err = run.finish()
    assert run.proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["reason"] == "SIGINT"
    assert freed(started)


def test_records_without_a_type_print_as_hex(obj_and_pid: tuple[str, int]) -> None:
    obj, pid = obj_and_pid
    result = CliRunner().invoke(
        cli, ["run", obj, "--const", f"target_tgid={pid}", "--events", "events", "--duration", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "records of events print as hex: give their type, --events events=TYPE" in result.stderr


def test_features_run_the_variant_this_kernel_takes() -> None:
    obj = str(build("features_decl"))
    result = CliRunner().invoke(cli, ["run", obj, "--features", "process", "--duration", "0", "-j"])
    assert result.exit_code == 0, result.output
    started, stopped = (json.loads(line) for line in result.stdout.splitlines())
    decision = {"hook": str, "variant": str, "outcome": str, "reason": str, "evidence": dict}
    assert_schema(started, {**STARTED, "features": [str], "decisions": {str: [decision]}})
    assert started["features"] == ["process"]
    assert set(started["decisions"]) == {"exec", "exit"}
    chosen = {d["hook"]: d["variant"] for ds in started["decisions"].values() for d in ds if d["outcome"] == "chosen"}
    names = {p["name"] for p in started["programs"]}
    assert set(chosen.values()) <= names | {"tracepoint"}
    assert all(p["links"] for p in started["programs"])
    assert stopped["reason"] == "duration"
    assert freed(started)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "settings"], "map 'settings' is a hash map, not a ring buffer or perf event array"),
        (["--events", "event"], "no map 'event'; did you mean 'events'"),
        (["--events", "events=struct evnt"], "no type 'struct evnt'"),
        (["--hist", "events"], "map 'events' is a ringbuf map, which holds no histogram"),
        (["--features", "process"], "declares no features"),
        (["-p", "on_getppid", "--features", "x", "--feature-map", "{toml}"], "give programs (-p) or features"),
        (["--features", "proces", "--feature-map", "{toml}"], "did you mean 'process'"),
        (["--feature-map", "{toml}"], "name the features to enable with --features"),
        (["--hist", "arg_log2", "--slot", "bucket"], "slot='bucket' names a key field, but the keys are not structs"),
    ],
)
def test_a_wrong_command_line_exits_2_and_loads_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    toml = tmp_path / "tool.features.toml"
    toml.write_text('[features.process]\nhooks = ["ppid"]\n\n[hooks.ppid]\nvariants = ["on_getppid"]\n')
    before = set(kernel_state.kernel_progs_named("on_get"))
    argv = ["run", str(build("cli_tool")), *(a.replace("{toml}", str(toml)) for a in args), "--duration", "0"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert set(kernel_state.kernel_progs_named("on_get")) <= before
