"""What an earlier agent left running under an application's kept root, taken over when it starts.

An application with a ``pin_root`` has a root of its own for restarts,
``<pin_root>/kept/<app>``, laid out by the library (``Collection.pin``:
programs, links, maps and a manifest). With ``keep_on_exit`` the agent
pins the application there after each change and when it stops
(``close(keep_pinned=True)``), so the kernel runs it on while no agent
does. Every start opens the object with ``adopt=`` that root
(docs/runtime.md, "Restart without a blind window"): each pinned program
that is the one this agent would load (the kernel's tag, its type, its
maps) and each map that is the object's are taken over as they run: the
same kernel objects, no verification, no link touched.

What is not adopted is replaced, make before break, and reported (a log
line each, and ``adoption`` in the application's status), never dropped
unsaid:

- a program the object changed: ``replace_pinned`` loads this object's and
  moves each link onto it (in place where the kernel can) before the
  features are applied, which then run it as they run adopted ones;
- a map that differs (a changed constant changes ``.rodata``): nothing is
  adopted; the application opens afresh beside what runs, and the earlier
  pins go once its features are applied (``discard_root``);
- what is left once the features are applied (programs the object lacks,
  links that could not move, maps it does not create): discarded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from dynbpf._agent.config import AppConfig
from dynbpf._agent.plan import Checked
from dynbpf._runtime.adopt import discard_root
from dynbpf._runtime.collection import Collection
from dynbpf._runtime.pins import bpffs_name, read_manifest
from dynbpf._sys import fs
from dynbpf.errors import DynbpfError, PinError

log = logging.getLogger("dynbpf.agent")

KEPT = "kept"


def kept_dir(pin_root: str) -> str:
    """Where the kept roots of the applications pinning under ``pin_root`` live."""
    return fs.pin_path(pin_root, KEPT)


def root_of(config: AppConfig) -> str | None:
    """The application's kept root; None without a ``pin_root``."""
    if config.pin_root is None:
        return None
    return fs.pin_path(kept_dir(config.pin_root), bpffs_name(config.name))


def tidy(pin_root: str | None) -> None:
    """Remove ``<pin_root>/kept`` once no application keeps anything there."""
    if pin_root is not None:
        with contextlib.suppress(OSError):
            os.rmdir(kept_dir(pin_root))


@dataclass
class Takeover:
    """What a start found under the kept root and did with it (the ``adoption`` of the application's status)."""

    app: str
    root: str
    found: bool = False  # an earlier agent's pins were there
    object: str | None = None  # the object that pinned them
    programs: tuple[str, ...] = ()  # adopted, as they ran
    maps: tuple[str, ...] = ()  # adopted, contents and all
    not_adopted: dict[str, str] = field(default_factory=dict)  # pinned programs not adopted, and why
    replaced: tuple[str, ...] = ()  # loaded afresh in place of those, their links moved onto them
    failed: dict[str, str] = field(default_factory=dict)  # not adopted and not replaced: why the replacement failed
    refused: str | None = None  # why nothing was adopted (a map differed): the application started afresh
    ignored: dict[str, str] = field(default_factory=dict)  # other pins there, and what they are
    discarded: tuple[str, ...] = ()  # pins removed once the application's features ran
    stale: tuple[str, ...] = ()  # pins the manifest lists that were gone
    error: str | None = None  # what kept the leftovers from being discarded

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["app"]
        return out

    # --- the steps of a start (RunningApp.start) --------------------------------------------

    def replace(self, collection: Collection) -> None:
        """Load this object's version of each program not adopted and move the earlier one's links onto it."""
        names = [n for n in self.not_adopted if n in collection.programs and n not in self.programs]
        if not names:
            return
        failures = collection.replace_pinned(names)
        adoption = collection.adoption
        self.replaced = tuple(n for n in (adoption.replaced if adoption is not None else ()) if n not in failures)
        self.failed = {name: str(e) for name, e in failures.items()}

    def finish(self, collection: Collection) -> None:
        """Once the features run: remove what is left of the earlier agent, and say what happened to it."""
        try:
            if self.refused is not None:
                self.discarded = discard_root(self.root)
            elif self.not_adopted or self.ignored:
                self.discarded = collection.discard_pinned()
        except (DynbpfError, OSError) as e:
            self.error = str(e)
            log.error(
                "pins of the earlier agent not discarded: they run on beside this one",
                extra={"fields": {"app": self.app, "root": self.root, "error": self.error}},
            )
        for program, reason in self.not_adopted.items():
            if program in self.replaced:
                outcome = "replaced: loaded afresh, its links moved onto the new program"
            elif program in self.failed:
                outcome = f"not replaced ({self.failed[program]}); its pins discarded once the features ran"
            else:
                outcome = "its pins discarded once the features ran"
            fields = {"app": self.app, "program": program, "reason": reason, "outcome": outcome}
            log.warning("pinned program not adopted", extra={"fields": fields})


def open_collection(checked: Checked, *, adopt: bool) -> tuple[Collection, Takeover | None]:
    """Open the application's object, adopting what its kept root holds unless ``adopt`` is false.

    A root whose maps are not the object's is not adopted at all: the
    collection opens afresh, and :meth:`Takeover.finish` ends the earlier
    application once this one runs. A root holding pins dynbpf did not make
    (no manifest) is refused: nothing there is touched.
    """
    config = checked.config
    root = root_of(config) if adopt else None

    def make(where: str | None) -> Collection:
        return Collection(
            checked.spec,
            constants=config.constants,
            map_policy=config.map_policy,
            map_policies=config.map_policies,
            map_edits=config.map_edits,
            pin_root=config.pin_root,
            cache=config.cache,
            adopt=where,
        )

    if root is None:
        return make(None), None
    try:
        collection = make(root)
    except PinError as e:
        manifest = read_manifest(root) if os.path.isdir(root) else None
        if manifest is None:
            raise
        collection = make(None)
        fields = {"app": config.name, "root": root, "object": manifest.object, "reason": str(e)}
        log.warning("pinned application not adopted: it starts afresh beside it", extra={"fields": fields})
        return collection, Takeover(config.name, root, found=True, object=manifest.object, refused=str(e))
    adoption = collection.adoption
    assert adoption is not None  # opened with adopt=
    return collection, Takeover(
        config.name,
        root,
        found=adoption.object is not None,
        object=adoption.object,
        programs=adoption.programs,
        maps=adoption.maps,
        not_adopted=dict(adoption.refused),
        ignored=dict(adoption.ignored),
        stale=adoption.stale,
    )
