"""README's "A first run": the blocks marked ``<!-- first-run -->`` run, in order, in one shell, against the
running kernel, exactly as a newcomer would paste them; what each printed is checked: a tool run with
``dynbpf run``, the agent started from a configuration, a feature changed with ``dynbpf ctl``, and a restart
that loses no event. Parsed from the README, so the text cannot drift from what works."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agent_run import ENV
from tests.helpers import patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

ROOT = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"^<!-- first-run -->\n```sh\n(.*?)^```$", re.S | re.M)
SEPARATOR = "@@ block {} @@"
PIN_ROOTS = "/sys/fs/bpf/first-run-*"


def blocks() -> list[str]:
    return MARKED.findall((ROOT / "README.md").read_text())


def test_the_walkthrough_is_marked() -> None:
    """Five blocks: a tool, the agent, a feature changed, a restart, the cleanup."""
    found = blocks()
    assert len(found) == 5
    assert "dynbpf run" in found[0]
    assert "dynbpf agent" in found[1]
    assert "dynbpf ctl enable" in found[2]
    assert "kill -TERM" in found[3]
    assert "dynbpf agent" in found[3]


def counts(text: str) -> dict[int, int]:
    """``key: value`` lines of a counts map (``dynbpf ctl map`` and ``dynbpf map dump`` print the same)."""
    return {int(k): int(v) for k, v in re.findall(r"^(\d+): (\d+)$", text, re.M)}


def test_a_first_run_as_the_readme_shows_it(tmp_path: Path) -> None:
    before = set(glob.glob(PIN_ROOTS))
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT"]  # a failure stops the agent
    for i, block in enumerate(blocks()):
        script += [f"echo '{SEPARATOR.format(i)}'", block]
    env = {**ENV, "TMPDIR": str(tmp_path)}  # mktemp -d: the agent's directory under the test's
    env.pop("DYNBPF_SOCKET", None)
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=patience(180),
            check=False,
        )
    finally:
        for root in set(glob.glob(PIN_ROOTS)) - before:
            shutil.rmtree(root, ignore_errors=True)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = re.split(r"^@@ block \d @@$", done.stdout, flags=re.M)[1:]
    assert len(out) == 5, done.stdout
    tool, agent, changed, restart, _cleanup = out

    # a tool: the execs of the ls loop were seen and decoded, and it freed everything
    assert re.search(r"^events: kind=0 tgid=\d+ comm=ls$", tool, re.M), tool
    assert "every program was detached and unloaded, every map freed" in done.stderr

    # the agent: running the configured features
    assert re.search(r"^process\s+enabled\s+enabled\s+exec", agent, re.M), agent
    assert re.search(r"^files\s+paused\s+paused\s+openat", agent, re.M), agent

    # a feature changed live: files enabled, and opens counted since
    assert "demo: files enabled" in changed, changed
    live = counts(changed)
    assert live[2] > 0, changed

    # the restart: the pinned map read with no agent, then through the new agent; each a later reading
    stopped, restarted = re.split(r"^(?=0: )", restart, flags=re.M)[1:]
    gap, after = counts(stopped), counts(restarted)
    assert gap[0] > live[0], "no exec was counted while no agent ran: the kept programs did not run"
    assert all(after[k] >= gap[k] for k in gap), (gap, after)
    assert after[0] > gap[0]  # the new agent counts on in the same map (its own ctl's exec at least)
    adopted = re.search(r"^taken over from /sys/fs/bpf/first-run-\w+/kept/demo: (\d+) programs and", restarted, re.M)
    assert adopted, restarted
    assert int(adopted.group(1)) == 3  # exec_btf, exit_tp, openat_tp: the programs loaded when it stopped

    # nothing stays
    assert set(glob.glob(PIN_ROOTS)) == before
    assert not os.listdir(tmp_path)
