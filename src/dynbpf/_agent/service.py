"""The agent: its applications, how a configuration becomes what runs, signals, and the process's life.

One event loop serves the API, reads the event maps and watches the
configuration file; everything that changes the kernel runs on one worker
thread, one change at a time (an API call or a reload), so a long
verification never stalls the API and two changes never interleave.

A reload reads the file, checks every application that starts or changes
against its object (nothing changes if one is wrong), then starts new
applications and changes the others in place through the features layer;
if any step fails, the applications already changed are put back and the
new ones closed, so the old configuration keeps running. Only then are
replaced and removed applications stopped. An application whose table did
not change is not touched, and keeps what the API changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dynbpf._agent import config as config_module
from dynbpf._agent import log as agent_log
from dynbpf._agent import sock
from dynbpf._agent.apps import RunningApp, Snapshot
from dynbpf._agent.config import AgentConfig, AgentSettings, ConfigError
from dynbpf._agent.events import Hub
from dynbpf._agent.plan import Checked, Plan, diff, located
from dynbpf._agent.takeover import root_of
from dynbpf.errors import DynbpfError, StateError

log = logging.getLogger("dynbpf.agent")
T = TypeVar("T")

EXIT_CONFIG = 2  # the configuration is refused
EXIT_START = 1  # the configuration is fine, but an application could not start (or the socket is taken)


class AppError(DynbpfError):
    """An application could not start or change (the kernel refused); ``app`` names it."""

    def __init__(self, app: str, error: BaseException) -> None:
        self.app = app
        self.error = error
        super().__init__(f"application {app!r}: {error}")


class Agent:
    """The running applications and every change made to them (see the module docstring)."""

    def __init__(self, config: AgentConfig, settings: AgentSettings) -> None:
        self.config = config
        self.settings = settings
        self.apps: dict[str, RunningApp] = {}
        self.hub = Hub(asyncio.get_running_loop())
        self.changing = asyncio.Lock()  # one change at a time: an API call or a reload
        self.stopping = asyncio.Event()
        self.reloads = {"applied": 0, "unchanged": 0, "refused": 0}
        self.last_reload: dict[str, Any] | None = None
        self.started = time.time()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="dynbpf-agent")
        self._refused_digest: str | None = None  # a file already refused: not tried again until it changes

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on the worker thread, which every change to the kernel goes through."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args, **kwargs))

    # --- configuration -------------------------------------------------------------------

    async def start(self) -> None:
        """Start every configured application, or none (``ConfigError``, ``AppError``)."""
        plan = await asyncio.to_thread(diff, self.config, {})
        async with self.changing:
            await self._execute(plan, self.config)

    async def reload(self, reason: str) -> dict[str, Any]:
        """Read the file again and apply it; on any error the running configuration stays, and it is raised."""
        async with self.changing:
            if self.stopping.is_set():
                raise StateError("the agent is stopping: the configuration is not read again")
            began = time.monotonic()
            try:
                config = await asyncio.to_thread(config_module.load, self.config.file)
                running = {name: (app.checked.config, app.checked.stamp) for name, app in self.apps.items()}
                plan = await asyncio.to_thread(diff, config, running)
                if not plan.empty:
                    await self._execute(plan, config)
            except (DynbpfError, OSError) as e:
                self.reloads["refused"] += 1
                self._refused_digest = _digest(self.config.file)
                self.last_reload = {"time": time.time(), "reason": reason, "result": "refused", "error": str(e)}
                log.error(
                    "configuration refused; the running one stays",
                    extra={"fields": {"reason": reason, "error": str(e), "where": getattr(e, "where", None)}},
                )
                raise
            self._settings_changed(config.agent)
            self.config = config
            self._refused_digest = None
            result = "applied" if not plan.empty else "unchanged"
            self.reloads[result] += 1
            summary = {
                "time": time.time(),
                "reason": reason,
                "result": result,
                "started": [c.config.name for c in plan.start],
                "changed": [c.config.name for c in plan.change],
                "stopped": list(plan.stop),
                "seconds": round(time.monotonic() - began, 6),
            }
            self.last_reload = summary
            log.info(f"configuration {result}", extra={"fields": summary})
            return summary

    async def _execute(self, plan: Plan, config: AgentConfig) -> None:
        """Make ``plan`` real: all of it, or none of it (the caller holds ``changing``)."""
        before = {name: dict(app.checked.config.events) for name, app in self.apps.items()}
        started = await self.blocking(self._make, plan, config)
        replaced = [self.apps[name] for name in started if name in self.apps]
        for app in [*replaced, *(self.apps[name] for name in plan.stop)]:
            self.hub.stop(app.name, ended="application reconfigured" if app in replaced else "application stopped")
            with contextlib.suppress(DynbpfError):  # it is replaced or gone either way; the error is logged
                await self.blocking(self._close, app, keep=False)
        for name in plan.stop:
            del self.apps[name]
        for name, app in started.items():
            await self.blocking(app.take_root)  # the kept root is free now, if a replaced one held it
            self.apps[name] = app
            self.hub.start(name, app.collection, dict(app.checked.config.events))
        for checked in plan.change:
            name, events = checked.config.name, dict(checked.config.events)
            old = before.get(name, {})
            gone = frozenset(m for m, record in old.items() if events.get(m) != record)
            self.hub.stop(name, gone)
            self.hub.start(name, self.apps[name].collection, {m: r for m, r in events.items() if old.get(m) != r})

    def _make(self, plan: Plan, config: AgentConfig) -> dict[str, RunningApp]:
        """Start and change what ``plan`` says (worker thread); on failure undo it all and raise."""
        started: dict[str, RunningApp] = {}
        changed: list[tuple[RunningApp, Snapshot]] = []
        try:
            for checked in plan.start:
                started[checked.config.name] = self._start(checked, config)
            for checked in plan.change:
                app = self.apps[checked.config.name]
                changed.append((app, app.snapshot()))
                try:
                    app.reconfigure(checked)
                except DynbpfError as e:
                    raise located(config, app.name, e) or AppError(app.name, e) from e
        except BaseException:
            for app, snapshot in reversed(changed):
                try:
                    app.restore(snapshot)
                except Exception:
                    log.exception("could not put an application back", extra={"fields": {"app": app.name}})
            for app in started.values():
                with contextlib.suppress(DynbpfError):
                    self._close(app, keep=app.took_over)
            raise
        return started

    def _start(self, checked: Checked, config: AgentConfig) -> RunningApp:
        name = checked.config.name
        root = root_of(checked.config)
        beside = any(app.root == root for app in self.apps.values()) if root is not None else False
        try:
            # opened anew beside its running self (a reload): that one holds the kept root until it stops
            app = RunningApp.start(checked, stats=self.settings.stats, adopt=not beside)
        except DynbpfError as e:
            raise located(config, name, e) or AppError(name, e) from e
        status = app.status()
        log.info(
            "application started",
            extra={
                "fields": {
                    "app": name,
                    "object": checked.config.object,
                    "features": {f: s["state"] for f, s in status["features"].items()},
                    "hooks": {h: s["variant"] for h, s in status["hooks"].items() if s["variant"]},
                    "open_seconds": round(app.open_seconds, 6),
                    "apply_seconds": round(app.apply_seconds, 6),
                    "adoption": app.takeover.as_json() if app.takeover is not None else None,
                }
            },
        )
        return app

    def _close(self, app: RunningApp, *, keep: bool) -> None:
        try:
            app.close(keep=keep)
        except DynbpfError:
            log.exception("application did not close cleanly", extra={"fields": {"app": app.name}})
            raise
        log.info("application stopped", extra={"fields": {"app": app.name, "kept": keep}})

    def _settings_changed(self, new: AgentSettings) -> None:
        """A reload takes the new log level; the other ``[agent]`` settings need a restart (logged)."""
        old = self.config.agent
        if new.log_level != old.log_level:
            agent_log.set_level(new.log_level)
        if dataclasses.replace(new, log_level=old.log_level) != old:
            log.warning("[agent] settings other than log_level take effect at the next start")

    async def watch(self) -> None:
        """Reload when the file's content changes (a ConfigMap swaps a symlink: the path is read anew each time)."""
        interval = self.settings.watch_interval
        if not interval:
            return
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)
                return
            digest = await asyncio.to_thread(_digest, self.config.file)
            if digest is None or digest in (self.config.digest, self._refused_digest):
                continue
            with contextlib.suppress(DynbpfError, OSError):  # logged by reload
                await self.reload("file changed")

    # --- the end ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every application (pinning what runs first where keep_on_exit asks)."""
        self.stopping.set()
        self.hub.close("agent stopping")
        async with self.changing:
            for name in list(self.apps):
                app = self.apps.pop(name)
                with contextlib.suppress(DynbpfError):
                    await self.blocking(self._close, app, keep=app.checked.config.keep_on_exit)
        self._worker.shutdown()

    # --- reading ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "agent": {
                "pid": os.getpid(),
                "config": self.config.file,
                "digest": self.config.digest,
                "socket": self.settings.socket,
                "started": self.started,
                "stats": self.settings.stats,
                "reloads": dict(self.reloads),
                "last_reload": self.last_reload,
                "followers": len(self.hub.subscribers),
            },
            "apps": {name: app.status() for name, app in list(self.apps.items())},
        }


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


