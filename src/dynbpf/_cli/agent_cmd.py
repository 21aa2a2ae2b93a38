"""``dynbpf agent``: run the applications a configuration file names until SIGTERM (docs/agent.md)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from dynbpf._agent import DEFAULT_CONFIG
from dynbpf._cli.common import json_option

if TYPE_CHECKING:
    from dynbpf._agent.plan import Checked


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="The configuration file (TOML); re-read on SIGHUP and when it changes.",
)
@click.option("--socket", "socket_path", default=None, help="The control socket (overrides [agent] socket).")
@click.option("--check", is_flag=True, help="Check the configuration against its objects and exit (nothing loads).")
@json_option
def agent(config_path: str, socket_path: str | None, check: bool, as_json: bool) -> None:
    """Run BPF applications from a configuration file, controlled through a unix socket (`dynbpf ctl`).

    ``-j`` goes with ``--check``: what was checked, as JSON (the agent's own log lines are JSON already).
    """
    if as_json and not check:
        raise click.UsageError("-j/--json goes with --check (the running agent logs JSON lines anyway)")
    if check:
        from dynbpf._agent import config, plan

        cfg = config.load(config_path)
        checked = [plan.check(cfg, name) for name in cfg.apps]
        if as_json:
            click.echo(json.dumps({"config": config_path, "apps": {c.config.name: _checked(c) for c in checked}}))
        else:
            click.echo(f"{config_path}: {len(cfg.apps)} application(s), configuration OK")
        return
    from dynbpf._agent.service import run

    sys.exit(run(config_path, socket_path=socket_path))


def _checked(checked: Checked) -> dict[str, Any]:
    """One application as ``--check`` found it: its object, programs and maps, and its features' states."""
    from dynbpf._features.application import FeatureState

    return {
        "object": checked.config.object,
        "programs": sorted(checked.spec.programs),
        "maps": sorted(checked.spec.maps),
        "features": {  # a feature the configuration leaves out is disabled (as Application starts them)
            name: str(checked.config.features.get(name, FeatureState.DISABLED))
            for name in sorted(checked.features.features)
        },
    }
