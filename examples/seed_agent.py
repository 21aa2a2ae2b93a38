"""The seed scenario end to end: a 200-program agent that loads what it needs, when it needs it.

A security agent ships one object with hundreds of programs (../shared/seeds/).
With libbpf it loads all of them, serially, once. This agent:

1. opens and prepares the object once (every map's fd number reserved);
2. loads the process families in parallel and attaches them, while a ring
   buffer reader counts the events they send;
3. later loads the file, credential and network families too — more
   programs, no restart;
4. unloads the file family: the map only it used is freed, shared maps stay;
5. reloads the exec family (new kernel programs from the same instructions,
   still attached, their maps kept);
6. checks after each phase that events kept flowing and that exactly the maps
   loaded programs need exist; closes everything and checks the kernel freed it.

Run as root from the repository root::

    .venv/bin/python -m examples.seed_agent [--programs 200] [--workers N]

It exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable

from bench.synth_agent import build

import dynbpf
from dynbpf._sys import commands
from dynbpf.errors import AttachError, KernelUnsupported

#: The events' BTF type; the object must mention it in a global, a map or a signature for it to be in BTF.
RECORD = "struct event"
#: Program families (name prefixes) by phase; bench/synth_agent.py names programs "<family>_<hook>_<n>".
START = ("rawproc", "btfproc", "exec", "exit")
LATER = ("file", "cred", "net", "sock")
UNLOAD = ("file",)
RELOAD = ("exec",)


class Agent:
    """The object's programs by family, attached while loaded; the events they send, by kind."""

    def __init__(self, coll: dynbpf.Collection) -> None:
        self.coll = coll
        self.families: dict[str, list[str]] = {}
        for name in coll.programs:
            self.families.setdefault(name.split("_", 1)[0], []).append(name)
        self.events: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.reader = coll.ring_buffer("events", record=RECORD, callback=self._event)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="events", daemon=True)
        self._poller.start()
        self.failures: list[str] = []

    def _event(self, event: object) -> None:
        with self._lock:
            self.events[int(event.kind)] += 1  # type: ignore[attr-defined]

    def _poll(self) -> None:
        while not self._stop.is_set() and not self.reader.closed:
            self.reader.poll(0.05)

    def names(self, families: Iterable[str]) -> list[str]:
        return [n for f in families for n in self.families.get(f, [])]

    def load_and_attach(self, families: Iterable[str], workers: int) -> None:
        names = self.names(families)
        started = time.perf_counter()
        failures = self.coll.load(names, workers=workers)
        loaded_in = time.perf_counter() - started
        attached = 0
        refused: dict[str, str] = {}
        for name in names:
            if name in failures:
                continue
            try:
                self.coll.programs[name].attach()
                attached += 1
            except (KernelUnsupported, AttachError) as e:
                refused[name] = str(e)
        print(
            f"  loaded {len(names) - len(failures)}/{len(names)} programs in {loaded_in:.2f} s "
            f"with {workers} workers, attached {attached}"
            + (f", {len(refused)} refused by the kernel at attach" if refused else "")
        )
        for name, error in [*failures.items(), *refused.items()][:3]:
            print(f"  ! {name}: {str(error).splitlines()[0]}")

    def total_events(self) -> int:
        with self._lock:
            return sum(self.events.values())

    def check(self, what: str, ok: bool) -> None:
        print(f"  {'ok ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)

    def check_maps(self) -> None:
        """Every map exists exactly when a loaded program (or the event reader) needs it."""
        coll = self.coll
        needed = {"events"} | {m for p in coll.programs.values() if p.loaded for m in p.maps}
        existing = {m for m in coll.prepared.maps if coll.map_exists(m)}
        self.check(f"maps that exist == maps needed ({len(existing)} of {len(coll.prepared.maps)})", existing == needed)

    def expect_events(self, phase: str) -> None:
        before = self.total_events()
        activity()
        deadline = time.monotonic() + 2
        while self.total_events() == before and time.monotonic() < deadline:
            time.sleep(0.02)
        self.check(f"events flowing during {phase} (+{self.total_events() - before})", self.total_events() > before)

    def close(self) -> None:
        self._stop.set()
        self.reader.close()
        self._poller.join()


def activity() -> None:
    """Things a process monitor sees: files opened and read, a program run, a connection made."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"seed")
        f.flush()
        with open(f.name, "rb") as again:
            again.read()
    for path in ("/etc/hostname", "/etc/os-release"):
        with open(path, "rb") as f:
            f.read()
    subprocess.run(["/bin/true"], check=True)
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        conn, _ = server.accept()
        conn.close()
    os.setuid(os.getuid())


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    path = build(args.programs)
    started = time.perf_counter()
    # Private maps come and go with their programs; the ring buffer stays while the reader reads it.
    coll = dynbpf.open(path, map_policy="on_demand")
    print(
        f"opened and prepared {len(coll.programs)} programs, {len(coll.prepared.maps)} maps "
        f"in {time.perf_counter() - started:.2f} s; nothing loaded yet"
    )
    agent = Agent(coll)
    try:
        print(f"1. start: {', '.join(START)}")
        agent.load_and_attach(START, args.workers)
        agent.check_maps()
        agent.expect_events("start")

        print(f"2. later: {', '.join(LATER)}")
        agent.load_and_attach(LATER, args.workers)
        agent.check_maps()
        agent.expect_events("later loads")

        print(f"3. unload: {', '.join(UNLOAD)}")
        private = {m for n in agent.names(UNLOAD) for m in coll.programs[n].maps} - {
            m for n, p in coll.programs.items() if p.loaded and n not in agent.names(UNLOAD) for m in p.maps
        }
        coll.unload(agent.names(UNLOAD))
        agent.check(
            f"maps only they used are freed: {', '.join(sorted(private)) or 'none'}",
            not any(coll.map_exists(m) for m in private),
        )
        agent.check_maps()
        agent.expect_events("unload")

        print(f"4. reload: {', '.join(RELOAD)}")
        reloaded = [n for n in agent.names(RELOAD) if coll.programs[n].loaded]
        ids = {n: coll.programs[n].id for n in reloaded}
        for name in reloaded:
            coll.programs[name].reload()  # keeps its links (re-made on the new program) and its maps
        agent.check("reloaded programs are new kernel programs", all(coll.programs[n].id != ids[n] for n in reloaded))
        agent.check("reloaded programs are still attached", all(coll.programs[n].links for n in reloaded))
        agent.check_maps()
        agent.expect_events("reload")

        by_state = Counter(p.state.value for p in coll.programs.values())
        print(f"states: {dict(by_state)}; events by kind: {dict(sorted(agent.events.items()))}")
        ids = {int(commands.map_info(coll.map_fd_number(m)).id) for m in coll.prepared.maps if coll.map_exists(m)}
    finally:
        agent.close()
        coll.close()
    print("5. close")
    deadline = time.monotonic() + 3  # the kernel frees maps after an RCU grace period
    while ids & set(commands.ids(commands.ObjKind.MAP)) and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.check("every program unloaded and every map freed", not ids & set(commands.ids(commands.ObjKind.MAP)))
    if agent.failures:
        print(f"{len(agent.failures)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
