"""Reconfiguration: a bad configuration is refused with nothing changed (at start and at reload), SIGHUP and a
changed file (a ConfigMap's symlink swap) apply the new one, and a reload is all or nothing across apps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from dynbpf._sys.commands import ObjKind
from tests import kernel_state as ks
from tests.agent_run import ENV, Agent, app_config, command, spawn, start_agent
from tests.bpfbuild import build
from tests.helpers import patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

SLOTTED = """\
[features.slotted]
hooks = ["slotted"]

[hooks.slotted]
variants = ["slotted_getppid"]
"""


def demo(**features: str) -> str:
    return app_config("demo", build("agent_app"), features=features)


def running(agent: Agent, app: str = "demo") -> tuple[dict[str, int], set[int]]:
    """The app's programs that are loaded (name -> kernel id) and its kernel link ids."""
    progs = {p["name"]: p["id"] for p in agent.call("GET", f"/v1/apps/{app}/programs") if "id" in p}
    links = {link["id"] for link in agent.call("GET", f"/v1/apps/{app}/links")}
    return progs, links


def states(agent: Agent, app: str = "demo") -> dict[str, str]:
    return {f: s["state"] for f, s in agent.status(app)["features"].items()}


def test_a_bad_configuration_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    socket = tmp_path / "agent.sock"
    config.write_text(f'[agent]\nsocket = "{socket}"\n\n' + demo(seq="enabled", sqe="enabled"))
    log = tmp_path / "agent.log"
    assert spawn(config, log).wait(patience(30)) == 2
    (entry,) = [e for e in map(_json, log.read_text().splitlines()) if e["level"] == "error"]
    assert entry["msg"] == "configuration refused"
    assert entry["where"] == f"{config}:9"
    assert entry["error"].startswith(f"{config}:9: apps.demo.features.sqe: agent_app has no feature 'sqe'")
    assert not socket.exists()
    config.write_text(f'[agent]\nsocket = "{socket}"\nsocket_mode = "0666"\n')
    assert spawn(config, log).wait(patience(30)) == 2
    assert f"{config}:3: agent.socket_mode: unknown key" in log.read_text()
    assert "application started" not in log.read_text()


def test_an_application_that_cannot_start_stops_the_others_and_the_agent(tmp_path: Path) -> None:
    (tmp_path / "bad.features.toml").write_text(
        '[features.doomed]\nhooks = ["doomed"]\n\n[hooks.doomed]\nvariants = ["missing_getpgid"]\n'
    )
    broken = app_config(
        "broken", build("features_app"), features={"doomed": "enabled"}, extra=['feature_map = "bad.features.toml"']
    )
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nsocket = "{tmp_path}/agent.sock"\n\n' + demo(seq="enabled") + broken)
    log = tmp_path / "agent.log"
    assert spawn(config, log).wait(patience(30)) == 1
    text = log.read_text()
    assert "application 'broken': no working variant for 'doomed'" in text
    assert "missing_getpgid: attach-failed" in text
    assert "the agent could not start; nothing runs" in text


def test_sighup_applies_the_changed_file(tmp_path: Path) -> None:
    # the file watcher off from the start: with it on, it may see the change before the signal comes
    config = f'[agent]\nsocket = "{tmp_path}/agent.sock"\nwatch_interval = 0\n\n' + demo(seq="enabled", ppid="disabled")
    with start_agent(tmp_path, config) as agent:
        agent.signal(signal.SIGHUP)
        agent.wait_for(lambda: agent.status()["agent"]["reloads"]["unchanged"] == 1)
        before, links = running(agent)
        agent.config.write_text(agent.config.read_text().replace('ppid = "disabled"', 'ppid = "enabled"'))
        agent.signal(signal.SIGHUP)
        agent.wait_for(lambda: states(agent)["ppid"] == "enabled")
        after, new_links = running(agent)
        assert after["tp_getpgid"] == before["tp_getpgid"]  # the unchanged feature was not touched
        assert "tp_getppid" in after
        assert links < new_links <= ks.kernel_link_ids()
        last = agent.status()["agent"]["last_reload"]
        assert (last["reason"], last["result"], last["changed"]) == ("SIGHUP", "applied", ["demo"])


def test_a_refused_reload_changes_nothing(tmp_path: Path) -> None:
    with start_agent(tmp_path, demo(seq="enabled", ppid="paused")) as agent:
        before = running(agent)
        status = agent.status("demo")
        good = agent.config.read_text()
        agent.config.write_text(good.replace('ppid = "paused"', 'ppid = "paused"\nbogus = "enabled"'))
        agent.wait_for(lambda: agent.status()["agent"]["reloads"]["refused"] == 1)  # the watcher saw it
        refused = agent.refused("POST", "/v1/reload")
        assert refused.status == 400
        assert str(refused).endswith(
            f"{agent.config}:11: apps.demo.features.bogus: agent_app has no feature 'bogus' (features: ppid, seq)"
        )
        agent.signal(signal.SIGHUP)
        agent.wait_for(lambda: agent.status()["agent"]["reloads"]["refused"] == 3)
        assert running(agent) == before
        progs, links = before
        assert ks.alive(ObjKind.PROG, progs.values()) == set(progs.values())
        assert links <= ks.kernel_link_ids()
        now = agent.status("demo")
        assert (now["features"], now["hooks"]) == (status["features"], status["hooks"])
        error = next(e for e in agent.logs() if e["level"] == "error")
        assert error["msg"] == "configuration refused; the running one stays"
        assert error["where"] == f"{agent.config}:11"
        agent.config.write_text(good.replace('ppid = "paused"', 'ppid = "enabled"'))  # fixed: applied
        agent.wait_for(lambda: states(agent)["ppid"] == "enabled")


