"""keep_on_exit: a steady stream of numbered events is counted across an agent restart with no gap, because
the exiting agent pins its links and the next one lets them go only once its own programs run. Without it
the same restart loses events: the measurement can tell."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import dynbpf
from dynbpf._sys import commands
from dynbpf._sys.commands import ObjKind
from tests import kernel_state as ks
from tests.agent_run import Agent, app_config, ready, spawn
from tests.bpfbuild import build
from tests.helpers import numbered_getpgid

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

LIMIT = 60_000  # seen[] has 65536 slots


class Generator:
    """getpgid(SEQ_BASE + seq) for seq = 0, 1, 2, ... on a thread, until stopped."""

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
        self._stop.set()
        self._thread.join()


def start(directory: Path, config: Path, log: Path) -> Agent:
    process = spawn(config, log)
    socket = str(directory / "agent.sock")
    ready(socket, process, log)
    return Agent(process, config, socket, log)


def seen(pin_root: str, count: int) -> list[int]:
    with commands.obj_get(os.path.join(pin_root, "seen")) as fd:
        view = dynbpf.Map.with_kernel_btf(fd.raw)
        return [view[i] for i in range(count)]


@pytest.mark.parametrize("keep", [True, False], ids=["keep_on_exit", "without"])
def test_a_restart_loses_no_event_with_keep_on_exit(tmp_path: Path, pin_root: str, keep: bool) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nsocket = "{tmp_path}/agent.sock"\nwatch_interval = 0\n\n'
        + app_config(
            "demo",
            build("agent_app"),
            features={"seq": "enabled"},
            extra=[
                f'pin_root = "{pin_root}"',
                'map_policies = { seen = "pinned", counters = "pinned" }',
                f"keep_on_exit = {str(keep).lower()}",
            ],
        )
    )
    log = tmp_path / "agent.log"
    first = start(tmp_path, config, log)
    old = {p["id"] for p in first.call("GET", "/v1/apps/demo/programs") if "id" in p}
    kept = os.path.join(pin_root, "kept", "links")
    second: Agent | None = None
    try:
        with Generator() as generator:
            first.wait_for(lambda: generator.sent > 200)
            stopping = generator.sent
            first.signal(signal.SIGTERM)
            assert first.process.wait(15) == 0
            if keep:
                assert os.listdir(kept) == ["tp_getpgid"]
                assert ks.alive(ObjKind.PROG, old) == old  # still running: the pinned link holds it
            else:
                assert not os.path.exists(kept)
            second = start(tmp_path, config, log)
            running = generator.sent
            at_start = next(e for e in second.logs()[::-1] if e["msg"] == "application started")
            assert at_start["released_kept_links"] == (1 if keep else 0)
            assert not os.path.exists(kept)  # released once the new programs ran
            assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, old))
            second.wait_for(lambda: generator.sent > running + 200)
    finally:
        if second is not None:
            second.signal(signal.SIGTERM)
            assert second.process.wait(15) == 0
    counts = seen(pin_root, generator.sent)
    missed = [seq for seq, n in enumerate(counts) if n == 0]
    if keep:
        assert not missed, f"{len(missed)} of {len(counts)} events lost, first {missed[:5]}"
        assert max(counts) <= 2  # counted twice at most, while both programs ran
    else:  # the restart's blind window, which keep_on_exit closes
        assert missed
        assert all(stopping <= seq <= running for seq in missed)
