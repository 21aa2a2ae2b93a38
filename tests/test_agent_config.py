"""The agent's configuration file: every mistake named by file, line and key; docs/agent.md's example reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dynbpf
from dynbpf._agent import config as agent_config
from dynbpf._agent import plan
from dynbpf._agent.config import ConfigError
from dynbpf._features.application import FeatureState
from dynbpf._sys.constants import MapType
from tests.bpfbuild import build

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
[agent]
socket = "/run/x/agent.sock"
metrics_port = 9464
watch_interval = 0.5

[apps.mon]
object = "objs/mon.bpf.o"
pin_root = "/sys/fs/bpf/mon"
map_policies = { counts = "pinned" }
constants = { ignore_tgid = 7, name = "x" }
events = { events = "struct event" }
keep_on_exit = true

[apps.mon.features]
process = "enabled"
files = "paused"

[apps.mon.map_edits.events]
max_entries = 1048576

[apps.mon.map_edits.outer.inner]
type = "hash"
"""


def parse(text: str) -> agent_config.AgentConfig:
    return agent_config.parse(text.encode(), "/etc/dynbpf/agent.toml")


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return e.value


def test_a_configuration_reads_into_its_applications() -> None:
    cfg = parse(GOOD)
    assert cfg.agent.socket == "/run/x/agent.sock"
    assert cfg.agent.metrics_port == 9464
    assert cfg.agent.watch_interval == 0.5
    assert cfg.agent.socket_group is None
    app = cfg.apps["mon"]
    assert app.object == "/etc/dynbpf/objs/mon.bpf.o"  # relative to the file's directory
    assert dict(app.features) == {"process": FeatureState.ENABLED, "files": FeatureState.PAUSED}
    assert dict(app.constants) == {"ignore_tgid": 7, "name": "x"}
    assert app.map_edits["events"] == dynbpf.MapEdit(max_entries=1048576)
    assert app.map_edits["outer"] == dynbpf.MapEdit(inner=dynbpf.MapEdit(type=MapType.HASH))
    assert dict(app.map_policies) == {"counts": "pinned"}
    assert dict(app.events) == {"events": "struct event"}
    assert app.keep_on_exit
    assert app.map_policy == "on_demand"
    assert cfg.digest == parse(GOOD).digest
    assert cfg == parse(GOOD)
    assert cfg.where("apps", "mon", "features", "files") == "/etc/dynbpf/agent.toml:16"


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("process = ", "proces = "), 15, "apps.mon.features.proces"),  # unknown names are checked with the object
        (('files = "paused"', 'files = "off"'), 16, "apps.mon.features.files: 'off' is not a feature state"),
        (("max_entries = 1048576", "max_entries = -1"), 19, "apps.mon.map_edits.events.max_entries: -1 is out"),
        (("max_entries = 1048576", "max_entires = 1"), 19, "unknown key (did you mean 'max_entries'?)"),
        (('type = "hash"', 'type = "hsah"'), 22, "no map type 'hsah' (did you mean 'hash'?)"),
        (('type = "hash"', "reuse_fd = 3"), 22, "takes a file descriptor"),
        (('{ counts = "pinned" }', '{ counts = "pinnned" }'), 9, "apps.mon.map_policies.counts: unknown map policy"),
        (("watch_interval = 0.5", "watch_interval = -1"), 4, "agent.watch_interval: must be a number"),
        (("metrics_port = 9464", "metrics_port = 99999"), 3, "agent.metrics_port: 99999 is out of range"),
        (('socket = "/run/x/agent.sock"', 'socket = "agent.sock"'), 2, "agent.socket: must be an absolute path"),
        (('socket = "/run/x/agent.sock"', 'socket_group = "no-such-group-x"'), 2, "no group 'no-such-group-x'"),
        (("keep_on_exit = true", "keep_on_exit = 1"), 12, "apps.mon.keep_on_exit: must be true or false"),
        (("keep_on_exit = true", "keep_on_exit = true\nworkrs = 2"), 13, "apps.mon.workrs: unknown key"),
        (('object = "objs/mon.bpf.o"', 'objet = "objs/mon.bpf.o"'), 7, "did you mean 'object'?"),
        (("[apps.mon.features]", "[apps.mon.features"), 14, "not valid TOML"),
        (('events = { events = "struct event" }', "events = { events = 1 }"), 11, "apps.mon.events.events"),
    ],
)
def test_every_mistake_names_file_line_and_key(change: tuple[str, str], where: int, message: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    if message.startswith("apps.mon.features.proces"):
        assert parse(text).apps["mon"].features  # the shape is fine; plan.check names it (below)
        return
    e = refusal(text)
    assert e.where == f"/etc/dynbpf/agent.toml:{where}", str(e)
    assert message in str(e)
    assert str(e).startswith(f"/etc/dynbpf/agent.toml:{where}: ")


def test_a_configuration_without_applications_or_objects_is_refused() -> None:
    assert "runs no application" in str(refusal("[agent]\nstats = true\n"))
    e = refusal("[apps.a]\npin_root = '/sys/fs/bpf/a'\n")
    assert str(e) == "/etc/dynbpf/agent.toml:1: apps.a: names no object ('object = \"path/to/app.bpf.o\"')"
    e = refusal("[apps.a]\nobject = 'a.o'\nkeep_on_exit = true\n")
    assert "keep_on_exit pins under the application's pin_root: set one" in str(e)
    assert "used in URLs" in str(refusal("[apps.'a/b']\nobject = 'a.o'\n"))


def test_applications_whose_pins_would_share_a_directory_are_refused() -> None:
    two = "[apps.'a.b']\nobject = 'a.o'\npin_root = '/sys/fs/bpf/x'\n[apps.a_b]\nobject = 'b.o'\npin_root = '{}'\n"
    e = refusal(two.format("/sys/fs/bpf/x/"))
    assert e.where == "/etc/dynbpf/agent.toml:6", str(e)
    assert "apps.a_b.pin_root: pins under the same directory as application 'a.b' (/sys/fs/bpf/x/kept/a_b)" in str(e)
    assert set(parse(two.format("/sys/fs/bpf/y")).apps) == {"a.b", "a_b"}  # apart: fine


@pytest.mark.needs_clang
def test_names_are_checked_against_the_object_before_anything_loads(tmp_path: Path) -> None:
    obj = build("agent_app")

    def checked(body: str) -> plan.Checked:
        cfg = agent_config.parse(f'[apps.a]\nobject = "{obj}"\n{body}'.encode(), str(tmp_path / "agent.toml"))
        return plan.check(cfg, "a")

    def refused(body: str) -> str:
        with pytest.raises(ConfigError) as e:
            checked(body)
        return str(e.value)

    good = checked('events = { events = "struct event" }\n[apps.a.features]\nseq = "enabled"\n')
    assert set(good.features.features) == {"seq", "ppid"}  # from the object's decl tags
    where = f"{tmp_path}/agent.toml"
    assert refused('[apps.a.features]\nsq = "enabled"\n') == (
        f"{where}:4: apps.a.features.sq: agent_app has no feature 'sq'; did you mean 'seq'? (features: ppid, seq)"
    )
    assert refused("constants = { wieght = 2 }\n").startswith(
        f"{where}:3: apps.a.constants.wieght: agent_app has no read-only global 'wieght'; did you mean 'weight'?"
    )
    assert "apps.a.map_policies.sen: agent_app has no map 'sen'; did you mean 'seen'?" in refused(
        'map_policies = { sen = "pinned" }\n'
    )
    assert "map 'seen' is a array, not a ringbuf or perf_event_array" in refused('events = { seen = "" }\n')
    assert f"{where}:3: apps.a.events.events: record type 'struct evnt'" in refused(
        'events = { events = "struct evnt" }\n'
    )
    missing = agent_config.parse(b'[apps.a]\nobject = "nowhere.bpf.o"\n', str(tmp_path / "agent.toml"))
    with pytest.raises(ConfigError, match=r":2: apps.a.object: cannot read the object: cannot read .*nowhere"):
        plan.check(missing, "a")
    no_tags = agent_config.parse(f'[apps.a]\nobject = "{build("attach")}"\n'.encode(), str(tmp_path / "a.toml"))
    with pytest.raises(ConfigError, match=r"declares no features .* set feature_map"):
        plan.check(no_tags, "a")
    (tmp_path / "f.toml").write_text("[features.x]\nhooks = ['nope']\n")
    bad_map = f'[apps.a]\nobject = "{obj}"\nfeature_map = "f.toml"\n'.encode()
    with pytest.raises(
        ConfigError,
        match=r"a.toml:3: apps.a.feature_map: feature map: .*f.toml:1: feature .x. lists unknown hook .nope.",
    ):
        plan.check(agent_config.parse(bad_map, str(tmp_path / "a.toml")), "a")


def test_the_example_in_docs_agent_md_reads() -> None:
    text = (ROOT / "docs" / "agent.md").read_text()
    blocks = re.findall(r"^```toml\n(.*?)^```$", text, re.S | re.M)
    assert blocks
    for block in blocks:
        cfg = agent_config.parse(block.encode(), "/etc/dynbpf/agent.toml")
        assert cfg.apps


def test_docs_deploy_md_shows_the_unit_file_and_a_configmap_that_reads() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    (unit,) = re.findall(r"^```ini\n(.*?)^```$", text, re.S | re.M)
    assert unit == (ROOT / "contrib" / "dynbpf-agent.service").read_text()
    (manifests,) = re.findall(r"^```yaml\n(.*?)^```$", text, re.S | re.M)
    embedded = manifests.split("agent.toml: |\n", 1)[1].split("\n---\n", 1)[0]
    toml_text = "".join(line.removeprefix("    ") + "\n" for line in embedded.splitlines())
    cfg = agent_config.parse(toml_text.encode(), "/etc/dynbpf/agent.toml")
    assert cfg.apps["monitor"].keep_on_exit
    assert cfg.agent.watch_interval == 2.0


def test_ctl_without_an_agent_says_so(tmp_path: Path) -> None:
    import subprocess

    from tests.agent_run import ENV, command

    socket = str(tmp_path / "agent.sock")
    done = subprocess.run(
        command("ctl", "--socket", socket, "status"), env=ENV, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"dynbpf: error: no agent listens on {socket} (is `dynbpf agent` running? --socket or $DYNBPF_SOCKET names "
        "another)\n"
    )
