"""The agent on a real object, driven through its socket: status, features switched live (checked in the
kernel and by the events counted), constants, program reloads, map reads, event streams, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from dynbpf._sys.commands import ObjKind
from tests import kernel_state as ks
from tests.agent_run import ENV, Agent, app_config, spawn, start_agent
from tests.bpfbuild import build
from tests.helpers import numbered_getpgid, patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def config_text(**features: str) -> str:
    extra = ["constants = { weight = 3 }", 'events = { events = "struct event" }']
    return app_config("demo", build("agent_app"), features=features or {"seq": "enabled"}, extra=extra)


def counters(agent: Agent) -> list[int]:
    return [e["value"] for e in agent.call("GET", "/v1/apps/demo/maps/counters")["entries"]]


def programs(agent: Agent) -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in agent.call("GET", "/v1/apps/demo/programs")}


def test_status_lists_and_map_reads_describe_what_runs(tmp_path: Path) -> None:
    with start_agent(tmp_path, config_text(seq="enabled", ppid="paused")) as agent:
        status = agent.status()
        assert status["agent"]["pid"] == agent.process.pid
        app = status["apps"]["demo"]
        assert {f: s["state"] for f, s in app["features"].items()} == {"seq": "enabled", "ppid": "paused"}
        assert app["hooks"]["getpgid"] == app["hooks"]["getpgid"] | {"state": "enabled", "variant": "tp_getpgid"}
        assert app["hooks"]["getppid"]["state"] == "paused"
        assert app["constants"] == {"weight": 3}
        progs = programs(agent)
        assert progs["tp_getpgid"]["state"] == "attached"
        assert progs["tp_getppid"]["state"] == "loaded"
        assert progs["raw_getpgid"]["state"] == "not loaded"
        ids = {progs[p]["id"] for p in ("tp_getpgid", "tp_getppid")}
        assert ks.alive(ObjKind.PROG, ids) == ids  # the ids the API gives are the kernel's
        (link,) = agent.call("GET", "/v1/apps/demo/links")
        assert link["program"] == "tp_getpgid"
        assert link["program_id"] == progs["tp_getpgid"]["id"]
        assert link["id"] in ks.kernel_link_ids()
        maps = {m["name"]: m for m in agent.call("GET", "/v1/apps/demo/maps")}
        assert maps["seen"]["type"] == "array"
        assert maps["by_pid"]["exists"]
        assert maps["by_pid"]["id"] in ks.kernel_map_ids()
        assert maps["events"]["exists"]  # a ring buffer, which has no map view: listed as the kernel has it
        assert maps["events"]["id"] in ks.kernel_map_ids()
        for seq in range(5):
            numbered_getpgid(seq)
        assert counters(agent)[:2] == [5, 15]  # five events, weight 3 each
        by_pid = agent.call("GET", "/v1/apps/demo/maps/by_pid")
        assert by_pid["entries"] == [{"key": os.getpid(), "value": 5}]
        seen = agent.call("GET", "/v1/apps/demo/maps/seen", limit="3")
        assert [e["value"] for e in seen["entries"]] == [1, 1, 1]
        assert seen["truncated"]
        table = agent.ctl("programs", "demo")
        assert table.returncode == 0
        assert "tp_getpgid" in table.stdout
        assert "attached" in table.stdout
        as_json = agent.ctl("-j", "status")
        assert json.loads(as_json.stdout)["apps"]["demo"]["hooks"]["getpgid"]["variant"] == "tp_getpgid"


def test_enable_pause_disable_change_what_is_attached_in_the_kernel(tmp_path: Path) -> None:
    with start_agent(tmp_path, config_text(seq="enabled", ppid="disabled")) as agent:
        first = programs(agent)["tp_getpgid"]["id"]
        (link,) = agent.call("GET", "/v1/apps/demo/links")
        numbered_getpgid(0)
        paused = agent.ctl("pause", "demo", "seq")
        assert paused.returncode == 0, paused.stderr
        assert link["id"] not in ks.kernel_link_ids()  # detached in the kernel ...
        assert ks.alive(ObjKind.PROG, [first]) == {first}  # ... still loaded
        numbered_getpgid(1)  # not counted while paused
        assert counters(agent)[0] == 1
        answer = agent.call("POST", "/v1/apps/demo/features/seq", {"state": "enabled"})
        assert answer["features"] == {"seq": "enabled"}
        assert programs(agent)["tp_getpgid"]["id"] == first  # resumed: the same program, attached again
        numbered_getpgid(2)
        assert counters(agent)[0] == 2
        agent.call("POST", "/v1/apps/demo/features", {"features": {"seq": "disabled", "ppid": "enabled"}})
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [first]))  # unloaded
        assert programs(agent)["tp_getppid"]["state"] == "attached"
        numbered_getpgid(3)
        os.getppid()
        values = counters(agent)
        assert values[0] == 2
        assert values[2] >= 1
        unknown = agent.refused("POST", "/v1/apps/demo/features/sq", {"state": "enabled"})
        assert unknown.status == 404
        assert "did you mean 'seq'" in str(unknown)
        bad = agent.refused("POST", "/v1/apps/demo/features/seq", {"state": "on"})
        assert bad.status == 400
        assert "'on' is not a feature state" in str(bad)
        assert agent.refused("GET", "/v1/apps/nope").status == 404


def test_constants_and_program_reloads_are_made_before_the_old_ones_break(tmp_path: Path) -> None:
    with start_agent(tmp_path, config_text()) as agent:
        before = programs(agent)["tp_getpgid"]["id"]
        numbered_getpgid(0)
        answer = agent.call("POST", "/v1/apps/demo/constants", {"constants": {"weight": 10}})
        assert answer["reloaded"] == ["tp_getpgid"]
        after = programs(agent)["tp_getpgid"]
        assert after["id"] != before
        assert after["state"] == "attached"
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [before]))
        numbered_getpgid(1)
        assert counters(agent)[:2] == [2, 13]  # 3 + 10: the counters map stayed, the new weight counts
        assert agent.status("demo")["constants"] == {"weight": 10}
        ctl = agent.ctl("reload-program", "demo", "tp_getpgid")
        assert ctl.returncode == 0, ctl.stderr
        assert f"program id {after['id']} -> " in ctl.stdout
        assert programs(agent)["tp_getpgid"]["state"] == "attached"
        numbered_getpgid(2)
        assert counters(agent)[0] == 3
        wrong = agent.refused("POST", "/v1/apps/demo/constants", {"constants": {"wieght": 1}})
        assert wrong.status == 404
        assert "did you mean 'weight'" in str(wrong)
        assert agent.refused("POST", "/v1/apps/demo/programs/tp_getppid/reload").status == 409  # not loaded


def follow(agent: Agent, *args: str) -> tuple[threading.Thread, list[subprocess.CompletedProcess[str]]]:
    """``dynbpf ctl ARGS`` in a thread (it blocks until its events came); its result lands in the list."""
    out: list[subprocess.CompletedProcess[str]] = []
    thread = threading.Thread(target=lambda: out.append(agent.ctl(*args)))
    thread.start()
    return thread, out


def test_events_stream_as_json_lines_to_every_follower(tmp_path: Path) -> None:
    with start_agent(tmp_path, config_text()) as agent:
        followers = [follow(agent, "-j", "events", "demo", "-n", "3") for _ in range(2)]
        agent.wait_for(lambda: agent.status()["agent"]["followers"] == 2)
        for seq in range(4):
            numbered_getpgid(seq)
        for thread, out in followers:
            thread.join(20)
            lines = [json.loads(line) for line in out[0].stdout.splitlines()]
            assert [line["record"]["seq"] for line in lines] == [0, 1, 2]
            assert {line["record"]["pid"] for line in lines} == {os.getpid()}
            assert {(line["app"], line["map"]) for line in lines} == {("demo", "events")}
        agent.wait_for(lambda: agent.status()["agent"]["followers"] == 0)
        thread, out = follow(agent, "events", "demo", "--map", "events", "-n", "1")
        agent.wait_for(lambda: agent.status()["agent"]["followers"] == 1)
        numbered_getpgid(9)
        thread.join(20)
        assert out[0].stdout.startswith(f"events: seq=9 pid={os.getpid()} comm=")
        wrong = agent.refused("GET", "/v1/apps/demo/events", map="evnts")
        assert wrong.status == 404
        assert "did you mean 'events'" in str(wrong)


def test_sigterm_stops_everything_and_exits_0(tmp_path: Path) -> None:
    with start_agent(tmp_path, config_text(seq="enabled", ppid="paused")) as agent:
        progs = {p["id"] for p in programs(agent).values() if "id" in p}
        maps = {m["id"] for m in agent.call("GET", "/v1/apps/demo/maps") if m["exists"]}
        links = {link["id"] for link in agent.call("GET", "/v1/apps/demo/links")}
        assert progs
        assert maps
        assert links
        agent.signal(signal.SIGTERM)
        assert agent.process.wait(patience(15)) == 0
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, progs))
        assert ks.eventually(lambda: not ks.alive(ObjKind.MAP, maps))
        assert not ks.alive(ObjKind.LINK, links)
        assert not os.path.exists(agent.socket)
        messages = agent.messages()
        assert messages[-3:] == ["stopping", "application stopped", "stopped"]


def test_systemd_hears_ready_and_stopping(tmp_path: Path) -> None:
    """``Type=notify``: READY=1 once the socket answers, STOPPING=1 at SIGTERM (contrib/dynbpf-agent.service)."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(patience(20))
        config = tmp_path / "agent.toml"
        config.write_text(f'[agent]\nsocket = "{tmp_path}/agent.sock"\n\n' + config_text())
        process = spawn(config, tmp_path / "agent.log", env={**ENV, "NOTIFY_SOCKET": str(tmp_path / "notify")})
        try:
            assert notify.recv(64) == b"READY=1"
            assert os.path.exists(tmp_path / "agent.sock")  # serving by then
            process.send_signal(signal.SIGTERM)
            assert notify.recv(64) == b"STOPPING=1"
        finally:
            assert process.wait(patience(15)) == 0
