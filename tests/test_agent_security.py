"""Who may use the agent: the socket's owner and mode, the peer's credentials on every connection, and paths
the API takes only below an application's pin root."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynbpf._sys import commands
from tests.agent_run import app_config, start_agent
from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]
NOBODY = 65534


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory others may enter (pytest's tmp_path is root's alone), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="dynbpf-agent-"))
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def demo(*extra: str) -> str:
    return app_config("demo", build("agent_app"), features={"seq": "enabled"}, extra=extra)


def test_the_socket_is_roots_alone_and_refuses_others_even_when_opened_up(public_dir: Path) -> None:
    with start_agent(public_dir, demo()) as agent:
        st = os.stat(agent.socket)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
        denied = agent.ctl("status", user=NOBODY)
        assert denied.returncode == 1
        assert "permission denied on" in denied.stderr
        assert "for root" in denied.stderr
        os.chmod(agent.socket, 0o666)  # a mistake by hand: the agent itself still checks who calls
        refused = agent.ctl("status", user=NOBODY)
        assert refused.returncode == 1
        assert f"the agent refused (403): refused: uid {NOBODY}" in refused.stderr
        assert "it answers root" in refused.stderr
        assert agent.ctl("status").returncode == 0  # root
        warning = next(e for e in agent.logs() if e["msg"] == "peer refused")
        assert warning["uid"] == NOBODY


def test_a_configured_group_may_use_the_socket(public_dir: Path) -> None:
    config = f'[agent]\nsocket = "{public_dir}/agent.sock"\nsocket_group = "nogroup"\n\n' + demo()
    with start_agent(public_dir, config) as agent:
        st = os.stat(agent.socket)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, NOBODY, 0o660)
        member = agent.ctl("-j", "status", user=NOBODY)  # nobody's group is nogroup
        assert member.returncode == 0, member.stderr
        assert '"demo"' in member.stdout


def test_the_api_pins_only_below_the_pin_root(tmp_path: Path, pin_root: str) -> None:
    with start_agent(tmp_path, demo(f'pin_root = "{pin_root}"')) as agent:
        outside = [
            "/etc/dynbpf-x",
            "/sys/fs/bpf/dynbpf-outside",
            "../escape",
            f"{pin_root}/../escape",
            pin_root,
            "a/../../b",
            "kept/counters",  # where keep_on_exit pins: the agent's
            f"{pin_root}/kept/demo/maps/counters",
        ]
        for path in outside:
            e = agent.refused("POST", "/v1/apps/demo/maps/counters/pin", {"path": path})
            assert e.status == 403, path
            assert "refused path" in str(e), path
        assert not os.path.exists("/etc/dynbpf-x")
        assert not os.path.exists("/sys/fs/bpf/dynbpf-outside")
        assert not os.path.exists(os.path.join(os.path.dirname(pin_root), "escape"))
        os.symlink("/sys/fs/bpf", os.path.join(pin_root, "link"))
        e = agent.refused("POST", "/v1/apps/demo/maps/counters/pin", {"path": "link/counters"})
        assert e.status == 409
        assert "symbolic link" in str(e)
        done = agent.ctl("pin", "demo", "counters", "export/counters")
        assert done.returncode == 0, done.stderr
        pinned = os.path.join(pin_root, "export", "counters")
        maps = {m["name"]: m.get("id") for m in agent.call("GET", "/v1/apps/demo/maps")}
        with commands.obj_get(pinned) as fd:
            assert commands.map_info(fd.raw).id == maps["counters"]  # the map the app uses
        os.unlink(os.path.join(pin_root, "link"))
