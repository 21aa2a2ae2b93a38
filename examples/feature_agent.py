"""The seed scenario as a feature-driven agent: features switched live, variants chosen per kernel.

examples/feature_agent.bpf.c declares its own feature map in BTF decl tags
(dynbpf.h): ``process`` (exec: fexit, else tp_btf, else a tracepoint; exit,
best-effort), ``files`` (openat: fexit, else a tracepoint; it switches
``process`` on with it) and ``network`` (connect). The agent:

1. starts with ``process`` and says which exec variant this kernel took, and why;
2. enables ``files`` and pauses ``network`` (loaded, not attached) at runtime;
3. resumes ``network``: an attach, no verification;
4. changes a constant live (stop counting its own process), the programs
   reloaded make-before-break with their links;
5. disables ``files``: its programs go, ``process`` keeps running, the
   counters keep their values;
6. closes, and checks the kernel freed every program and map.

After each phase it checks that events flowed. Run as root from the
repository root::

    .venv/bin/python -m examples.feature_agent

It exits non-zero if any check fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.synth import compile_cached

import dynbpf

KINDS = ("exec", "exit", "open", "connect")
FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  {'ok ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILED.append(what)


def build() -> Path:
    return compile_cached((Path(__file__).with_name("feature_agent.bpf.c")).read_text(), "feature_agent")


def counts(coll: dynbpf.Collection) -> Counter[str]:
    table = coll.maps["counts"]
    return Counter({kind: int(table[i]) for i, kind in enumerate(KINDS)})


def execs(n: int) -> None:
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)


def opens(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            Path(tmp, str(i)).write_text("x")


def connects(n: int) -> None:
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", 9))


def drain(reader: dynbpf.RingBuffer) -> Counter[str]:
    """Events by kind; ``own <kind>`` counts this process's."""
    seen: Counter[str] = Counter()
    me = os.getpid()
    while True:
        records = reader.read(timeout=0.2)
        if not records:
            return seen
        seen.update(KINDS[r.kind] for r in records)
        seen.update(f"own {KINDS[r.kind]}" for r in records if r.tgid == me)


def main() -> int:
    obj = build()
    with dynbpf.open(obj, map_policy="on_demand") as coll, dynbpf.Application(coll) as app:
        with coll.ring_buffer("events", record="struct event") as events:
            print("1. start: process")
            decided = app.apply({"process": "enabled"})
            for d in decided["exec"]:
                print(f"     exec: {d['variant']} {d['outcome']}: {d['reason']}")
            execs(3)
            seen = drain(events)
            check(
                seen["exec"] >= 3,
                f"exec events flowing ({seen['exec']}) through {app.status()['hooks']['exec']['variant']}",
            )

            print("2. runtime: files enabled, network paused")
            app.apply({"process": "enabled", "files": "enabled", "network": "paused"})
            network = app.status()["hooks"]["connect"]
            check(network["state"] == "paused", "network loaded but not attached")
            opens(5)
            connects(2)
            seen = drain(events)
            check(seen["own open"] >= 5, f"open events flowing ({seen['own open']} of this process's)")
            check(seen["connect"] == 0, "no connect events while network is paused")

            print("3. resume network")
            program = coll.programs[network["programs"][0]]
            before = program.id
            app.enable("network")
            connects(2)
            seen = drain(events)
            check(seen["connect"] >= 2, f"connect events flowing ({seen['connect']})")
            check(program.id == before, "resumed by an attach: the same kernel program, no verification")

            print("4. constants changed live: ignore this process")
            total = counts(coll)
            reloaded = app.set_constants({"ignore_tgid": os.getpid()})
            print(f"     reloaded: {', '.join(reloaded)}")
            drain(events)  # what came before the swap, the reload's own opens (tracefs) among them
            opens(5)
            execs(2)
            seen = drain(events)
            check(seen["own open"] == 0, "this process's opens are no longer reported")
            check(seen["exec"] >= 2, "the children's execs still are")
            check(app.status()["hooks"]["openat"]["state"] == "enabled", "openat still attached after its reload")

            print("5. files disabled")
            app.disable("files")
            status = app.status()
            check(status["hooks"]["openat"]["state"] == "off", "openat's programs unloaded")
            check(status["hooks"]["exec"]["state"] == "enabled", "process keeps running")
            kept = counts(coll)
            execs(2)
            check(counts(coll)["exec"] >= kept["exec"] + 2, "the counters kept their values and go on counting")
            check(all(kept[k] >= total[k] for k in KINDS), "no counter went back")
        held = _held_ids()
    print("6. close")
    check(_freed(held), "the kernel freed every program and map of the agent")
    print("FAILED: " + "; ".join(FAILED) if FAILED else "all checks passed")
    return 1 if FAILED else 0


def _freed(ids: set[tuple[str, int]], wait: float = 5.0) -> bool:
    """Whether the kernel no longer has any of ``ids`` (it frees them after an RCU grace period)."""
    import time

    from dynbpf._sys import commands

    kinds = {"prog": commands.ObjKind.PROG, "map": commands.ObjKind.MAP}
    deadline = time.monotonic() + wait
    while True:
        alive = 0
        for kind, ident in ids:
            try:
                commands.fd_by_id(kinds[kind], ident).close()
                alive += 1
            except dynbpf.DynbpfError:
                pass
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.05)


def _held_ids() -> set[tuple[str, int]]:
    """The kernel objects (programs, maps, links) this process holds fds of, by kind and id."""
    from dynbpf._sys import commands

    out: set[tuple[str, int]] = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        for kind, info in (("prog", commands.prog_info), ("map", commands.map_info)):
            if target == f"anon_inode:bpf-{kind}":
                with contextlib.suppress(dynbpf.DynbpfError):
                    out.add((kind, int(info(int(name)).id)))
    return out


if __name__ == "__main__":
    sys.exit(main())
