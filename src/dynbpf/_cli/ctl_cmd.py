"""``dynbpf ctl``: the agent's client, one subcommand per API route (docs/agent.md, "dynbpf ctl").

``-j/--json`` prints the agent's JSON answer as it is; otherwise a few
readable lines or tables. A refusal (no agent, a socket this user may not
open, the agent's own error) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from dynbpf._agent import DEFAULT_SOCKET, SOCKET_ENV
from dynbpf._cli.common import print_table

if TYPE_CHECKING:
    from dynbpf._agent.client import Client

STATES = ("enabled", "paused", "disabled")


@dataclass(slots=True)
class _Ctl:
    socket: str
    json: bool
    wait: float = 0.0


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-j`` after the subcommand too (``dynbpf ctl status -j``), as well as before it."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(_Ctl).json = True

    return click.option(
        "-j", "--json", "_json", is_flag=True, expose_value=False, callback=set_json, help="Print JSON."
    )(fn)


@click.group()
@click.option(
    "--socket",
    envvar=SOCKET_ENV,
    default=DEFAULT_SOCKET,
    show_default=True,
    help=f"The agent's control socket (also ${SOCKET_ENV}).",
)
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the agent's JSON answers.")
@click.option(
    "--wait",
    default=0.0,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Wait up to SECONDS for an agent that is starting to answer (default: fail at once).",
)
@click.pass_context
def ctl(ctx: click.Context, socket: str, as_json: bool, wait: float) -> None:
    """Talk to a running `dynbpf agent`: status, features, programs, maps, events."""
    ctx.obj = _Ctl(socket, as_json, wait)


async def _ready(c: Client, ctx: _Ctl) -> None:
    if ctx.wait:
        await c.wait(ctx.wait)


def _call(method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None) -> Any:
    from dynbpf._agent import client

    ctx = click.get_current_context().find_object(_Ctl)
    assert ctx is not None

    async def call(c: client.Client) -> Any:
        await _ready(c, ctx)
        return await c.call(method, path, body, params)

    return client.run(ctx.socket, call)


def _json_wanted() -> bool:
    ctx = click.get_current_context().find_object(_Ctl)
    return ctx is not None and ctx.json


def _emit(value: Any, render: Callable[[Any], None]) -> None:
    if _json_wanted():
        click.echo(json.dumps(value, indent=2, default=str))
    else:
        render(value)


def _table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    print_table(tuple(columns), (tuple(row) for row in rows), wrap=tuple(columns), title=title)


# --- status ------------------------------------------------------------------------------------


@ctl.command()
@click.argument("app", required=False)
@_json_option
def status(app: str | None) -> None:
    """The agent and its applications: features, hooks and the variant each runs, programs."""
    if app is None:
        _emit(_call("GET", "/v1/status"), _render_status)
    else:
        _emit(_call("GET", f"/v1/apps/{app}"), lambda s: _render_app(app, s))


def _render_status(status: dict[str, Any]) -> None:
    agent = status["agent"]
    reloads = ", ".join(f"{k} {v}" for k, v in agent["reloads"].items())
    click.echo(f"agent pid {agent['pid']}  config {agent['config']}  reloads: {reloads}")
    if agent.get("last_reload") and agent["last_reload"].get("error"):
        click.echo(f"last reload refused: {agent['last_reload']['error']}")
    for name, app in status["apps"].items():
        _render_app(name, app)


def _render_app(name: str, app: dict[str, Any]) -> None:
    click.echo(f"\n{name}: {app['object']}  open {app['open_seconds']:.3f} s  last apply {app['apply_seconds']:.3f} s")
    adoption = app.get("adoption")
    if adoption and adoption["found"]:
        click.echo(
            f"taken over from {adoption['root']}: {len(adoption['programs'])} programs and {len(adoption['maps'])} "
            f"maps adopted, {len(adoption['replaced'])} replaced, {len(adoption['discarded'])} pins discarded"
        )
        if adoption["refused"]:
            click.echo(f"  nothing adopted (started afresh): {adoption['refused']}")
        for program, why in adoption["not_adopted"].items():
            click.echo(f"  {program} not adopted: {why}")
    _table(
        "features",
        ("feature", "state", "configured", "hooks"),
        ((f, s["state"], s["configured"], ", ".join(s["hooks"])) for f, s in app["features"].items()),
    )
    _table(
        "hooks",
        ("hook", "state", "variant", "programs"),
        ((h, s["state"], s["variant"], ", ".join(s["programs"])) for h, s in app["hooks"].items()),
    )


# --- features ----------------------------------------------------------------------------------


def _feature_command(state: str) -> Callable[..., None]:
    @click.argument("app")
    @click.argument("features", nargs=-1, required=True)
    @_json_option
    def command(app: str, features: tuple[str, ...]) -> None:
        answer = _call("POST", f"/v1/apps/{app}/features", {"features": dict.fromkeys(features, state)})

        def render(a: dict[str, Any]) -> None:
            for hook, decisions in a["decisions"].items():
                for d in decisions:
                    click.echo(f"{hook}: {d['variant']} {d['outcome']}: {d['reason']}")
            click.echo(f"{app}: {', '.join(features)} {state}")

        _emit(answer, render)

    command.__doc__ = f"Make FEATURES of APP {state} (one atomic apply; the other features stay as they are)."
    return command


for _state in STATES:
    ctl.command(name={"enabled": "enable", "paused": "pause", "disabled": "disable"}[_state])(_feature_command(_state))


# --- changes -----------------------------------------------------------------------------------


@ctl.command()
@_json_option
def reload() -> None:
    """Read the configuration file again and apply it (what SIGHUP does)."""

    def render(a: dict[str, Any]) -> None:
        moved = ", ".join(f"{k}: {', '.join(a[k])}" for k in ("started", "changed", "stopped") if a[k])
        click.echo(f"configuration {a['result']}" + (f" ({moved})" if moved else ""))

    _emit(_call("POST", "/v1/reload"), render)


@ctl.command("reload-program")
@click.argument("app")
@click.argument("program")
@_json_option
def reload_program(app: str, program: str) -> None:
    """Load PROGRAM of APP again (a new kernel program, links moved to it, make before break)."""
    answer = _call("POST", f"/v1/apps/{app}/programs/{program}/reload")
    _emit(answer, lambda a: click.echo(f"{app}/{program}: program id {a['old_id']} -> {a['id']}"))


@ctl.command("set-constants")
@click.argument("app")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@_json_option
def set_constants(app: str, assignments: tuple[str, ...]) -> None:
    """Give APP's .rodata constants new values (VALUE as JSON, else a string); programs reload in place."""
    values: dict[str, Any] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="assignments")
        try:
            values[name] = json.loads(value)
        except json.JSONDecodeError:
            values[name] = value
    answer = _call("POST", f"/v1/apps/{app}/constants", {"constants": values})
    _emit(answer, lambda a: click.echo(f"{app}: constants set; reloaded {', '.join(a['reloaded']) or 'nothing'}"))


