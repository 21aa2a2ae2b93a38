"""Preparing and serially loading a 200-program agent: dynbpf beside libbpf 1.1, same object, same run.

The object is bench/synth_agent.py's (programs of realistic verifier cost).
Measured, each in its own subprocess so peak RSS (VmHWM) is the side's
own, each process doing the work twice (cold: first in the process, as an
agent starting up; warm: again, caches filled):

- prepare without loading programs: ``dynbpf.open`` (read, prepare, create
  every map) against libbpf's open + ``bpf_object__load`` with every
  program's autoload off; and dynbpf's read + prepare alone;
- serial load of every program: ``dynbpf.open`` then each
  ``coll.programs[name].load()`` against libbpf's open + ``bpf_object__load``.

Figures are medians over ``--repeat`` processes per scenario, scenarios
interleaved. ``--verifier-stats`` adds a load of every program with the
verifier's statistics (log level 4) on each side, and prints the spread of
verification time and processed instructions per program.

Run as root: `.venv/bin/python -m bench.prepare_load [--programs N] [--repeat K]`.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIBBPF_PATH = "/usr/lib/x86_64-linux-gnu/libbpf.so.1"
LOG_STATS = 4  # BPF_LOG_STATS: only the verifier's closing statistics
STATS_LOG_SIZE = 4096

Timings = dict[str, float]


# --- libbpf, through ctypes ---------------------------------------------------------------


class Libbpf:
    """The handful of libbpf 1.1 calls an application makes to open and load an object."""

    _PRINT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

    def __init__(self) -> None:
        lib = ctypes.CDLL(LIBBPF_PATH, use_errno=True)
        vp, cp, i32, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        for name, restype, argtypes in [
            ("libbpf_set_print", vp, [vp]),
            ("bpf_object__open_file", vp, [cp, vp]),
            ("bpf_object__load", i32, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__next_program", vp, [vp, vp]),
            ("bpf_program__name", cp, [vp]),
            ("bpf_program__fd", i32, [vp]),
            ("bpf_program__set_autoload", i32, [vp, ctypes.c_bool]),
            ("bpf_program__set_log_level", i32, [vp, u32]),
            ("bpf_program__set_log_buf", i32, [vp, vp, ctypes.c_size_t]),
        ]:
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        libc = ctypes.CDLL(None)
        libc.vsnprintf.restype = ctypes.c_int
        libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.lib = lib
        self.warnings: list[str] = []

        def on_print(level: int, fmt: bytes | None, args: int | None) -> int:
            if level == 0:  # LIBBPF_WARN; a failed load's verifier log arrives here
                buf = ctypes.create_string_buffer(1 << 20)
                libc.vsnprintf(buf, len(buf), fmt, args)
                self.warnings.append(buf.value.decode(errors="replace").rstrip())
            return 0

        self._print = self._PRINT(on_print)

    @contextmanager
    def object(self, path: Path) -> Iterator[int]:
        """An open object; libbpf's process-wide print hook is ours only meanwhile (the callback must outlive it)."""
        previous = self.lib.libbpf_set_print(ctypes.cast(self._print, ctypes.c_void_p))
        try:
            obj = self.lib.bpf_object__open_file(os.fsencode(path), None)
            if not obj:
                raise RuntimeError(f"libbpf could not open {path}: " + "\n".join(self.warnings[-5:]))
            try:
                yield obj
            finally:
                self.lib.bpf_object__close(obj)
        finally:
            self.lib.libbpf_set_print(previous)

    def programs(self, obj: int) -> list[tuple[str, int]]:
        out = []
        prog = self.lib.bpf_object__next_program(obj, None)
        while prog:
            out.append((self.lib.bpf_program__name(prog).decode(), prog))
            prog = self.lib.bpf_object__next_program(obj, prog)
        return out

    def load(self, obj: int) -> None:
        err = self.lib.bpf_object__load(obj)
        if err:
            raise RuntimeError(f"bpf_object__load: {os.strerror(-err)}\n" + "\n".join(self.warnings[-20:]))


def libbpf_prepare(libbpf: Libbpf, path: Path) -> Timings:
    """libbpf's nearest equivalent of prepare: open, then load with no program (BTF, maps, relocation)."""
    t0 = time.perf_counter()
    with libbpf.object(path) as obj:
        t1 = time.perf_counter()
        for _, prog in libbpf.programs(obj):
            libbpf.lib.bpf_program__set_autoload(prog, False)
        libbpf.load(obj)
        t2 = time.perf_counter()
    return {"open": t1 - t0, "load": t2 - t1, "total": t2 - t0}


def libbpf_load(libbpf: Libbpf, path: Path) -> Timings:
    """What an application does today: open, then load every program, serially, in bpf_object__load."""
    t0 = time.perf_counter()
    with libbpf.object(path) as obj:
        t1 = time.perf_counter()
        libbpf.load(obj)
        t2 = time.perf_counter()
    return {"open": t1 - t0, "load": t2 - t1, "total": t2 - t0}


