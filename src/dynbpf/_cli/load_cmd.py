"""``dynbpf load``: load an object's programs in parallel, attach them, pin what should outlive the command.

The kernel frees a program, link or map when its last holder lets go; the
command's process is the only holder of what it loads, so without
``--pin`` everything goes when it exits, and the command says so. With
``--pin DIR`` every program, link and map is pinned under DIR
(``progs/``, ``links/``, ``maps/``) and stays until unpinned
(``dynbpf prog unload DIR``). Either all of it is done or none: a program
the verifier refuses, an attach or a pin that fails leaves nothing
behind.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from dynbpf._cli.common import PIN_ROOT, bad_input, failures, json_option, note, print_json, print_table, say
from dynbpf._cli.opening import object_options

if TYPE_CHECKING:
    from dynbpf._attach.link import Link
    from dynbpf._cli.opening import Request
    from dynbpf._runtime.collection import Collection


@click.command()
@object_options
@click.option("--attach", is_flag=True, help="Attach each program to the hook its section names.")
@click.option(
    "--pin",
    "pin_dir",
    metavar="DIR",
    help=f"Pin programs, links and maps under DIR on bpffs so they outlive the command (e.g. {PIN_ROOT}/NAME).",
)
@json_option
def load(
    *,
    obj: str,
    programs: tuple[str, ...],
    consts: tuple[str, ...],
    edits: tuple[str, ...],
    workers: int | None,
    attach: bool,
    pin_dir: str | None,
    as_json: bool,
) -> None:
    """Load OBJ's programs (in parallel), optionally attach and pin them; print what was done.

    Without --pin nothing outlives the command: the kernel frees what it
    loaded as it exits. Unknown names and values that do not fit their type
    exit with status 2 before anything is loaded.
    """
    from dynbpf._cli import opening

    with failures():
        req = opening.request(obj, programs, consts, edits, workers)
        pins = _pin_targets(req, pin_dir) if pin_dir is not None else None
        with req.open() as coll:
            report = _load(coll, req, attach=attach, pins=pins, progress=not as_json)
    if as_json:
        print_json(report)  # "kept": false says what the note below says
    else:
        _print(report)


@dataclass(frozen=True, slots=True)
class Pins:
    """Where each program (``prog``), link and map of a load goes: ``targets[kind, name]``, all under ``directory``."""

    directory: str
    targets: dict[tuple[str, str], str]


def _pin_targets(req: Request, pin_dir: str) -> Pins:
    """Where each program, link and map will be pinned; refused now if a path is taken or not on bpffs."""
    from dynbpf._runtime.mapregistry import pin_name
    from dynbpf._sys import fs

    directory = os.path.abspath(pin_dir)
    existing = directory
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not fs.is_bpffs(existing):
        raise bad_input(
            f"{directory} is not on a BPF filesystem ({existing} is not bpffs); pin under {fs.DEFAULT_BPFFS}, "
            f"e.g. {PIN_ROOT}/{req.spec.name}",
            option="--pin",
        )
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise bad_input(f"{directory} exists and is not a directory", option="--pin")
    targets: dict[tuple[str, str], str] = {}
    for name in req.programs:
        targets["prog", name] = fs.pin_path(directory, "progs", name)
        targets["link", name] = fs.pin_path(directory, "links", name)
    for name, spec in req.spec.maps.items():
        if name not in req.map_edits or req.map_edits[name].create:
            targets["map", name] = fs.pin_path(directory, "maps", pin_name(req.spec.name, spec.name))
    taken = [path for path in targets.values() if os.path.lexists(path)]
    if taken:
        raise bad_input(
            f"{taken[0]} exists{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}: {directory} holds an "
            f"earlier load; remove it with `dynbpf prog unload {directory}` or pin elsewhere",
            option="--pin",
        )
    fs.check_pin_root(directory)
    return Pins(directory, targets)


def _load(coll: Collection, req: Request, *, attach: bool, pins: Pins | None, progress: bool) -> dict[str, Any]:
    from dynbpf._cli import opening
    from dynbpf._cli.common import Failure
    from dynbpf._sys import commands

    started = time.monotonic()
    failed = opening.load(coll, req.programs, workers=req.workers, progress=progress)
    if failed:
        raise Failure(opening.failure_report(failed))
    load_ms = opening.elapsed_ms(started)
    links = {name: coll.programs[name].attach() for name in req.programs} if attach else {}
    pinned = _pin(coll, pins, links) if pins is not None else {}
    programs = []
    for name in req.programs:
        program = coll.programs[name]
        link = links.get(name)
        programs.append(
            {
                "name": name,
                "type": _type_name(coll, name),
                "id": program.id,
                "tag": program.tag,
                "verification_ms": round(program.seconds * 1000, 3),
                "pinned": pinned.get(("prog", name)),
                "links": (
                    [
                        {
                            "id": link.id,
                            "kind": link.kind,
                            "description": link.description,
                            "pinned": pinned.get(("link", name)),
                        }
                    ]
                    if link is not None
                    else []
                ),
            }
        )
    maps = []
    for name in coll.spec.maps:
        if coll.map_exists(name):
            info = commands.map_info(coll.map_fd_number(name))
            maps.append(
                {"name": name, "type": _map_type(info.type), "id": int(info.id), "pinned": pinned.get(("map", name))}
            )
    return {
        "object": coll.spec.name,
        "path": os.path.abspath(req.path),
        "workers": opening.default_workers(req.workers),
        "load_ms": load_ms,
        "programs": programs,
        "maps": maps,
        "pin_dir": pins.directory if pins is not None else None,
        "kept": pins is not None,
    }


def _pin(coll: Collection, pins: Pins, links: dict[str, Link]) -> dict[tuple[str, str], str]:
    """Pin everything; on any failure unpin what this did (and the directories it made) and raise."""
    from dynbpf._sys import commands, fs

    directory = pins.directory
    made_root = not os.path.lexists(directory)
    done: dict[tuple[str, str], str] = {}
    try:
        for (kind, name), path in pins.targets.items():
            if kind == "prog":
                coll.programs[name].pin(path)
            elif kind == "link":
                if name not in links:
                    continue
                links[name].pin(path)
            else:
                fs.make_pin_dirs(path)
                commands.obj_pin(coll.map_fd_number(name), path)
            done[kind, name] = path
    except BaseException:
        for path in done.values():
            _remove(path)
        for sub in ("progs", "links", "maps", ""):
            _rmdir(os.path.join(directory, sub) if sub else directory, only_if=sub != "" or made_root)
        raise
    for sub in ("progs", "links", "maps"):
        _rmdir(os.path.join(directory, sub), only_if=True)  # one left empty (no links without --attach)
    return done


def _remove(path: str) -> None:
    import shutil

    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)  # a link group's pins
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _rmdir(path: str, *, only_if: bool) -> None:
    if only_if:
        with contextlib.suppress(OSError):  # not empty (pins of others), or never made
            os.rmdir(path)


def _type_name(coll: Collection, program: str) -> str:
    from dynbpf._sys.constants import ProgType, type_name

    return type_name(ProgType, coll.spec.programs[program].kind.prog_type)


def _map_type(value: int) -> str:
    from dynbpf._sys.constants import MapType, type_name

    return type_name(MapType, value)


def _print(report: dict[str, Any]) -> None:
    attached = sum(bool(p["links"]) for p in report["programs"])
    what = f"{report['object']}: loaded {len(report['programs'])} programs in {report['load_ms']:.1f} ms"
    what += f" ({report['workers']} workers)"
    if attached:
        what += f", attached {attached}"
    say(what)
    rows = []
    for p in report["programs"]:
        link = p["links"][0]["description"] if p["links"] else None
        rows.append([p["name"], p["type"], p["id"], f"{p['verification_ms']:.1f} ms", link])
    print_table(["program", "type", "id", "verified", "attached to"], rows, wrap=["attached to"])
    say("")
    print_table(["map", "type", "id"], [[m["name"], m["type"], m["id"]] for m in report["maps"]])
    if report["kept"]:
        counts = {kind: 0 for kind in ("programs", "links", "maps")}
        counts["programs"] = sum(p["pinned"] is not None for p in report["programs"])
        counts["links"] = sum(bool(p["links"]) and p["links"][0]["pinned"] is not None for p in report["programs"])
        counts["maps"] = sum(m["pinned"] is not None for m in report["maps"])
        say("")
        say(f"pinned under {report['pin_dir']}:")
        say(
            f"  {counts['programs']} programs (progs/), {counts['links']} links (links/), {counts['maps']} maps (maps/)"
        )
        say(f"they stay until `dynbpf prog unload {report['pin_dir']}`")
    else:
        note(
            "nothing was pinned: the kernel frees these programs, links and maps as this command exits "
            "(--pin DIR keeps them)"
        )
