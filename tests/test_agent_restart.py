"""keep_on_exit across agent restarts, through the real agent process and its socket (issue 16 §3).

The exiting agent pins each application under ``<pin_root>/kept/<app>``
(``close(keep_pinned=True)``); the kernel runs it on with no agent at all;
the next agent adopts it (``dynbpf.open(adopt=...)``): the same kernel
programs, links and maps, no reload. A steady generator of numbered
getpgid calls runs through every restart, and the counts must say that no
event was lost (and, where everything was adopted, none counted twice). A
changed program or a changed constant is not adopted but replaced, make
before break, and the status and the log say so.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dynbpf
from dynbpf._sys import commands
from dynbpf._sys.commands import ObjKind
from tests import kernel_state as ks
from tests.agent_run import Agent, app_config, ready, spawn
from tests.bpfbuild import build
from tests.helpers import numbered_getpgid, patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

LIMIT = 60_000  # seen[] has 65536 slots


class Generator:
    """getpgid(SEQ_BASE + seq) for seq = 0, 1, 2, ... on a thread of this process, until stopped."""

    def __init__(self) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set() and self.sent < LIMIT:
            numbered_getpgid(self.sent)
            self.sent += 1
            self._stop.wait(0.0002)

    def __enter__(self) -> Generator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def write_config(
    path: Path,
    pin_root: str,
    obj: Path,
    *,
    keep: bool,
    features: Mapping[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> None:
    path.write_text(
        f'[agent]\nsocket = "{path.parent}/agent.sock"\nwatch_interval = 0\n\n'
        + app_config(
            "demo",
            obj,
            features=features or {"seq": "enabled"},
            extra=[f'pin_root = "{pin_root}"', f"keep_on_exit = {str(keep).lower()}", *extra],
        )
    )


def start(config: Path) -> Agent:
    log = config.parent / "agent.log"
    process = spawn(config, log)
    socket = str(config.parent / "agent.sock")
    ready(socket, process, log)
    return Agent(process, config, socket, log)


@contextmanager
def running(config: Path) -> Iterator[Agent]:
    agent = start(config)
    try:
        yield agent
    finally:
        if agent.process.poll() is None:
            assert agent.stop() == 0


def programs(agent: Agent) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in agent.call("GET", "/v1/apps/demo/programs")}


def ids(agent: Agent) -> dict[str, int]:
    return {name: p["id"] for name, p in programs(agent).items() if "id" in p}


def entries(agent: Agent, name: str) -> dict[int, int]:
    return {e["key"]: e["value"] for e in agent.call("GET", f"/v1/apps/demo/maps/{name}", limit="10000")["entries"]}


def seen(path: str, count: int) -> list[int]:
    """seen[0..count) of the map pinned at ``path``, read by this process."""
    with commands.obj_get(path) as fd:
        view = dynbpf.Map.with_kernel_btf(fd.raw)
        return [view[i] for i in range(count)]


def pinned_prog_id(path: str) -> int:
    with commands.obj_get(path) as fd:
        return int(commands.prog_info(fd.raw).id)


def pins_under(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


def started(agent: Agent) -> dict[str, Any]:
    return next(e for e in agent.logs()[::-1] if e["msg"] == "application started")


def missed(counts: list[int]) -> str | None:
    """What was lost, if an event was: a seq nobody counted."""
    lost = [seq for seq, n in enumerate(counts) if n == 0]
    return f"{len(lost)} of {len(counts)} events lost, first {lost[:5]}" if lost else None


@dataclass
class Restart:
    before: dict[str, int]  # the first agent's program ids
    second: Agent  # the next agent, running
    sent: int  # the events the generator made, in all
    gone_at: int  # ... when the first agent had exited
    ready_at: int  # ... when the second answered


@contextmanager
def restarted(config: Path, between: Callable[[dict[str, int]], None]) -> Iterator[Restart]:
    """An agent on ``config`` stopped by SIGTERM while the generator runs, ``between(its program ids)`` (which
    rewrites the file), the next agent started: yielded once it has seen 200 more events and the generator
    has stopped; it stops after."""
    first = start(config)
    before = ids(first)
    with Generator() as generator:
        first.wait_for(lambda: generator.sent > 200)
        first.signal(signal.SIGTERM)
        assert first.process.wait(patience(15)) == 0
        gone_at = generator.sent
        between(before)
        with running(config) as second:
            ready_at = generator.sent
            second.wait_for(lambda: generator.sent > ready_at + 200)
            generator.stop()
            yield Restart(before, second, generator.sent, gone_at, ready_at)


def test_a_restart_adopts_what_ran_and_loses_no_event(tmp_path: Path, pin_root: str) -> None:
    """A stops with keep_on_exit while the generator runs; B adopts the same programs and maps (their ids), with
    the features the file says now, and every event is counted exactly once: by A, by nobody's process, by B."""
    config = tmp_path / "agent.toml"
    kept = os.path.join(pin_root, "kept", "demo")
    obj = build("agent_app")
    write_config(config, pin_root, obj, keep=True, features={"seq": "enabled", "ppid": "enabled"})

    def between(before: dict[str, int]) -> None:
        assert set(before) == {"tp_getpgid", "tp_getppid"}
        assert ks.alive(ObjKind.PROG, before.values()) == set(before.values())  # the pins hold them
        assert {"manifest", "progs/tp_getpgid", "links/tp_getpgid/0", "maps/seen"} <= set(pins_under(kept))
        write_config(config, pin_root, obj, keep=True, features={"seq": "enabled", "ppid": "paused"})

    with restarted(config, between) as run:
        status = run.second.status("demo")
        after = programs(run.second)
        by_pid = entries(run.second, "by_pid")
        counts = seen(os.path.join(kept, "maps", "seen"), run.sent)
        logged = started(run.second)
    assert run.ready_at > run.gone_at, "no event fell between the two agents: the test proves nothing"
    adoption = status["adoption"]
    assert adoption["found"] is True
    assert sorted(adoption["programs"]) == ["tp_getpgid", "tp_getppid"]
    assert {"seen", "counters", "by_pid", "events"} <= set(adoption["maps"])
    assert [adoption[k] for k in ("not_adopted", "replaced", "refused", "discarded")] == [{}, [], None, []]
    assert logged["adoption"] == adoption
    assert {name: after[name]["id"] for name in run.before} == run.before  # the same kernel programs: not reloaded
    assert after["tp_getpgid"]["state"] == "attached"
    assert after["tp_getppid"]["state"] == "loaded"  # the file says paused now: detached, still the same program
    assert status["features"]["ppid"]["state"] == "paused"
    assert by_pid[os.getpid()] == run.sent  # each event counted once
    assert not missed(counts), missed(counts)
    assert set(pins_under(kept)) >= {"manifest", "progs/tp_getpgid", "progs/tp_getppid", "links/tp_getpgid/0"}