def libbpf_stats(path: Path) -> dict[str, dict[str, int]]:
    """Verifier statistics of every program, loaded by libbpf with log level 4."""
    libbpf = Libbpf()
    with libbpf.object(path) as obj:
        buffers = {}
        for name, prog in libbpf.programs(obj):
            buffers[name] = ctypes.create_string_buffer(STATS_LOG_SIZE)
            libbpf.lib.bpf_program__set_log_level(prog, LOG_STATS)
            libbpf.lib.bpf_program__set_log_buf(prog, ctypes.addressof(buffers[name]), STATS_LOG_SIZE)
        libbpf.load(obj)
        return {name: parse_stats(buf.value.decode(errors="replace")) for name, buf in buffers.items()}


# --- dynbpf -------------------------------------------------------------------------------


def dynbpf_prepare(path: Path) -> Timings:
    """dynbpf.read + prepare onto reserved fd numbers, no map created: the issue's 300 ms goal."""
    import dynbpf
    from dynbpf._prepare.object import prepare
    from dynbpf._sys.placeholder import FdSlot

    slots: dict[str, FdSlot] = {}

    def slot(name: str) -> int:
        if name not in slots:
            slots[name] = FdSlot(name)
        return slots[name].number

    t0 = time.perf_counter()
    spec = dynbpf.read(path)
    t1 = time.perf_counter()
    prepared = prepare(spec, slot)
    t2 = time.perf_counter()
    if prepared.failed:
        first = next(iter(prepared.failed.values()))
        raise RuntimeError(f"dynbpf could not prepare {sorted(prepared.failed)}: {first}")
    prepared.close()
    for s in slots.values():
        s.close()
    return {"read": t1 - t0, "prepare": t2 - t1, "total": t2 - t0}


def dynbpf_open(path: Path) -> Timings:
    import dynbpf

    t0 = time.perf_counter()
    coll = dynbpf.open(path)
    t1 = time.perf_counter()
    coll.close()
    return {"total": t1 - t0}


def dynbpf_load(path: Path) -> Timings:
    """dynbpf.open, then every program's load() in turn; a failure is recorded and the rest still load."""
    import dynbpf

    t0 = time.perf_counter()
    with dynbpf.open(path) as coll:
        t1 = time.perf_counter()
        failures = {}
        for name, prog in coll.programs.items():
            try:
                prog.load()
            except dynbpf.DynbpfError as e:
                failures[name] = str(e)
        t2 = time.perf_counter()
    if failures:
        _FAILURES.update(failures)
    return {"open": t1 - t0, "load": t2 - t1, "total": t2 - t0}


def dynbpf_stats(path: Path) -> dict[str, dict[str, int]]:
    import dynbpf

    out = {}
    with dynbpf.open(path) as coll:
        for name, prog in coll.programs.items():
            try:
                prog.load(log_level=LOG_STATS, log_size=STATS_LOG_SIZE)
            except dynbpf.DynbpfError as e:
                _FAILURES[name] = str(e)
                continue
            out[name] = parse_stats(prog.log)
    return out


_FAILURES: dict[str, str] = {}


def parse_stats(log: str) -> dict[str, int]:
    """The verifier's "verification time N usec" and "processed N insns" lines, as numbers."""
    out = {}
    if m := re.search(r"verification time (\d+) usec", log):
        out["usec"] = int(m.group(1))
    if m := re.search(r"processed (\d+) insns", log):
        out["insns"] = int(m.group(1))
    return out


LIBBPF_SCENARIOS: dict[str, Callable[[Libbpf, Path], Timings]] = {
    "libbpf-prepare": libbpf_prepare,
    "libbpf-load": libbpf_load,
}
DYNBPF_SCENARIOS: dict[str, Callable[[Path], Timings]] = {
    "dynbpf-prepare": dynbpf_prepare,
    "dynbpf-open": dynbpf_open,
    "dynbpf-load": dynbpf_load,
}
STATS: dict[str, Callable[[Path], dict[str, dict[str, int]]]] = {"libbpf": libbpf_stats, "dynbpf": dynbpf_stats}


# --- one scenario in its own process --------------------------------------------------------


