"""``dynbpf agent``: run the applications a configuration file names until SIGTERM (docs/agent.md)."""

from __future__ import annotations

import sys

import click

from dynbpf._agent import DEFAULT_CONFIG


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
def agent(config_path: str, socket_path: str | None, check: bool) -> None:
    """Run BPF applications from a configuration file, controlled through a unix socket (`dynbpf ctl`)."""
    if check:
        from dynbpf._agent import config, plan

        cfg = config.load(config_path)
        for name in cfg.apps:
            plan.check(cfg, name)
        click.echo(f"{config_path}: {len(cfg.apps)} application(s), configuration OK")
        return
    from dynbpf._agent.service import run

    sys.exit(run(config_path, socket_path=socket_path))
