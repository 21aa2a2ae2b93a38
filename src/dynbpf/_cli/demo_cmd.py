"""``dynbpf demo``: the bundled application run under the agent for a bounded time, end to end.

What ``./run.sh`` does with no arguments (the README's main job): a
feature-driven application (examples/feature_agent.bpf.c: features
``process``, ``files``, ``network`` counting exec, exit, openat and connect
events into a ``counts`` array and a ring buffer) runs under ``dynbpf
agent`` with a configuration written to a temporary directory, its socket
there too and its pin root a fresh directory on bpffs. A child process
makes the events. In three parts of ``--duration``:

1. the agent starts the application (``process`` enabled, ``files``
   paused, ``network`` disabled);
2. ``files`` and ``network`` are switched on through the control API, as
   ``dynbpf ctl enable`` does, and their events start to count;
3. the agent is restarted with ``keep_on_exit``: the file is updated to
   the switched features, the agent stopped with SIGTERM, a new one
   started; the counts (a pinned map) are read throughout, from the
   map itself while no agent runs.

Then the agent stops, the pin root is removed, and the kernel is asked
that every program, link and map the demo saw is gone. Only the agent's
public interface is used (its configuration, ``dynbpf agent``, the
control API through :mod:`dynbpf._agent.client`), so what the summary says
about the restart, adoption included, is what any client would see:
programs the new agent runs under the ids the old one ran are adopted,
others were loaded anew. Ctrl-C or SIGTERM at any point stops both
processes and removes every pin before the demo exits.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import click

from dynbpf._cli.common import Failure, bad_input, json_option, print_json
from dynbpf.errors import DynbpfError

if TYPE_CHECKING:
    from dynbpf._cli.demo_view import View
    from dynbpf._cli.objects import Found
    from dynbpf._maps.map import Map

APP = "demo"
#: the object's ``enum kind``: the index of each kind of event in its ``counts`` array
KINDS = ("exec", "exit", "open", "connect")
START = {"process": "enabled", "files": "paused", "network": "disabled"}
#: what part 2 switches, and the kind of event that shows it took effect
SWITCHES = (("files", "enabled", "open"), ("network", "enabled", "connect"))
POLL = 0.25  # seconds between samples of the counts (and of the agent's status while one runs)
NO_AGENT = 1.0  # seconds the restart leaves with no agent at all, the pins alone holding the application
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


_STOPS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwind through the cleanup, then exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@click.command()
@click.argument("obj", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--duration",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=1.5),
    metavar="SECONDS",
    help="How long the application runs under the agent: a third before the switch, one after, one after the "
    "restart (starting and stopping the agents adds a few seconds).",
)
@json_option
def demo(obj: str, duration: float, as_json: bool) -> None:
    """Run OBJ (examples/feature_agent.bpf.c) under `dynbpf agent`: switch features, restart the agent, clean up.

    A live status view (features, programs per state, events per second,
    load times) refreshes in place on a terminal and prints plain lines
    when piped (on stderr with -j, whose JSON summary is stdout's only
    output). `./run.sh` with no arguments builds the object and runs this.
    """
    from dynbpf._cli import demo_view

    if os.geteuid() != 0:
        raise Failure("dynbpf demo loads BPF programs and pins them under /sys/fs/bpf: run it as root")
    if not os.path.isfile(obj):
        raise bad_input(f"{obj}: no such file (./run.sh builds examples/feature_agent.bpf.c and passes it)")
    view = demo_view.View(stream=sys.stderr if as_json else sys.stdout, duration=duration)
    run = Demo(os.path.abspath(obj), duration, view)
    interrupted: int | None = None
    previous = {s: signal.signal(s, _interrupt) for s in _STOPS}
    try:
        with view:
            try:
                run.prepare()
                run.main()
            except Interrupted as e:
                interrupted = e.signum
                view.say(f"interrupted ({signal.Signals(e.signum).name}): cleaning up")
            except DynbpfError as e:  # the agent did not start, or refused: the summary says how far it got
                run.failure = run.failure or str(e)
            finally:
                for s in previous:  # a second Ctrl-C must not cut the cleanup short
                    signal.signal(s, signal.SIG_IGN)
                run.cleanup()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    summary = run.summary(interrupted)
    if as_json:
        print_json(summary)
    else:
        demo_view.print_summary(summary)
    if run.failure is not None:
        raise Failure(run.failure)
    if interrupted is not None:
        sys.exit(128 + interrupted)
    if not all(summary["checks"].values()):
        sys.exit(1)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def _deferred() -> Iterator[None]:
    """A SIGINT or SIGTERM inside is raised at its end: a child just started is recorded first, to be stopped.

    Not by blocking the signals: a child inherits the blocked mask, and
    an agent started with SIGTERM blocked could not be stopped.
    """
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in _STOPS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if pending:
        raise Interrupted(pending[0])


# --- the parts -------------------------------------------------------------------------------------


@dataclass(slots=True)
class AgentRun:
    """One ``dynbpf agent`` process of the demo, and what it answered."""

    number: int
    process: subprocess.Popen[bytes]
    spawned: float
    ready_seconds: float | None = None
    exit_status: int | None = None
    status: dict[str, Any] = field(default_factory=dict)  # the application's, when it was ready

    @property
    def pid(self) -> int:
        return self.process.pid

    def to_json(self) -> dict[str, Any]:
        programs = {
            name: {"id": p["id"], "state": p["state"], "verification_ms": p["verification_ms"]}
            for name, p in self.status.get("programs", {}).items()
            if "id" in p
        }
        return {
            "pid": self.pid,
            "ready_seconds": _round(self.ready_seconds),
            "open_seconds": self.status.get("open_seconds"),
            "apply_seconds": self.status.get("apply_seconds"),
            "programs": programs,
            "exit_status": self.exit_status,
        }


@dataclass(slots=True)
class Sample:
    time: float
    counts: dict[str, int]


class Demo:
    """The run: a workspace, the agents, the load, the samples; the summary's facts as they happen."""

    def __init__(self, obj: str, duration: float, view: View) -> None:
        self.obj = obj
        self.duration = duration
        self.view = view
        self.began = time.monotonic()
        self.tmp: str | None = None
        self.pin_root: str | None = None
        self.agents: list[AgentRun] = []
        self.load: subprocess.Popen[bytes] | None = None
        self.load_started = self.load_stopped = 0.0
        self.load_done: dict[str, int] = {}
        self.counts_map: tuple[Found, Map] | None = None
        self.counts_map_ids: list[int] = []
        self.samples: list[Sample] = []
        self.recent: deque[Sample] = deque()
        self.marks: dict[str, dict[str, int]] = {}  # counts at the moments the summary names
        self.switches: list[dict[str, Any]] = []
        self.restart: dict[str, Any] = {}
        self.seen: set[tuple[str, int]] = set()  # (kind, id) of every program, map and link the demo saw
        self.cleaned: dict[str, Any] = {}
        self.phase = "starting"
        self.failure: str | None = None
        self.completed = False

    # --- paths -------------------------------------------------------------------------------------

    @property
    def socket(self) -> str:
        assert self.tmp is not None
        return os.path.join(self.tmp, "agent.sock")

    @property
    def config(self) -> str:
        assert self.tmp is not None
        return os.path.join(self.tmp, "agent.toml")

    @property
    def log(self) -> str:
        assert self.tmp is not None
        return os.path.join(self.tmp, "agent.log")

    def prepare(self) -> None:
        """The workspace and the configuration, checked against the object before anything starts."""
        from dynbpf._agent import config, plan
        from dynbpf._sys import fs

        self.tmp = tempfile.mkdtemp(prefix="dynbpf-demo-")
        fs.ensure_bpffs(fs.DEFAULT_BPFFS, mount_if_missing=True)
        self.pin_root = tempfile.mkdtemp(prefix="dynbpf-demo-", dir=fs.DEFAULT_BPFFS)  # mode 0700: private
        self.write_config(START)
        try:
            plan.check(config.load(self.config), APP)
        except DynbpfError as e:
            where = getattr(e, "where", "")  # a line of the file the demo wrote (and removes): not the user's
            message = str(e).removeprefix(f"{where}: ") if where else str(e)
            what = "examples/feature_agent.bpf.c"
            raise bad_input(f"{self.obj} is not the demo's application ({what}): {message}") from e
        self.view.say(f"workspace {self.tmp} (configuration, socket, agent log); pins under {self.pin_root}")

    def write_config(self, features: dict[str, str]) -> None:
        assert self.pin_root is not None
        q = json.dumps  # a JSON string is a TOML basic string
        lines = [
            "# written by dynbpf demo",
            "[agent]",
            f"socket = {q(self.socket)}",
            "watch_interval = 0  # read at start only: the demo changes features through the API",
            "",
            f"[apps.{APP}]",
            f"object = {q(self.obj)}",
            f"pin_root = {q(self.pin_root)}",
            'map_policies = { counts = "pinned" }  # the counters outlive an agent',
            'events = { events = "struct event" }',
            "keep_on_exit = true  # what runs stays running while the agent restarts",
            "",
            f"[apps.{APP}.features]",
            *(f"{name} = {q(state)}" for name, state in features.items()),
        ]
        with open(self.config + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(self.config + ".tmp", self.config)

    def main(self) -> None:
        part = self.duration / 3
        self.phase = "starting the agent"
        first = self.start_agent()
        self.follow_counts()
        self.start_load()
        self.marks["start"] = self.read_counts()
        self.phase = "running: process enabled, files paused, network disabled"
        self.watch(part)

        self.phase = "switching features live"
        for feature, state, kind in SWITCHES:
            self.switch(feature, state, kind)
        self.phase = "running: files and network switched on"
        self.watch(part)
        for record in self.switches:
            kind = record["kind"]
            record["counted_after"] = self.read_counts()[kind] - record.pop("_at")
            record["took_effect"] = record["counted_before"] == 0 and record["counted_after"] > 0

        self.restart_agent(first)
        self.phase = "running under the new agent"
        self.watch(part)
        self.stop_load()
        self.marks["end"] = self.read_counts()
        self.completed = True

    # --- the agent -------------------------------------------------------------------------------

    def start_agent(self) -> AgentRun:
        with open(self.log, "ab") as log, _deferred():  # a Ctrl-C now would leave an agent nobody stops
            process = subprocess.Popen(
                [sys.executable, "-m", "dynbpf._cli.main", "agent", "--config", self.config],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C reaches the demo only, which stops the agent itself
            )
            run = AgentRun(len(self.agents) + 1, process, time.monotonic())
            self.agents.append(run)
        from dynbpf._agent.client import NoAgentError

        self.view.say(f"agent {run.number}: dynbpf agent --config {self.config}  (pid {run.pid})")
        deadline = run.spawned + READY_TIMEOUT
        while True:  # the counts go on being sampled while the agent starts: a blind window would show
            try:
                self.api_wait(POLL, lambda: process.poll() is None)
                break
            except NoAgentError as e:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.failure = f"agent {run.number} did not start: {e}; its log ends:\n{self.log_tail()}"
                    raise
            if self.counts_map is not None:
                self.tick(status=False, who=f"agent {run.number} starting, pid {run.pid}")
        run.ready_seconds = time.monotonic() - run.spawned
        run.status = self.api("GET", f"/v1/apps/{APP}")
        self.remember(run.status)
        self.view.agent_ready(run.number, run.pid, run.ready_seconds, run.status)
        return run

    def stop_agent(self, run: AgentRun) -> None:
        """SIGTERM, as systemd would; with keep_on_exit the agent pins what runs before it goes."""
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                run.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
        run.exit_status = run.process.returncode

    def restart_agent(self, old: AgentRun) -> None:
        from dynbpf._cli import objects

        assert self.pin_root is not None
        status = self.api("GET", f"/v1/apps/{APP}")
        features = {f: s["state"] for f, s in status["features"].items()}
        before = self.program_ids(status)
        self.remember_links()
        self.write_config(features)
        self.view.say("restart: the configuration now says " + ", ".join(f"{f} {s}" for f, s in features.items()))
        self.phase = "restarting: SIGTERM to the agent (keep_on_exit)"
        self.marks["restart"] = self.read_counts()
        stopping = time.monotonic()
        self.stop_agent(old)
        stopped = time.monotonic()
        pins = objects.pins(self.pin_root)
        self.seen.update((p.kind, p.id) for p in pins)
        held = {kind: sum(p.kind == kind for p in pins) for kind in ("prog", "link", "map")}
        self.view.say(
            f"agent {old.number} exited ({old.exit_status}); no agent runs, the pins hold "
            f"{held['prog']} programs, {held['link']} links, {held['map']} maps"
        )
        self.phase = "no agent running: counting from the pinned map"
        at_exit = self.read_counts()
        self.watch(NO_AGENT, status=False, who="no agent running")
        no_agent = _minus(self.read_counts(), at_exit)
        self.phase = "restarting: a new agent"
        new = self.start_agent()
        ready = time.monotonic()
        self.marks["restarted"] = self.read_counts()
        after = self.program_ids(new.status)
        self.follow_counts()
        adopted = sorted(p for p in before if after.get(p) == before[p])
        anew = sorted(p for p in after if p not in adopted)
        gone_ids = [("prog", i) for p, i in before.items() if p not in adopted]
        _freed, still = objects.gone(cast("list[objects.Ref]", gone_ids), wait=2.0)
        self.restart = {
            "seconds": _round(ready - stopping),
            "stop_seconds": _round(stopped - stopping),
            "no_agent_seconds": _round(new.spawned - stopped),
            "pins_while_stopped": held,
            "programs_before": before,
            "programs_after": after,
            "adopted": adopted,
            "loaded_anew": anew,
            "old_programs_running": len(still),
            "counts_map_kept": len(set(self.counts_map_ids)) == 1,
            "counted_with_no_agent": sum(no_agent.values()),
            "reported": _reported(new.status.get("adoption")),
        }
        self.view.restarted(self.restart)

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- the control API ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 60.0) -> Any:
        """One request, as ``dynbpf ctl`` makes it (:mod:`dynbpf._agent.client`)."""
        import asyncio

        from dynbpf._agent.client import Client

        return asyncio.run(Client(self.socket, timeout=timeout).call(method, path, body))

    def api_wait(self, timeout: float, alive: Callable[[], bool]) -> Any:
        """The agent's status once it answers (``dynbpf ctl --wait``), within ``timeout`` seconds."""
        import asyncio

        from dynbpf._agent.client import Client

        return asyncio.run(Client(self.socket).wait(timeout, alive=alive))

    def switch(self, feature: str, state: str, kind: str) -> None:
        status = self.api("GET", f"/v1/apps/{APP}")
        was = status["features"][feature]["state"]
        ids = self.program_ids(status)
        self.view.say(f"switch: dynbpf ctl --socket {self.socket} {_VERB[state]} {APP} {feature}")
        before = self.read_counts()[kind] - self.marks["start"][kind]
        began = time.monotonic()
        answer = self.api("POST", f"/v1/apps/{APP}/features/{feature}", {"state": state})
        seconds = time.monotonic() - began
        now = self.api("GET", f"/v1/apps/{APP}")
        self.remember(now)
        hooks = now["features"][feature]["hooks"]
        programs = [p for h in hooks for p in now["hooks"][h]["programs"] if "id" in now["programs"][p]]
        counted = self.read_counts()
        record = {
            "feature": feature,
            "from": was,
            "to": now["features"][feature]["state"],
            "seconds": _round(seconds),
            "kind": kind,
            "counted_before": before,
            "counted_after": 0,
            "took_effect": False,
            "programs": {p: {"id": now["programs"][p]["id"], "before": ids.get(p)} for p in programs},
            "decisions": [f"{d['variant']} {d['outcome']}: {d['reason']}" for d in _decisions(answer, hooks)],
            "_at": counted[kind],
        }
        self.switches.append(record)
        self.view.switched(record)

    def program_ids(self, status: dict[str, Any]) -> dict[str, int]:
        return {name: p["id"] for name, p in status["programs"].items() if "id" in p}

    def remember(self, status: dict[str, Any]) -> None:
        self.seen.update(("prog", i) for i in self.program_ids(status).values())

    def remember_links(self) -> None:
        self.seen.update(("link", link["id"]) for link in self.api("GET", f"/v1/apps/{APP}/links"))

    # --- the counts --------------------------------------------------------------------------------

    def follow_counts(self) -> None:
        """Hold the ``counts`` map the agent runs with (by id): it is read directly, agent or not."""
        from dynbpf._cli import objects
        from dynbpf._maps.map import Map

        maps = {m["name"]: m for m in self.api("GET", f"/v1/apps/{APP}/maps")}
        self.seen.update(("map", m["id"]) for m in maps.values() if m.get("id") is not None)
        ident = maps["counts"]["id"]
        self.counts_map_ids.append(ident)
        if self.counts_map is not None and self.counts_map[0].id == ident:
            return
        self.close_counts()
        found = objects.resolve("map", str(ident), "", option="counts")
        self.counts_map = (found, Map.with_kernel_btf(found.fd.raw))

    def close_counts(self) -> None:
        if self.counts_map is not None:
            self.counts_map[0].fd.close()
            self.counts_map = None

    def read_counts(self) -> dict[str, int]:
        assert self.counts_map is not None
        view = self.counts_map[1]
        counts = {kind: int(view[i]) for i, kind in enumerate(KINDS)}
        sample = Sample(time.monotonic(), counts)
        self.samples.append(sample)
        self.recent.append(sample)
        while len(self.recent) > 2 and sample.time - self.recent[0].time > 1.0:
            self.recent.popleft()
        return counts

    def rates(self) -> dict[str, float]:
        if len(self.recent) < 2:
            return dict.fromkeys(KINDS, 0.0)
        first, last = self.recent[0], self.recent[-1]
        seconds = max(last.time - first.time, 1e-3)
        return {k: (last.counts[k] - first.counts[k]) / seconds for k in KINDS}

    def watch(self, seconds: float, *, status: bool = True, who: str = "") -> None:
        """``seconds`` of samples, the view refreshed with each; the agent's status too while it answers."""
        deadline = time.monotonic() + seconds
        while True:
            self.tick(status=status, who=who)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL, left))

    def tick(self, *, status: bool, who: str = "") -> None:
        """One sample of the counts (first: the agent may be slow to answer), then the status, then the view."""
        from dynbpf._cli.demo_view import Frame

        counts = self.read_counts()
        app = self.api("GET", f"/v1/apps/{APP}") if status else None
        if app is not None:
            self.remember(app)
        who = f"agent {self.agents[-1].number}, pid {self.agents[-1].pid}" if status else who
        self.view.show(Frame(time.monotonic() - self.began, self.phase, who, counts, self.rates(), app))

    # --- the load ---------------------------------------------------------------------------------

    def start_load(self) -> None:
        with _deferred():
            self.load = subprocess.Popen(
                [sys.executable, "-m", "dynbpf._cli.demo_load"],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.load_started = time.monotonic()
        self.view.say(f"load: pid {self.load.pid} execs /bin/true, opens /dev/null and connects a UDP socket, steadily")

    def stop_load(self) -> None:
        if self.load is None:
            return
        if self.load.poll() is None:
            self.load.send_signal(signal.SIGTERM)
        try:
            out, _ = self.load.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.load.kill()
            out, _ = self.load.communicate()
        self.load_stopped = time.monotonic()
        try:
            self.load_done = json.loads(out)
        except json.JSONDecodeError:
            self.load_done = {}
        self.load = None

    # --- the end ----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop the load and the agent, remove every pin and the workspace; then ask what the kernel still holds."""
        from dynbpf._cli import objects

        self.stop_load()
        for run in self.agents:
            if run.process.poll() is None:
                try:
                    self.remember(self.api("GET", f"/v1/apps/{APP}", timeout=2.0))
                    self.seen.update(("link", x["id"]) for x in self.api("GET", f"/v1/apps/{APP}/links", timeout=2.0))
                except Exception:  # still starting, or stopping: what it ran shows in the pins below
                    pass
            self.stop_agent(run)
        self.close_counts()
        pins: list[objects.Pin] = []
        if self.pin_root is not None:
            pins = objects.pins(self.pin_root)
            self.seen.update((p.kind, p.id) for p in pins)
            shutil.rmtree(self.pin_root, ignore_errors=True)  # unlinking a pin drops the kernel's hold
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        seen = sorted((kind, ident) for kind, ident in self.seen if kind in ("prog", "map", "link"))
        freed, held = objects.gone(cast("list[objects.Ref]", seen), wait=3.0)
        self.cleaned = {
            "agents_stopped": all(run.process.poll() is not None for run in self.agents),
            "pin_root": self.pin_root,
            "pins_removed": len(pins),
            "pin_root_removed": self.pin_root is None or not os.path.exists(self.pin_root),
            "workspace_removed": self.tmp is None or not os.path.exists(self.tmp),
            "freed": len(freed),
            "left": [{"kind": kind, "id": ident} for kind, ident in held],
        }

    def summary(self, interrupted: int | None) -> dict[str, Any]:
        end = self.marks.get("end") or (self.samples[-1].counts if self.samples else dict.fromkeys(KINDS, 0))
        zero = dict.fromkeys(KINDS, 0)
        restart_at = self.marks.get("restart", end)
        restarted = self.marks.get("restarted", restart_at)
        events = {
            "before_restart": restart_at,
            "during_restart": _minus(restarted, restart_at),
            "after_restart": _minus(end, restarted),
            "total": end,
        }
        if not self.samples:
            events = dict.fromkeys(events, zero)
        cleaned = self.cleaned
        checks = {
            "events_counted": sum(end.values()) > 0,
            "switches_took_effect": bool(self.switches) and all(s["took_effect"] for s in self.switches),
            "agent_restarted": len(self.agents) == 2 and all(a.exit_status == 0 for a in self.agents),
            "programs_adopted": bool(self.restart)
            and bool(self.restart["programs_before"])
            and self.restart["adopted"] == sorted(self.restart["programs_before"]),
            "counting_went_on": bool(self.restart)
            and self.restart["counts_map_kept"]
            and sum(events["during_restart"].values()) > 0
            and sum(events["after_restart"].values()) > 0,
            "cleaned_up": bool(cleaned)
            and cleaned["agents_stopped"]
            and cleaned["pin_root_removed"]
            and cleaned["workspace_removed"]
            and not cleaned["left"],
        }
        return {
            "object": self.obj,
            "app": APP,
            "duration": self.duration,
            "seconds": _round(time.monotonic() - self.began),
            "completed": self.completed,
            "interrupted": None if interrupted is None else signal.Signals(interrupted).name,
            "agents": [a.to_json() for a in self.agents],
            "switches": [{k: v for k, v in s.items() if not k.startswith("_")} for s in self.switches],
            "restart": self.restart or None,
            "events": events,
            "longest_pause_seconds": _round(self.longest_pause()),
            "load": self.load_done or None,
            "cleanup": cleaned,
            "checks": checks,
        }

    def longest_pause(self) -> float | None:
        """The longest time between samples that saw new exec events, while the load ran (a blind window shows)."""
        during = [s for s in self.samples if self.load_started <= s.time <= (self.load_stopped or s.time)]
        times = [b.time for a, b in itertools.pairwise(during) if b.counts["exec"] > a.counts["exec"]]
        if len(times) < 2:
            return None
        return max(b - a for a, b in itertools.pairwise(times))


def _reported(adoption: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the agent itself says it took over (its status's ``adoption``; docs/agent.md), or None."""
    if not adoption:
        return None
    return {
        "programs": list(adoption.get("programs", [])),
        "maps": list(adoption.get("maps", [])),
        "not_adopted": dict(adoption.get("not_adopted", {})),
        "refused": adoption.get("refused"),
    }


def _decisions(answer: dict[str, Any], hooks: list[str]) -> list[dict[str, Any]]:
    """The decisions an apply took for ``hooks`` (those of the feature switched; the others were kept)."""
    return [d for hook, decisions in answer["decisions"].items() if hook in hooks for d in decisions]


_VERB = {"enabled": "enable", "paused": "pause", "disabled": "disable"}


def _minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] - b.get(k, 0) for k in a}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
