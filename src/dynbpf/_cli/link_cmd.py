"""``dynbpf link list|detach``: the links dynbpf pinned, and every link the kernel has.

``detach`` stops the hook running the program: BPF_LINK_DETACH where the
link's kind has it (xdp, tcx, cgroup, netns, netfilter, struct_ops...; the
link object lives on, defunct, until its holders let go), and for every
kind the link's pins under the pin root are removed, which ends a link
nothing else holds (tracepoints, kprobes, raw tracepoints, tracing).
"""

from __future__ import annotations

import errno
from typing import Any

import click

from dynbpf._cli.common import failures, json_option, list_command, pin_root_option, print_json, say


@click.group()
def link() -> None:
    """List and detach BPF links (those dynbpf pinned, or all the kernel's)."""


list_command(
    link,
    "link",
    columns=["id", "prog", "hook"],
    cells=lambda r: [r["id"], r["prog_id"], r["description"]],
    wrap=["hook"],
)


@link.command()
@click.argument("ref", metavar="LINK")
@pin_root_option
@json_option
def detach(ref: str, pin_root: str, as_json: bool) -> None:
    """Detach LINK (an id, a pin path, or a pin's name under the pin root) and remove its pins there."""
    from dynbpf._cli import objects
    from dynbpf._cli.common import Failure
    from dynbpf._sys import commands
    from dynbpf.errors import SyscallError

    with failures():
        found = objects.resolve("link", ref, pin_root, option="LINK")
        with found.fd:
            info = objects.describe_link(found.fd.raw, [])
            try:
                commands.link_detach(found.fd.raw)
                detached = True
            except SyscallError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, 524):
                    raise
                detached = False  # this kind has no BPF_LINK_DETACH: removing its pins is what ends it
        pins = objects.pinned_at(objects.pins(pin_root), "link").get(found.id, [])
        if found.path is not None and found.path not in pins:
            pins.insert(0, found.path)
        if not detached and not pins:
            raise Failure(
                f"link {found.id} ({info['description']}) is a kind the kernel cannot detach by request, and it is "
                f"not pinned under {pin_root}: it ends when the process holding it closes it"
            )
        for path in pins:
            objects.unpin(path)
        freed, _ = objects.gone([("link", found.id)])
    report: dict[str, Any] = {
        "id": found.id,
        "description": info["description"],
        "prog_id": info["prog_id"],
        "detached": detached,
        "unpinned": pins,
        "freed": bool(freed),
    }
    if as_json:
        print_json(report)
        return
    what = f"link {found.id} ({info['description']}, program {info['prog_id']})"
    if detached:
        say(f"{what} detached")
    elif freed:
        say(f"{what} ended: its last holder was the pin")
    else:
        say(f"{what} is still held by something outside {pin_root}, so its hook still runs the program")
    for path in pins:
        say(f"unpinned {path}")
