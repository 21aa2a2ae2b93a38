"""A process of its own that opens an object and runs steps it is given, for the restart tests.

``python -m tests.adopt_child STEPS`` runs the JSON list STEPS in order and
prints one JSON line per step that reports something; ``["wait"]`` reads a
line from stdin first, so the parent decides when each phase happens. The
process ends after its last step: whatever it did not close keeps only what
its pins keep, as a restarted agent's predecessor.

Steps: ``["open", OBJECT, {options}]`` (``dynbpf.open``), ``["load", [names]]``,
``["attach", name, {target}]``, ``["write", map, key, value]``,
``["pin", root]``, ``["report", [maps]]``, ``["replace"]``,
``["app", {hook: [variant programs...]}, {feature: [hooks]}]`` (an
Application whose hooks have one-program variants), ``["apply", {config}]``,
``["wait"]``, ``["close", keep]``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import dynbpf


def report(coll: dynbpf.Collection, maps: list[str], app: dynbpf.Application | None) -> dict[str, Any]:
    programs = {}
    for name, program in coll.programs.items():
        if program.loaded:
            programs[name] = {
                "state": program.state.value,
                "id": program.id,
                "tag": program.tag,
                "links": [link.id for link in program.links],
            }
    adoption = coll.adoption
    out: dict[str, Any] = {
        "programs": programs,
        "maps": {m: {str(k): v for k, v in coll.maps[m].items()} for m in maps},
        "map_ids": {m: coll._registry.kernel_id(m) for m in coll.prepared.maps},
    }
    if adoption is not None:
        out["adoption"] = {
            "programs": list(adoption.programs),
            "links": {k: list(v) for k, v in adoption.links.items()},
            "maps": list(adoption.maps),
            "refused": dict(adoption.refused),
            "stale": list(adoption.stale),
            "ignored": dict(adoption.ignored),
            "application": adoption.application,
        }
    if app is not None:
        status = app.status()
        out["hooks"] = {name: hook["state"] for name, hook in status["hooks"].items()}
        out["config"] = {name: state.value for name, state in app.config.items()}
        out["decisions"] = {hook: [d["outcome"] for d in ds] for hook, ds in app.explain().items()}
    return out


def main(steps: list[list[Any]]) -> None:
    coll: dynbpf.Collection | None = None
    app: dynbpf.Application | None = None

    def say(**what: Any) -> None:
        print(json.dumps(what), flush=True)

    for step in steps:
        verb, args = step[0], step[1:]
        if verb == "open":
            coll = dynbpf.open(args[0], **args[1])
            continue
        if verb == "wait":
            sys.stdin.readline()
            continue
        assert coll is not None, f"{verb} before open"
        if verb == "load":
            failures = coll.load(args[0])
            assert not failures, failures
        elif verb == "attach":
            coll.programs[args[0]].attach(**args[1])
        elif verb == "write":
            coll.maps[args[0]][args[1]] = args[2]
        elif verb == "pin":
            coll.pin(args[0])
        elif verb == "report":
            say(**report(coll, args[0] if args else [], app))
        elif verb == "replace":
            say(failures={name: str(e) for name, e in coll.replace_pinned().items()})
        elif verb == "app":
            hooks, features = args
            app = dynbpf.Application(
                coll,
                dynbpf.FeatureMap.of(
                    [dynbpf.Feature(name, hooks=hs) for name, hs in features.items()],
                    {name: list(programs) for name, programs in hooks.items()},
                ),
            )
        elif verb == "apply":
            app_ = app
            assert app_ is not None
            app_.apply(args[0])
        elif verb == "close":
            coll.close(keep_pinned=args[0])
            if app is not None:
                app.close()
        else:
            raise ValueError(f"unknown step {verb!r}")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