# --- the process ---------------------------------------------------------------------------


def run(config_path: str, *, socket_path: str | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT; the exit status (0 after a clean stop)."""
    agent_log.setup()
    try:
        config = config_module.load(config_path)
    except ConfigError as e:
        log.error("configuration refused", extra={"fields": {"error": str(e), "where": e.where}})
        return EXIT_CONFIG
    agent_log.set_level(config.agent.log_level)
    settings = config.agent if socket_path is None else dataclasses.replace(config.agent, socket=socket_path)
    return asyncio.run(_serve(config, settings))


async def _serve(config: AgentConfig, settings: AgentSettings) -> int:
    from dynbpf._agent import api

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(config, settings)

    def hangup() -> None:
        task = loop.create_task(agent.reload("SIGHUP"))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # refusals are logged by reload

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        listening = sock.bind(settings.socket, settings.socket_group)
    except DynbpfError as e:
        log.error("cannot listen", extra={"fields": {"socket": settings.socket, "error": str(e)}})
        return EXIT_START
    try:
        try:
            await agent.start()
            runners = await api.serve(agent, listening.sock, settings.metrics_port)
        except ConfigError as e:
            log.error("configuration refused", extra={"fields": {"error": str(e), "where": e.where}})
            return EXIT_CONFIG
        except DynbpfError as e:
            log.error("the agent could not start; nothing runs", extra={"fields": {"error": str(e)}})
            return EXIT_START
        _notify("READY=1")
        ready = {"socket": settings.socket, "apps": list(agent.apps), "metrics_port": settings.metrics_port}
        log.info("ready", extra={"fields": ready})
        watcher = loop.create_task(agent.watch())
        await stop.wait()
        _notify("STOPPING=1")
        log.info("stopping")
        agent.stopping.set()
        agent.hub.close("agent stopping")
        for runner in runners:
            await runner.cleanup()
        await watcher
        return 0
    finally:
        await agent.shutdown()
        listening.remove()
        listening.sock.close()
        log.info("stopped")


def _notify(state: str) -> None:
    """Tell systemd (``Type=notify``) how the agent is doing; nothing without ``NOTIFY_SOCKET``."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), address)
