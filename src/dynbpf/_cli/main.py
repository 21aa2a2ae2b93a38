"""``dynbpf`` command line: one subcommand per job, built on the public API only."""

from __future__ import annotations

import json
import os
import sys

import click

import dynbpf
from dynbpf._cli import demo_cmd, features_cmd, link_cmd, load_cmd, map_cmd, prog_cmd, run_cmd
from dynbpf._cli.agent_cmd import agent
from dynbpf._cli.common import json_option
from dynbpf._cli.ctl_cmd import ctl
from dynbpf.errors import DynbpfError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(dynbpf.__version__, prog_name="dynbpf")
def cli() -> None:
    """dynbpf: load, attach and manage BPF programs one at a time, in parallel, on demand."""


@cli.command()
@json_option
@click.option("--helpers", is_flag=True, help="List helper support per program type in the table.")
@click.option("--no-helpers", is_flag=True, help="Skip the (program type, helper) matrix: a much faster report.")
def probe(as_json: bool, helpers: bool, no_helpers: bool) -> None:
    """Report what the running kernel supports, and how each answer was decided."""
    from dynbpf._cli.probe_view import render
    from dynbpf._probes import collect

    report = collect(helpers=not no_helpers)
    unprivileged = os.geteuid() != 0
    if unprivileged:  # every "no" below may mean "not allowed", not "not supported": say so once, first
        click.echo(
            f"dynbpf: not running as root (uid {os.geteuid()}): probes that need CAP_BPF, CAP_PERFMON or "
            "CAP_NET_ADMIN answer no for lack of privilege, not of kernel support; run as root to probe the kernel",
            err=True,
        )
    if as_json:
        json.dump({**report.to_json(), "privileged": not unprivileged}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report, show_helpers=helpers)


@cli.command()
@click.argument("obj", type=click.Path(dir_okay=False, path_type=str))
@json_option
@click.option("--disasm", "program", metavar="PROG", help="Disassemble one program (with the subprograms it calls).")
def inspect(obj: str, as_json: bool, program: str | None) -> None:
    """Show what a BPF object contains: programs, maps, global variables, externs."""
    from dynbpf._cli.inspect_view import disassembly, render, summary

    spec = dynbpf.read(obj)
    if program is not None:
        text = disassembly(spec, program)
        if as_json:
            json.dump({"program": program, "lines": text.splitlines()}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            click.echo(text)
    elif as_json:
        json.dump(summary(spec), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(summary(spec))


cli.add_command(load_cmd.load)
cli.add_command(run_cmd.run)
cli.add_command(features_cmd.features)
cli.add_command(prog_cmd.prog)
cli.add_command(map_cmd.map_group)
cli.add_command(link_cmd.link)
cli.add_command(agent)
cli.add_command(ctl)
cli.add_command(demo_cmd.demo)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except DynbpfError as e:
        click.echo(f"dynbpf: error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
