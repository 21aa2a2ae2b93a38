"""``keep_on_exit``: what runs stays attached while the agent restarts.

This is the seam for restart adoption. Today an exiting agent pins each
link of its application under ``<pin_root>/kept/links/``, so the kernel
keeps running those programs (with the maps they hold) after the process
is gone; the next agent loads and attaches its own programs, and only then
lets the kept links go (:func:`release`): make before break across the
restart, no moment without the hooks. Events are counted in maps the new
agent reuses when those maps are pinned (policy ``pinned``).

What adoption will add (docs/agent.md, "Restarts"): taking the kept
programs and links over instead of loading new ones, once each is checked
to be the program the new agent would load (its tag) with the maps it
expects. :func:`keep` and :func:`release` are where it plugs in.
"""

from __future__ import annotations

import logging
import os
import stat

from dynbpf._attach.link import Link
from dynbpf._runtime.collection import Collection
from dynbpf._sys import fs
from dynbpf.errors import DynbpfError

log = logging.getLogger("dynbpf.agent")

KEPT = ("kept", "links")


def kept_dir(pin_root: str) -> str:
    return fs.pin_path(pin_root, *KEPT)


def keep(collection: Collection, pin_root: str) -> list[str]:
    """Pin every live link of ``collection``'s programs under the kept directory; returns the pins made."""
    pins = []
    for name, program in collection.programs.items():
        for i, link in enumerate(program.links):
            path = fs.pin_path(kept_dir(pin_root), name if i == 0 else f"{name}.{i}")
            try:
                link.pin(path)
            except DynbpfError as e:  # this link then stops with the agent; the others are kept
                log.error("link not kept", extra={"fields": {"program": name, "path": path, "error": str(e)}})
                continue
            pins.append(path)
    log.info("links kept for the next agent", extra={"fields": {"pin_root": pin_root, "links": len(pins)}})
    return pins


def release(pin_root: str) -> int:
    """Let go of the links a previous agent kept under ``pin_root``; returns how many there were.

    Called once this agent's own programs run. A pin that is not a link,
    or that another user made, is left alone and logged.
    """
    where = kept_dir(pin_root)
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        return 0
    released = 0
    for name in names:
        path = os.path.join(where, name)
        st = os.lstat(path)
        if st.st_uid not in (0, os.geteuid()) or stat.S_ISLNK(st.st_mode):
            log.warning("kept pin left alone", extra={"fields": {"path": path, "uid": st.st_uid}})
            continue
        try:
            link = Link.from_pin(path)
        except DynbpfError as e:
            log.warning("kept pin left alone", extra={"fields": {"path": path, "error": str(e)}})
            continue
        link.unpin()
        link.detach()
        released += 1
    for directory in (where, os.path.dirname(where)):
        try:
            os.rmdir(directory)
        except OSError:
            break  # not empty: something else lives there
    if released:
        fields = {"pin_root": pin_root, "links": released}
        log.info("links kept by the previous agent released", extra={"fields": fields})
    return released
