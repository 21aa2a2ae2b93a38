"""``dynbpf prog list|show|unload``: the programs dynbpf pinned, and every program the kernel has.

A program stays in the kernel while something holds it: an fd of a
running process, a link, a pin. ``unload`` removes dynbpf's holds, the
pins under the pin root (and the pinned links running the program, which
it detaches), then says whether the kernel freed it or who else holds it.
Given the directory ``dynbpf load --pin DIR`` made, it unloads that whole
load: links detached, programs and maps unpinned, the directory removed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import click

from dynbpf._cli.common import failures, json_option, list_command, pin_root_option, print_json, say


@click.group()
def prog() -> None:
    """List, show and unload BPF programs (those dynbpf pinned, or all the kernel's)."""


list_command(
    prog,
    "prog",
    columns=["id", "type", "name", "tag"],
    cells=lambda r: [r["id"], r["type"], r["name"], r["tag"]],
)


@prog.command()
@click.argument("ref", metavar="PROG")
@pin_root_option
@json_option
def show(ref: str, pin_root: str, as_json: bool) -> None:
    """One program in detail: PROG is an id, a pin path, or a name (a pin's under the pin root, or the kernel's)."""
    from dynbpf._cli import objects

    with failures():
        found = objects.resolve("prog", ref, pin_root, option="PROG")
        with found.fd:
            pinned = objects.pinned_at(objects.pins(pin_root), "prog").get(found.id, [])
            if found.path is not None and found.path not in pinned:
                pinned.insert(0, found.path)
            info = objects.describe_prog(found.fd.raw, pinned)
        info["links"] = _links_running(found.id, pin_root)
    if as_json:
        print_json(info)
        return
    say(f"program {info['id']}: {info['name']} ({info['type']})")
    for key in ("tag", "gpl", "loaded_at", "uid", "xlated_bytes", "jited_bytes", "verified_insns", "btf_id"):
        say(f"  {key.replace('_', ' '):<15}{info[key]}")
    say(f"  {'run count':<15}{info['run_cnt']} ({info['run_time_ns']} ns; counted while stats are enabled)")
    say(f"  {'map ids':<15}{', '.join(map(str, info['map_ids'])) or '-'}")
    if any(p != objects.shown_path(p, pin_root) for p in info["pinned"]):
        say(f"  {'pin root':<15}{pin_root}")  # the paths below are relative to it, as in the listings
    for path in info["pinned"] or [None]:
        say(f"  {'pinned':<15}{objects.shown_path(path, pin_root) if path else '-'}")
    for link in info["links"] or [None]:
        say(f"  {'link':<15}{link['id']} {link['description']}" if link else f"  {'link':<15}-")
        for path in link["pinned"] if link else ():
            say(f"  {'':<15}pinned at {objects.shown_path(path, pin_root)}")


def _links_running(prog_id: int, pin_root: str) -> list[dict[str, Any]]:
    from dynbpf._cli import objects

    pinned = objects.pinned_at(objects.pins(pin_root), "link")
    out = []
    for link_id, fd in objects.kernel_objects("link"):
        with fd:
            info = objects.describe_link(fd.raw, pinned.get(link_id, []))
        if info["prog_id"] == prog_id:
            out.append(info)
    return out


@prog.command()
@click.argument("ref", metavar="PROG|DIR")
@pin_root_option
@json_option
def unload(ref: str, pin_root: str, as_json: bool) -> None:
    """Remove dynbpf's pins of a program (detaching the pinned links running it), or everything under DIR.

    PROG is an id, a pin path or a name; DIR a directory `dynbpf load --pin`
    made. The kernel frees a program once nothing holds it; the output says
    whether it did, and what still holds what it did not free.
    """
    with failures():
        report = _unload_dir(os.path.abspath(ref)) if os.path.isdir(ref) else _unload_program(ref, pin_root)
    if as_json:
        print_json(report)
        return
    for link_id in report["detached_links"]:
        say(f"detached link {link_id}")
    if report["removed_dirs"]:
        top = min(report["removed_dirs"], key=len)
        say(f"unpinned {len(report['unpinned'])} objects and removed {top}")
    else:
        for path in report["unpinned"]:
            say(f"unpinned {path}")
    if report["freed"]:
        say(f"the kernel freed {_counted(o['kind'] for o in report['freed'])}")
    for o in report["still_held"]:
        word = {"prog": "program"}.get(o["kind"], o["kind"])
        say(f"{word} {o['id']} is still held by something else (a process's fd, a link, a pin elsewhere)")


def _counted(kinds: Iterable[str]) -> str:
    """``2 programs, 1 link``."""
    counts = Counter(kinds)
    words = {"prog": "program", "map": "map", "link": "link"}
    return ", ".join(f"{n} {words.get(k, k)}{'s' if n > 1 else ''}" for k, n in sorted(counts.items()))


def _unload_program(ref: str, pin_root: str) -> dict[str, Any]:
    from dynbpf._cli import objects
    from dynbpf._cli.common import Failure
    from dynbpf._sys import commands

    found = objects.resolve("prog", ref, pin_root, option="PROG")
    with found.fd:
        info = commands.prog_info(found.fd.raw)
        name = info.name.decode(errors="replace")
    pins = objects.pins(pin_root)
    mine = objects.pinned_at(pins, "prog").get(found.id, [])
    if found.path is not None and found.path not in mine:
        mine.insert(0, found.path)
    links = []
    for pin in pins:
        if pin.kind == "link":
            with commands.obj_get(pin.path) as fd:
                if commands.link_info(fd.raw).prog_id == found.id:
                    links.append(pin)
    if not mine and not links:
        raise Failure(
            f"program {found.id} ({name}) is not pinned under {pin_root}, and no link pinned there runs it: "
            "dynbpf unloads what it pinned; the kernel frees the program when its holders (a running process, "
            "a link, a pin elsewhere) let go"
        )
    detached = _detach_pinned(links)
    unpinned = [*(p.path for p in links), *mine]
    for path in unpinned:
        objects.unpin(path)
    return _report([("prog", found.id), *(("link", p.id) for p in links)], detached, unpinned, [])


def _unload_dir(directory: str) -> dict[str, Any]:
    from dynbpf._cli import objects
    from dynbpf._cli.common import bad_input
    from dynbpf._sys import fs

    if not fs.is_bpffs(directory):
        raise bad_input(f"{directory} is a directory, but not on a BPF filesystem", option="PROG|DIR")
    pins = objects.pins(directory)
    if not pins:
        raise bad_input(f"nothing is pinned under {directory}", option="PROG|DIR")
    links = [p for p in pins if p.kind == "link"]
    detached = _detach_pinned(links)
    for pin in pins:
        objects.unpin(pin.path)
    removed = []
    for here, _, _ in os.walk(directory, topdown=False):
        try:
            os.rmdir(here)  # only empty ones: a file dynbpf did not find (not a BPF object) keeps its directory
        except OSError:
            continue
        removed.append(here)
    tracked = sorted({(p.kind, p.id) for p in pins if p.kind in ("prog", "map", "link")})
    return _report(tracked, detached, [p.path for p in pins], removed)


def _detach_pinned(links: list[Any]) -> list[int]:
    """LINK_DETACH each pinned link whose kind allows it (the hook stops running it even while pinned)."""
    import errno

    from dynbpf._sys import commands
    from dynbpf.errors import SyscallError

    detached = []
    for pin in links:
        with commands.obj_get(pin.path) as fd:
            try:
                commands.link_detach(fd.raw)
            except SyscallError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, 524):  # no detach for this kind: the unpin ends it
                    raise
                continue
        detached.append(pin.id)
    return detached


def _report(tracked: list[Any], detached: list[int], unpinned: list[str], removed_dirs: list[str]) -> dict[str, Any]:
    from dynbpf._cli import objects

    freed, held = objects.gone(tracked)
    return {
        "unpinned": unpinned,
        "detached_links": detached,
        "removed_dirs": removed_dirs,
        "freed": [{"kind": k, "id": i} for k, i in freed],
        "still_held": [{"kind": k, "id": i} for k, i in held],
    }
