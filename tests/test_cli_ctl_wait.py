"""``dynbpf ctl --wait S``: a script that has just started an agent waits for its answer instead of sleeping;
without an agent it still fails, after S seconds, and an agent that dies while starting ends the wait."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from dynbpf._agent.client import Client, NoAgentError
from tests.agent_run import ENV, app_config, command, spawn
from tests.bpfbuild import build
from tests.helpers import patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def ctl(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("ctl", "--socket", socket, *args),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=patience(60),
        check=False,
    )


def test_ctl_waits_for_an_agent_that_is_starting(tmp_path: Path) -> None:
    socket = str(tmp_path / "agent.sock")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nsocket = "{socket}"\nwatch_interval = 0\n\n'
        + app_config("demo", build("features_decl"), features={"process": "enabled"})
    )
    agent = spawn(config, tmp_path / "agent.log")  # not waited for: ctl does
    try:
        done = ctl(socket, "--wait", "30", "status", "demo", "-j")
        assert done.returncode == 0, done.stderr
        assert '"process"' in done.stdout
    finally:
        agent.terminate()
        assert agent.wait(patience(15)) == 0


def test_without_an_agent_the_wait_ends_with_the_reason(tmp_path: Path) -> None:
    socket = str(tmp_path / "agent.sock")
    began = time.monotonic()
    done = ctl(socket, "--wait", "0.5", "status")
    assert done.returncode == 1
    assert f"no agent listens on {socket}" in done.stderr
    assert "(waited 0.5 s)" in done.stderr
    assert time.monotonic() - began >= 0.5
    assert ctl(socket, "status").returncode == 1  # no --wait: at once, as before


def test_an_agent_that_stops_while_starting_ends_the_wait(tmp_path: Path) -> None:
    import asyncio

    config = tmp_path / "agent.toml"
    socket = str(tmp_path / "agent.sock")
    config.write_text(f'[agent]\nsocket = "{socket}"\n\n[apps.x]\nobject = "{tmp_path}/missing.bpf.o"\n')
    agent = spawn(config, tmp_path / "agent.log")  # refused at once: exit status 2
    began = time.monotonic()
    with pytest.raises(NoAgentError, match="the agent stopped before it answered"):
        asyncio.run(Client(socket).wait(patience(30), alive=lambda: agent.poll() is None))
    assert time.monotonic() - began < 20
    assert agent.wait(patience(15)) == 2