@ctl.command()
@click.argument("app")
@click.argument("map_name", metavar="MAP")
@click.argument("path")
@_json_option
def pin(app: str, map_name: str, path: str) -> None:
    """Pin MAP of APP at PATH, below the application's pin_root (relative to it, or absolute inside it)."""
    answer = _call("POST", f"/v1/apps/{app}/maps/{map_name}/pin", {"path": path})
    _emit(answer, lambda a: click.echo(f"{app}/{map_name} pinned at {a['path']}"))


# --- listings ----------------------------------------------------------------------------------


#: each listing: its columns, each an API field (shown empty where an entry lacks it)
LISTINGS = {
    "programs": (
        "APP's programs: hook, state, kernel id, runs (while the agent collects statistics).",
        {"name": "name", "hook": "hook", "state": "state", "id": "id", "links": "links"}
        | {"verify ms": "verification_ms", "runs": "run_cnt"},
    ),
    "maps": (
        "APP's maps: type, size, policy, whether they exist now, kernel id, pin.",
        {"name": "name", "type": "type", "max": "max_entries", "policy": "policy", "exists": "exists"}
        | {"id": "id", "pin": "pin"},
    ),
    "links": (
        "APP's links: program, kernel link id, the hook they attach to.",
        {"program": "program", "id": "id", "program id": "program_id", "hook": "description"},
    ),
}


def _listing(what: str, doc: str, columns: dict[str, str]) -> Callable[..., None]:
    @click.argument("app")
    @_json_option
    def command(app: str) -> None:
        rows = _call("GET", f"/v1/apps/{app}/{what}")
        _emit(rows, lambda r: _table(f"{app}: {what}", columns, ([e.get(f) for f in columns.values()] for e in r)))

    command.__doc__ = doc
    return command


for _what, (_doc, _columns) in LISTINGS.items():
    ctl.command(name=_what)(_listing(_what, _doc, _columns))


@ctl.command("map")
@click.argument("app")
@click.argument("map_name", metavar="MAP")
@click.option("--limit", default=100, show_default=True, help="Entries at most (the agent caps it at 10000).")
@_json_option
def read_map(app: str, map_name: str, limit: int) -> None:
    """Entries of MAP of APP, decoded with the map's BTF types."""
    answer = _call("GET", f"/v1/apps/{app}/maps/{map_name}", params={"limit": str(limit)})

    def render(a: dict[str, Any]) -> None:
        for entry in a["entries"]:
            click.echo(f"{json.dumps(entry['key'])}: {json.dumps(entry['value'])}")
        if a["truncated"]:
            click.echo(f"... (more than {limit} entries; --limit)")

    _emit(answer, render)


@ctl.command()
@click.argument("app")
@click.option("--map", "map_names", multiple=True, help="Only this event map (repeatable); default: all APP reads.")
@click.option("-n", "--count", default=0, help="Stop after this many events (0: until interrupted).")
@_json_option
def events(app: str, map_names: tuple[str, ...], count: int) -> None:
    """Follow APP's events as they come (one JSON object per line with -j)."""
    from dynbpf._agent import client

    ctx = click.get_current_context().find_object(_Ctl)
    assert ctx is not None
    params = [("limit", str(count)), *(("map", m) for m in map_names)]

    async def follow(c: client.Client) -> None:
        await _ready(c, ctx)
        async for event in c.stream(f"/v1/apps/{app}/events", params):
            if ctx.json:
                click.echo(json.dumps(event))
            elif "end" in event:
                click.echo(f"(stream ended: {event['end']})", err=True)
            else:
                record = event["record"]
                shown = " ".join(f"{k}={v}" for k, v in record.items()) if isinstance(record, dict) else record
                click.echo(f"{event['map']}: {shown}")

    with contextlib.suppress(KeyboardInterrupt):
        client.run(ctx.socket, follow)


@ctl.command()
@_json_option
def metrics() -> None:
    """The agent's metrics, in Prometheus' text format (-j: the same samples as JSON)."""
    text = _call("GET", "/metrics")
    if _json_wanted():  # parsed only when asked for
        _emit(_metric_families(text), click.echo)
    else:
        click.echo(text, nl=False)


def _metric_families(text: str) -> list[dict[str, Any]]:
    """Prometheus' text format as JSON: each family with its samples, read by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        {
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
        }
        for family in text_string_to_metric_families(text)
    ]