def test_a_changed_file_is_seen_through_a_configmap_symlink_swap(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as ``agent.toml -> ..data/agent.toml``, ``..data -> ..<timestamp>``
    and updates it by pointing ``..data`` at a new directory in one rename."""
    mount = tmp_path / "config"
    mount.mkdir()
    body = f'[agent]\nsocket = "{tmp_path}/agent.sock"\nwatch_interval = 0.1\n\n'

    def publish(version: int, text: str) -> None:
        data = mount / f"..v{version}"
        data.mkdir()
        (data / "agent.toml").write_text(text)
        os.symlink(data.name, mount / "..data_tmp")
        os.rename(mount / "..data_tmp", mount / "..data")

    publish(1, body + demo(seq="enabled", ppid="disabled"))
    os.symlink("..data/agent.toml", mount / "agent.toml")
    log = tmp_path / "agent.log"
    process = spawn(mount / "agent.toml", log)
    agent = Agent(process, mount / "agent.toml", f"{tmp_path}/agent.sock", log)
    try:
        agent.wait_for(lambda: os.path.exists(agent.socket) and _answers(agent), timeout=patience(20))
        assert states(agent) == {"seq": "enabled", "ppid": "disabled"}
        publish(2, body + demo(seq="paused", ppid="enabled"))
        agent.wait_for(lambda: states(agent) == {"seq": "paused", "ppid": "enabled"})
        assert agent.status()["agent"]["last_reload"]["reason"] == "file changed"
    finally:
        assert agent.stop() == 0


def test_a_reload_is_all_or_nothing_across_applications(tmp_path: Path) -> None:
    (tmp_path / "slotted.features.toml").write_text(SLOTTED)
    slotted = app_config(
        "slots",
        build("features_app"),
        features={"slotted": "enabled"},
        extra=['feature_map = "slotted.features.toml"', "constants = { slot = 0 }"],
    )
    with start_agent(tmp_path, demo(seq="enabled", ppid="disabled") + slotted) as agent:
        agent.call("POST", "/v1/apps/demo/features/seq", {"state": "paused"})  # an API change: the file does not say it
        before = {app: running(agent, app) for app in ("demo", "slots")}
        text = agent.config.read_text()
        changed = text.replace('ppid = "disabled"', 'ppid = "enabled"').replace("slot = 0", "slot = 5")
        agent.config.write_text(changed)  # demo changes in place first, then slots' new constant fails to verify
        agent.wait_for(lambda: agent.status()["agent"]["reloads"]["refused"] == 1)
        last = agent.status()["agent"]["last_reload"]
        assert "application 'slots'" in last["error"]
        assert "slotted_getppid" in last["error"]
        after = {app: running(agent, app) for app in ("demo", "slots")}
        assert after["slots"] == before["slots"]
        assert after["demo"] == before["demo"]  # ppid was enabled, then put back: unloaded; seq paused as it was
        assert states(agent) == {"seq": "paused", "ppid": "disabled"}  # the snapshot put back has the API's change
        assert agent.status("slots")["constants"] == {"slot": 0}
        agent.config.write_text(changed.replace("slot = 5", "slot = 2"))
        agent.wait_for(lambda: agent.status()["agent"]["reloads"]["applied"] == 1)
        assert states(agent) == {"seq": "enabled", "ppid": "enabled"}  # demo's table changed: the file wins
        assert agent.status("slots")["constants"] == {"slot": 2}
        assert running(agent, "slots")[0]["slotted_getppid"] != before["slots"][0]["slotted_getppid"]


def test_check_reads_the_configuration_and_its_objects_without_loading(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(demo(seq="enabled"))
    check = command("agent", "--config", str(config), "--check")
    ok = subprocess.run(check, env=ENV, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "1 application(s), configuration OK" in ok.stdout
    as_json = subprocess.run([*check, "-j"], env=ENV, capture_output=True, text=True, check=False)
    assert as_json.returncode == 0, as_json.stderr
    checked = json.loads(as_json.stdout)
    assert checked["config"] == str(config)
    demo_app = checked["apps"]["demo"]
    assert demo_app["features"]["seq"] == "enabled"
    assert set(demo_app["features"].values()) <= {"enabled", "paused", "disabled"}
    assert "tp_getpgid" in demo_app["programs"]
    assert "events" in demo_app["maps"]
    running = command("agent", "--config", str(config), "-j")  # refused before anything starts
    refused = subprocess.run(running, env=ENV, capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "-j/--json goes with --check" in refused.stderr
    config.write_text(demo(seq="enabld"))
    bad = subprocess.run(check, env=ENV, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert f"{config}:5: apps.demo.features.seq: 'enabld' is not a feature state" in bad.stderr


def _answers(agent: Agent) -> bool:
    from dynbpf._agent.client import ControlError

    try:
        agent.status()
    except ControlError:
        return False
    return True


def _json(line: str) -> dict[str, object]:
    import json

    return json.loads(line)
