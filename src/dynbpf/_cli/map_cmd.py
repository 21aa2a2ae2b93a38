"""``dynbpf map list|dump|update|pin``: maps dynbpf pinned and every map the kernel has, read and written by type.

Keys and values are decoded with the BTF the map's creator gave the kernel
(dynbpf and libbpf give it for maps declared with ``__type``), so a map
found by id or pin reads as typed records; a map without BTF reads as hex
bytes. ``update`` reads KEY and VALUE as those types (see
``dynbpf._cli.values``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from dynbpf._cli.common import failures, json_option, list_command, pin_root_option, print_json, say

if TYPE_CHECKING:
    from dynbpf._maps.map import Map


@click.group("map")
def map_group() -> None:
    """List, dump, update and pin BPF maps (those dynbpf pinned, or all the kernel's)."""


list_command(
    map_group,
    "map",
    columns=["id", "type", "name", "max"],
    cells=lambda r: [r["id"], r["type"], r["name"], r["max_entries"]],
)


@map_group.command()
@click.argument("ref", metavar="MAP")
@pin_root_option
@click.option(
    "--hist",
    type=click.Choice(["log2", "linear"]),
    help="Print the map as the histogram(s) it holds (slot -> count; see docs/cli.md).",
)
@click.option("--step", type=click.IntRange(min=1), default=1, show_default=True, help="A linear histogram's step.")
@click.option("--unit", default="value", show_default=True, help="What a histogram counts, for its header.")
@json_option
def dump(*, ref: str, pin_root: str, hist: str | None, step: int, unit: str, as_json: bool) -> None:
    """Every entry of MAP (an id, a pin path, or a name), decoded with the map's BTF."""
    from dynbpf._cli import objects
    from dynbpf._tools.plain import plain

    with failures():
        found = objects.resolve("map", ref, pin_root, option="MAP")
        with found.fd:
            view = _view(found.fd.raw)
            if hist is not None:
                _print_histograms(view, hist, step, unit, as_json)
                return
            entries = [{"key": plain(k), "value": plain(v)} for k, v in view.items()]
    if as_json:
        print_json(entries)
        return
    if not entries:
        say(f"map {view.name} ({view.id}) is empty")
    for entry in entries:
        say(f"{_text(entry['key'])}: {_text(entry['value'])}")


def _print_histograms(view: Map, kind: str, step: int, unit: str, as_json: bool) -> None:
    from dynbpf._tools.histogram import Histogram

    try:
        shown = Histogram.sections_from_map(view, kind="linear" if kind == "linear" else "log2", step=step, unit=unit)
    except ValueError as e:
        raise click.UsageError(f"map {view.name}: {e}") from None
    if as_json:
        print_json([h.as_dict() for h in shown.values()])
        return
    from dynbpf._cli.common import console

    width = console().width
    say("\n\n".join(h.render(width=width) for h in shown.values()))


def _view(fd: int) -> Map:
    from dynbpf._maps.map import Map

    return Map.with_kernel_btf(fd)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@map_group.command()
@click.argument("ref", metavar="MAP")
@click.argument("key")
@click.argument("value")
@pin_root_option
@click.option(
    "--flag",
    type=click.Choice(["any", "noexist", "exist"]),
    default="any",
    show_default=True,
    help="Create or replace (any), only create (noexist), only replace (exist).",
)
@json_option
def update(*, ref: str, key: str, value: str, pin_root: str, flag: str, as_json: bool) -> None:
    """Set MAP's entry KEY to VALUE, both read as the map's key and value types.

    Integers, bools, enumerator names, text for char arrays, JSON for structs
    and arrays ('{"level": 3, "on": true}'). A per-CPU map gets VALUE on every CPU.
    """
    from dynbpf._cli import objects
    from dynbpf._cli.common import bad_input
    from dynbpf._cli.values import ValueSyntaxError, parse
    from dynbpf._sys.constants import UpdateFlags
    from dynbpf._tools.plain import plain

    with failures():
        found = objects.resolve("map", ref, pin_root, option="MAP")
        with found.fd:
            view = _view(found.fd.raw)
            try:
                k = parse(view.key, key, what="key")
            except ValueSyntaxError as e:
                raise bad_input(f"map {view.name}: {e}", option="KEY") from None
            try:
                v = parse(view.value, value, what="value")
            except ValueSyntaxError as e:
                raise bad_input(f"map {view.name}: {e}", option="VALUE") from None
            view.set(k, [v] * view.cpus if view.per_cpu else v, flags=UpdateFlags[flag.upper()])
            now = view[k]
    report = {"map": view.name, "id": view.id, "key": plain(k), "value": plain(now)}
    if as_json:
        print_json(report)
    else:
        say(f"map {view.name} ({view.id}): {_text(report['key'])} = {_text(report['value'])}")


@map_group.command()
@click.argument("ref", metavar="MAP")
@click.argument("path")
@pin_root_option
@json_option
def pin(ref: str, path: str, pin_root: str, as_json: bool) -> None:
    """Pin MAP (an id, a pin path, or a name) at PATH on bpffs, so it outlives its other holders."""
    import os

    from dynbpf._cli import objects
    from dynbpf._sys import commands, fs

    target = os.path.abspath(path)
    with failures():
        found = objects.resolve("map", ref, pin_root, option="MAP")
        with found.fd:
            fs.make_pin_dirs(target)
            commands.obj_pin(found.fd.raw, target)
            info = objects.describe_map(found.fd.raw, [target])
    if as_json:
        print_json(info)
    else:
        say(f"map {info['name']} ({info['id']}) pinned at {target}")