def _maxrss_kib() -> int:
    """This process's peak RSS, KiB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a worker
    would report its parent's peak (the parent read vmlinux.h) as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(scenario: str, path: Path, runs: int) -> dict[str, Any]:
    """Run one scenario ``runs`` times in this process; imports happen before the baseline RSS."""
    run: Callable[[Path], Timings]
    if scenario in LIBBPF_SCENARIOS:
        run = functools.partial(LIBBPF_SCENARIOS[scenario], Libbpf())
    else:
        import dynbpf._prepare.object
        import dynbpf._runtime.collection  # noqa: F401

        run = DYNBPF_SCENARIOS[scenario]
    baseline = _maxrss_kib()
    results = [run(path) for _ in range(runs)]
    return {"runs": results, "baseline_kib": baseline, "maxrss_kib": _maxrss_kib(), "failures": _FAILURES}


def stats_worker(side: str, path: Path) -> dict[str, Any]:
    return {"stats": STATS[side](path), "failures": _FAILURES}


def spawn(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.prepare_load", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# --- report ---------------------------------------------------------------------------------


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    clang = subprocess.run(["clang", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"kernel {platform.release()}, {os.cpu_count()} cpus ({model}), {mem:.0f} GiB; "
        f"python {platform.python_version()}; {clang}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[int]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    mid = statistics.median(ordered)
    return f"min {ordered[0]}  median {mid:.0f}  p90 {p90}  max {ordered[-1]}  sum {sum(ordered)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5, help="processes per scenario (median reported)")
    ap.add_argument("--runs", type=int, default=2, help="runs per process: the first cold, the rest warm")
    ap.add_argument("--sides", default="libbpf,dynbpf", help="comma-separated: libbpf, dynbpf")
    ap.add_argument("--verifier-stats", action="store_true", help="also report per-program verifier statistics")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--stats-worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.runs)))
        return
    if args.stats_worker:
        print(json.dumps(stats_worker(args.stats_worker, args.path)))
        return

    from bench.synth_agent import build

    path = build(args.programs)
    sides = args.sides.split(",")
    scenarios = [s for s in (*LIBBPF_SCENARIOS, *DYNBPF_SCENARIOS) if s.split("-")[0] in sides]
    print(f"machine: {machine()}")
    print(f"object: {path.name}, {args.programs} programs, {path.stat().st_size} bytes ({path})")
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
    for _ in range(args.repeat):
        for s in scenarios:
            raw[s].append(spawn(["--worker", s, "--path", str(path), "--runs", str(args.runs)]))
    report(raw, args.repeat, args.runs)
    if args.verifier_stats:
        stats = {side: spawn(["--stats-worker", side, "--path", str(path)]) for side in sides}
        for side, result in stats.items():
            per = result["stats"].values()
            print(f"verifier, {side}: {len(result['stats'])} programs")
            print(f"  verification time (us): {spread([p['usec'] for p in per if 'usec' in p])}")
            print(f"  processed insns:        {spread([p['insns'] for p in per if 'insns' in p])}")
            for name, why in sorted(result["failures"].items()):
                print(f"  FAILED {name}: {why.splitlines()[0] if why else ''}")
        raw["stats"] = stats  # type: ignore[assignment]
    if args.json:
        print(json.dumps(raw, indent=1))


def report(raw: dict[str, list[dict[str, Any]]], repeat: int, runs: int) -> None:
    def phase(scenario: str, key: str, warm: bool) -> float:
        if scenario not in raw:
            return float("nan")
        values = [r[key] for proc in raw[scenario] for r in (proc["runs"][1:] if warm else proc["runs"][:1])]
        return median(values) * 1000

    def rss(scenario: str) -> str:
        if scenario not in raw:
            return "-"
        peak = median([p["maxrss_kib"] for p in raw[scenario]]) / 1024
        added = median([p["maxrss_kib"] - p["baseline_kib"] for p in raw[scenario]]) / 1024
        return f"{peak:.0f} (+{added:.0f})"

    print(f"times in ms, median of {repeat} processes; cold = first run in a process, warm = run 2..{runs}")
    print(f"{'':40} {'cold':>9} {'warm':>9}   peak RSS MiB (+ over imports)")
    rows = [
        ("dynbpf read + prepare (no maps)", "dynbpf-prepare", "total"),
        ("  of which read", "dynbpf-prepare", "read"),
        ("  of which prepare", "dynbpf-prepare", "prepare"),
        ("dynbpf.open (+ map creation)", "dynbpf-open", "total"),
        ("libbpf open + load, no programs", "libbpf-prepare", "total"),
        ("dynbpf open + load all, serial", "dynbpf-load", "total"),
        ("  of which program loads", "dynbpf-load", "load"),
        ("libbpf open + bpf_object__load, all", "libbpf-load", "total"),
        ("  of which bpf_object__load", "libbpf-load", "load"),
    ]
    for label, scenario, key in rows:
        if scenario not in raw:
            continue
        memory = rss(scenario) if key == "total" else ""
        print(f"{label:40} {phase(scenario, key, False):9.1f} {phase(scenario, key, True):9.1f}   {memory}")
    for label, ours, theirs in [
        ("ratio dynbpf.open / libbpf no-program load", "dynbpf-open", "libbpf-prepare"),
        ("ratio dynbpf serial load / libbpf load", "dynbpf-load", "libbpf-load"),
    ]:
        if ours in raw and theirs in raw:
            cold = phase(ours, "total", False) / phase(theirs, "total", False)
            warm = phase(ours, "total", True) / phase(theirs, "total", True) if runs > 1 else float("nan")
            print(f"{label:40} {cold:9.2f} {warm:9.2f}")
    for scenario, procs in raw.items():
        failures: dict[str, str] = {}
        for proc in procs:
            failures.update(proc["failures"])
        for name, why in sorted(failures.items()):
            print(f"{scenario}: {name} FAILED: {why}")


if __name__ == "__main__":
    main()
