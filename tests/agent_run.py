"""The agent run for real, as a subprocess, and driven through its real socket (tests/test_agent_*.py).

``start_agent`` writes a configuration, starts ``python -m dynbpf._cli.main agent`` on it and waits
until the control socket answers; ``Agent.call`` speaks the API with the client ``dynbpf ctl``
uses, ``Agent.ctl`` runs ``dynbpf ctl`` itself. The agent's JSON log lines are kept for asserts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynbpf._agent.client import ControlError
from dynbpf._agent.client import run as client_run
from tests.helpers import patience

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
#: the environment the agent and ctl subprocesses run with: this checkout's sources first
ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}"}
ENV.pop("NOTIFY_SOCKET", None)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dynbpf._cli.main", *args]


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    config: Path
    socket: str
    log_path: Path
    _exit: int | None = field(default=None)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None, **params: str) -> Any:
        return client_run(self.socket, lambda c: c.call(method, path, body, params or None))

    def refused(self, method: str, path: str, body: Mapping[str, Any] | None = None, **params: str) -> ControlError:
        try:
            self.call(method, path, body, **params)
        except ControlError as e:
            return e
        raise AssertionError(f"{method} {path} was not refused")

    def status(self, app: str | None = None) -> Any:
        return self.call("GET", "/v1/status" if app is None else f"/v1/apps/{app}")

    def ctl(self, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
        """``dynbpf ctl --socket S ARGS`` (as uid and gid ``user``, no other groups, through setpriv when given)."""
        argv = command("ctl", "--socket", self.socket, *args)
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        return subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=patience(30), check=False)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"msg": "(not JSON)", "line": line})
        return out

    def messages(self) -> list[str]:
        return [entry["msg"] for entry in self.logs()]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, and the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(patience(timeout))

    def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
        timeout = patience(timeout)
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s; agent log: {self.log_path.read_text()[-3000:]}")
            time.sleep(interval)


def spawn(config: Path, log: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            command("agent", "--config", str(config), *args), env=dict(env or ENV), stderr=err, stdout=err
        )


def ready(socket: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    timeout = patience(timeout)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the agent exited ({process.returncode}): {log.read_text()[-3000:]}")
        if os.path.exists(socket):
            try:
                client_run(socket, lambda c: c.call("GET", "/v1/status"))
                return
            except ControlError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the agent did not answer within {timeout} s: {log.read_text()[-3000:]}")
        time.sleep(0.05)


@contextmanager
def start_agent(directory: Path, config: str, *, name: str = "agent.toml") -> Iterator[Agent]:
    """An agent on ``config`` (its socket under ``directory`` unless the text names one), stopped after."""
    path = directory / name
    socket = str(directory / "agent.sock")
    if "socket =" not in config:
        config = f'[agent]\nsocket = "{socket}"\nwatch_interval = 0.1\n\n' + config
    else:
        socket = next(line.split('"')[1] for line in config.splitlines() if line.startswith("socket ="))
    path.write_text(config)
    log = directory / "agent.log"
    process = spawn(path, log)
    agent = Agent(process, path, socket, log)
    try:
        ready(socket, process, log)
        yield agent
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(patience(15))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def app_config(name: str, obj: Path, *, features: Mapping[str, str], extra: Sequence[str] = ()) -> str:
    """An ``[apps.<name>]`` table for ``obj`` with ``features`` and extra lines (``key = value``)."""
    lines = [f"[apps.{name}]", f'object = "{obj}"', *extra, "", f"[apps.{name}.features]"]
    lines += [f'{feature} = "{state}"' for feature, state in features.items()]
    return "\n".join(lines) + "\n\n"