def test_a_changed_program_is_replaced_not_adopted(tmp_path: Path, pin_root: str) -> None:
    """B's object changed tp_getpgid (its tag differs): B reports it not adopted, loads its own, moves the
    tracepoint link onto it (attached anew before the old link goes: no event lost) and adopts the maps.
    B runs without keep_on_exit: when it stops, nothing is left pinned."""
    config = tmp_path / "agent.toml"
    kept = os.path.join(pin_root, "kept", "demo")
    write_config(config, pin_root, build("agent_app"), keep=True)

    def between(_: dict[str, int]) -> None:
        write_config(config, pin_root, build("agent_app", ("-DVERSION=2",)), keep=False)

    with restarted(config, between) as run:
        status = run.second.status("demo")
        after = programs(run.second)["tp_getpgid"]
        counters = entries(run.second, "counters")
        counts = seen(os.path.join(kept, "maps", "seen"), run.sent)
        warned = [e for e in run.second.logs() if e["msg"] == "pinned program not adopted"]
        shown = run.second.ctl("status", "demo")
    before = run.before["tp_getpgid"]
    adoption = status["adoption"]
    assert "the program changed" in adoption["not_adopted"]["tp_getpgid"]
    assert adoption["replaced"] == ["tp_getpgid"]
    assert adoption["programs"] == []
    assert {"seen", "counters"} <= set(adoption["maps"])  # the maps are the object's still: continued
    assert after["id"] != before
    assert after["state"] == "attached"
    assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [before]))
    assert [(e["program"], e["outcome"].split(":")[0]) for e in warned] == [("tp_getpgid", "replaced")]
    assert "tp_getpgid not adopted: " in shown.stdout
    assert not missed(counts), missed(counts)
    assert counters[3] > counters[0]  # version 2 counts 2 in counters[3] per event: it took over
    assert not os.path.exists(os.path.join(pin_root, "kept"))  # keep_on_exit = false: nothing kept
    assert pins_under(pin_root) == []


def test_a_changed_constant_starts_afresh_and_ends_the_old_application(tmp_path: Path, pin_root: str) -> None:
    """A new value of a constant makes .rodata differ from the pinned one, so nothing is adopted: B opens
    afresh, runs beside A's programs, then discards A's pins. Maps of the pinned policy carry the counts over."""
    config = tmp_path / "agent.toml"
    kept = os.path.join(pin_root, "kept", "demo")
    policies = 'map_policies = { seen = "pinned", counters = "pinned" }'
    obj = build("agent_app")
    write_config(config, pin_root, obj, keep=True, extra=(policies,))

    def between(_: dict[str, int]) -> None:
        write_config(config, pin_root, obj, keep=True, extra=(policies, "constants = { weight = 5 }"))

    with restarted(config, between) as run:
        status = run.second.status("demo")
        after = programs(run.second)["tp_getpgid"]
        counts = seen(os.path.join(pin_root, "seen"), run.sent)
        counters = entries(run.second, "counters")
        warned = [e for e in run.second.logs() if e["msg"].startswith("pinned application not adopted")]
    before = run.before["tp_getpgid"]
    adoption = status["adoption"]
    assert "nothing was adopted" in adoption["refused"]
    assert ".rodata" in adoption["refused"]
    assert adoption["programs"] == []
    assert adoption["maps"] == []
    discarded = {os.path.relpath(p, kept) for p in adoption["discarded"]}
    assert {"progs/tp_getpgid", "links/tp_getpgid/0", "manifest"} <= discarded
    assert [e["reason"] for e in warned] == [adoption["refused"]]
    assert after["id"] != before
    assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [before]))
    assert not missed(counts), missed(counts)
    assert counters[1] > counters[0]  # the new weight counts
    assert "progs/tp_getpgid" in pins_under(kept)  # B kept what it ran, under the same root


def test_without_keep_on_exit_nothing_is_left_pinned(tmp_path: Path, pin_root: str) -> None:
    config = tmp_path / "agent.toml"
    write_config(config, pin_root, build("agent_app"), keep=False, features={"seq": "enabled", "ppid": "paused"})
    with running(config) as agent:
        before = set(ids(agent).values())
        assert agent.status("demo")["adoption"] == {
            "root": os.path.join(pin_root, "kept", "demo"),
            "found": False,
            "object": None,
            "programs": [],
            "maps": [],
            "not_adopted": {},
            "replaced": [],
            "failed": {},
            "refused": None,
            "ignored": {},
            "discarded": [],
            "stale": [],
            "error": None,
        }
    assert pins_under(pin_root) == []
    assert not os.path.exists(os.path.join(pin_root, "kept"))
    assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, before))


def test_a_crashed_agent_is_taken_over_as_it_last_ran(tmp_path: Path, pin_root: str) -> None:
    """With keep_on_exit the agent pins after each change, so a SIGKILL keeps what ran, a feature enabled
    through the API included; the next agent adopts it."""
    config = tmp_path / "agent.toml"
    write_config(config, pin_root, build("agent_app"), keep=True)
    first = start(config)
    first.call("POST", "/v1/apps/demo/features/ppid", {"state": "enabled"})
    before = ids(first)
    assert set(before) == {"tp_getpgid", "tp_getppid"}
    first.signal(signal.SIGKILL)
    assert first.process.wait(patience(15)) == -signal.SIGKILL
    write_config(config, pin_root, build("agent_app"), keep=True, features={"seq": "enabled", "ppid": "enabled"})
    with running(config) as second:
        assert ids(second) == before
        assert sorted(second.status("demo")["adoption"]["programs"]) == ["tp_getpgid", "tp_getppid"]


def test_a_reload_that_opens_the_application_anew_hands_the_kept_root_over(tmp_path: Path, pin_root: str) -> None:
    """A changed object opens the application anew beside the running one (make before break); the new one
    pins under the kept root once the old one has stopped, and the next agent adopts the new programs."""
    config = tmp_path / "agent.toml"
    kept = os.path.join(pin_root, "kept", "demo")
    write_config(config, pin_root, build("agent_app"), keep=True)
    with running(config) as agent:
        old = ids(agent)["tp_getpgid"]
        write_config(config, pin_root, build("agent_app", ("-DVERSION=2",)), keep=True)
        assert agent.call("POST", "/v1/reload")["started"] == ["demo"]
        new = ids(agent)["tp_getpgid"]
        assert new != old
        assert pinned_prog_id(os.path.join(kept, "progs", "tp_getpgid")) == new
        assert agent.status("demo")["adoption"] is None  # opened beside its older self: nothing to take over
    with running(config) as agent:
        assert ids(agent)["tp_getpgid"] == new
        assert agent.status("demo")["adoption"]["programs"] == ["tp_getpgid"]


def test_a_start_that_fails_leaves_what_it_took_over_running(tmp_path: Path, pin_root: str) -> None:
    """B adopts demo, then another application fails to start (a map the kernel refuses): B stops with exit
    status 1 and hands demo back pinned, as it took it over; C adopts the same programs."""
    config = tmp_path / "agent.toml"
    kept = os.path.join(pin_root, "kept", "demo")
    obj = build("agent_app")
    write_config(config, pin_root, obj, keep=True)
    first = start(config)
    before = ids(first)
    assert first.stop() == 0
    write_config(config, pin_root, obj, keep=False)
    broken = app_config(
        "broken", obj, features={"seq": "enabled"}, extra=["map_edits = { seen = { max_entries = 0 } }"]
    )
    config.write_text(config.read_text() + broken)
    log = tmp_path / "failed.log"
    assert spawn(config, log).wait(patience(60)) == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    (taken,) = [e for e in lines if e["msg"] == "application started"]
    assert (taken["app"], taken["adoption"]["programs"]) == ("demo", ["tp_getpgid"])
    assert [(e["app"], e["kept"]) for e in lines if e["msg"] == "application stopped"] == [("demo", True)]
    refusal = next(e for e in lines[::-1] if e["msg"] == "the agent could not start; nothing runs")
    assert "broken" in refusal["error"]
    assert ks.alive(ObjKind.PROG, before.values()) == set(before.values())
    assert pinned_prog_id(os.path.join(kept, "progs", "tp_getpgid")) == before["tp_getpgid"]
    write_config(config, pin_root, obj, keep=False)
    with running(config) as third:
        assert ids(third) == before
    assert pins_under(pin_root) == []
