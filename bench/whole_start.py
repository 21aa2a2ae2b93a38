"""An agent's whole start with dynbpf beside libbpf 1.1, on a heavy-program object and a small-program linked one.

bench/runtime_load.py measures one object whose programs verify slowly
(~10-20 ms each), where parallel verification hides dynbpf's Python work.
Deployed agents mostly have small programs (2-5 ms) in big statically
linked objects (bench/linked_agent.py), where that work is most of the
start. This benchmark runs both objects, libbpf beside dynbpf in the same
run, and prints each goal's figures, ratio and verdict:

- whole start: ``dynbpf.open`` + ``coll.load(workers=2)`` against libbpf's
  ``bpf_object__open_file`` + ``bpf_object__load`` (serial);
- whole start with a warm prepared cache: ``dynbpf.open(path, cache=DIR)``
  once in a first process, then open + load timed in later ones (an agent's
  restart); "not available" while ``dynbpf.open`` has no ``cache=`` option;
- selective start: every 10th program loaded, against libbpf's full start
  (libbpf's own start with autoload off for the others is shown too);
- peak RSS (VmHWM) of a whole start, each side in its own Python process;
- ``import dynbpf`` over a bare interpreter;
- time to first event of a small tool (bench/first_event.bpf.c: open, load
  two programs, attach, trigger the syscall, first ring buffer record),
  written in C with libbpf (bench/first_event.c, built here) and in Python
  with dynbpf (bench/first_event.py), each timed from spawn to its event;
- whole start by number of programs (bench/synth_agent.py, ``--sweep``),
  for the plot.

Scenarios run in their own processes, interleaved, ``--repeat`` each
(medians); the start scenarios are bench/runtime_load.py's workers. Run as
root:

    .venv/bin/python -m bench.whole_start [--repeat K] [--json out.json]
    .tools/bin/uv run --no-project --with matplotlib python -m bench.whole_start \\
        --plot out.json /tmp/whole_start.png
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

from tests.bpfbuild import CACHE, produce

from bench import import_time, linked_agent, runtime_load, synth_agent
from bench.prepare_load import _maxrss_kib, machine, median
from bench.synth import compile_cached
from dynbpf._sys.fs import tracefs_root

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WORKERS = 2
SELECTIVE = runtime_load.SELECTIVE
SWEEP = (50, 100, 200, 500, 1000)
MiB = 1024

#: Per object, the goals: whole start speed-up, warm-cache speed-up, selective start fraction.
GOALS = {
    "synthetic": {"start": 1.8, "cached": 1.8, "selective": 0.10},
    "linked": {"start": 1.3, "cached": 1.8, "selective": 0.15},
}
RSS_GOAL_MIB = 25
IMPORT_GOAL_MS = import_time.GOAL_MS
FIRST_EVENT_GOAL = 2.0

Result = dict[str, Any]


# --- workers (each in its own process) ------------------------------------------------------


def cached_run(path: Path, cache: Path, workers: int) -> Result:
    """``dynbpf.open(path, cache=cache)`` + ``coll.load``; ``unavailable`` while dynbpf has no such option."""
    import dynbpf

    baseline = _maxrss_kib()
    t0 = time.perf_counter()
    try:
        coll = dynbpf.open(path, cache=cache)
    except TypeError as e:
        if "cache" not in str(e):
            raise
        return {"unavailable": f"dynbpf.open() has no cache= option ({e})"}
    with coll:
        t1 = time.perf_counter()
        failures = coll.load(workers=workers)
        t2 = time.perf_counter()
    if failures:
        raise RuntimeError(f"{len(failures)} programs failed: {next(iter(failures.values()))}")
    return {"open": t1 - t0, "load": t2 - t1, "total": t2 - t0, "baseline_kib": baseline, "maxrss_kib": _maxrss_kib()}


def _spawn_own(scenario: str, path: Path, cache: Path) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.whole_start", "--worker", scenario, "--path", str(path), "--cache", str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {scenario} failed:\n{proc.stderr[-4000:]}")
    result: Result = json.loads(proc.stdout)
    return result


def attempt(run: Callable[[], Result]) -> Result:
    """A worker's result, or ``{"error": ...}`` with its exception and what follows it: one failure ends no run.

    A result also gets the CPU time of the worker (``cpu``: user + system,
    its whole process) and the CPU time every other process on the machine
    used meanwhile (``others_cpu``): with two cores, a busy neighbour takes
    the second worker's core, and this says when that happened.
    """
    mine, busy = _children_cpu(), _machine_busy()
    try:
        result = run()
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        last = max((i for i, line in enumerate(lines) if "Error: " in line), default=max(0, len(lines) - 1))
        return {"error": " | ".join(lines[last:])[:600]}
    cpu = _children_cpu() - mine
    return {**result, "cpu": cpu, "others_cpu": max(0.0, _machine_busy() - busy - cpu)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), this process's own included."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    ticks = user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


# --- import time and first event ------------------------------------------------------------


def with_bytecode() -> None:
    """Let every process this run spawns read and write bytecode caches, as an installed package has them.

    A sandbox may set PYTHONDONTWRITEBYTECODE; then every ``import dynbpf``
    compiles its sources again, which no deployed agent does. One import
    here writes the caches before anything is timed.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-c", "import dynbpf"], cwd=ROOT, check=True)


def import_cost(repeat: int) -> Result:
    """bench/import_time.py's fresh interpreters, bytecode cached (as installed): medians in s."""
    with tempfile.TemporaryDirectory(prefix="dynbpf-import-") as tmp:
        env = import_time.environment(import_time.copy_package(Path(tmp)), write_bytecode=True)
        for code in import_time.SCENARIOS.values():
            import_time.run(code, env)  # writes the copy's bytecode
        times = import_time.measure(repeat, {"cached": env})
    bare = median(times["cached", "bare interpreter"])
    full = median(times["cached", "import dynbpf"])
    ready = median(times["cached", "dynbpf.open ready"])
    return {"bare": bare, "import": full, "added": full - bare, "open_ready": ready}


def first_event_object() -> Path:
    return compile_cached((HERE / "first_event.bpf.c").read_text(), "first_event")


def first_event_tool() -> Path:
    """bench/first_event.c compiled against libbpf-dev's headers and the system libbpf.so (cached by content)."""
    source = HERE / "first_event.c"
    cc = shutil.which("gcc") or shutil.which("cc") or "clang"
    version = subprocess.run([cc, "--version"], check=True, capture_output=True, text=True).stdout
    key = hashlib.sha256(source.read_bytes() + version.encode()).hexdigest()[:24]
    out = CACHE / f"first_event_tool-{key}" / "first_event"
    return produce(out, lambda tmp: [cc, "-O2", "-Wall", "-Werror", str(source), "-o", str(tmp), "-lbpf"], source)


def time_to_event(command: list[str]) -> Result:
    """Seconds from spawning ``command`` to its first output line (the event), and to its exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    t1 = time.perf_counter()
    _, err = proc.communicate(timeout=60)
    t2 = time.perf_counter()
    if proc.returncode != 0 or not line.startswith("event"):
        raise RuntimeError(f"{command[-2:]} exited {proc.returncode}, printed {line!r}:\n{err[-2000:]}")
    return {"event": t1 - t0, "exit": t2 - t0}


# --- the run --------------------------------------------------------------------------------


def start_scenarios(workers: int) -> dict[str, str]:
    """Our name -> bench/runtime_load.py's worker scenario."""
    return {
        "libbpf-full": "libbpf-full",
        "libbpf-part": f"libbpf-part-{SELECTIVE}",
        "dynbpf-full": f"dynbpf-full-{workers}",
        "dynbpf-part": f"dynbpf-part-{SELECTIVE}",
    }


def describe(path: Path) -> Result:
    from tests.libbpf_oracle import open_object

    obj = open_object(path)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "programs": len(obj.programs),
        "insns": sum(p.insn_cnt for p in obj.programs),
        "maps": len(obj.maps),
    }


def measure_object(path: Path, repeat: int, workers: int) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {name: [] for name in [*start_scenarios(workers), "dynbpf-cached"]}
    with tempfile.TemporaryDirectory(prefix="dynbpf-cache-") as tmp:
        cache = Path(tmp)
        prime = attempt(partial(_spawn_own, "dynbpf-cached", path, cache))
        if "unavailable" in prime or "error" in prime:
            runs["dynbpf-cached"] = [prime]
        for _ in range(repeat):
            for name, scenario in start_scenarios(workers).items():
                runs[name].append(attempt(partial(runtime_load.spawn, scenario, path)))
            if not ("unavailable" in prime or "error" in prime):
                runs["dynbpf-cached"].append(attempt(partial(_spawn_own, "dynbpf-cached", path, cache)))
    return runs


def summarise(runs: list[Result]) -> Result:
    """Medians of every figure; the first error or unavailability instead, if any run had one."""
    for r in runs:
        if "error" in r or "unavailable" in r:
            return r
    return {k: median([r[k] for r in runs]) for k in runs[0]}


def sweep(sizes: list[int], repeat: int, workers: int) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = {"programs": [], "libbpf": [], "dynbpf": []}
    for n in sizes:
        path = synth_agent.build(n)
        lib, dyn = [], []
        for _ in range(repeat):
            lib.append(attempt(partial(runtime_load.spawn, "libbpf-full", path)))
            dyn.append(attempt(partial(runtime_load.spawn, f"dynbpf-full-{workers}", path)))
        out["programs"].append({"n": n})
        out["libbpf"].append(summarise(lib))
        out["dynbpf"].append(summarise(dyn))
    return out


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a measure on one object, both sides' figures, their ratio and the goal's verdict."""

    measure: str
    object: str
    dynbpf: str
    libbpf: str
    ratio: str
    goal: str
    verdict: str


COLUMNS = [f.name for f in fields(Row)]


def _s(result: Result, key: str = "total") -> str:
    if "error" in result:
        return "failed"
    if "unavailable" in result:
        return "n/a"
    return f"{result[key]:.3f} s"


def _failed(*results: Result) -> str | None:
    for r in results:
        if "unavailable" in r:
            return "not available"
        if "error" in r:
            return "error"
    return None


def rows(summary: dict[str, Any], objects: list[str]) -> list[Row]:
    out = []
    for name in objects:
        s = summary["objects"][name]
        goals = GOALS[name]
        lib = s["libbpf-full"]
        for measure, key, want in (
            (f"whole start (open + load, {summary['workers']} workers)", "dynbpf-full", goals["start"]),
            ("whole start, warm prepared cache", "dynbpf-cached", goals["cached"]),
        ):
            ours = s[key]
            bad = _failed(ours, lib)
            ratio = lib["total"] / ours["total"] if not bad else float("nan")
            out.append(
                Row(measure, name, _s(ours), _s(lib), "-" if bad else f"{ratio:.2f}x faster", f">= {want}x faster",
                    bad or ("met" if ratio >= want else "missed"))
            )  # fmt: skip
        ours = s["dynbpf-part"]
        bad = _failed(ours, lib)
        frac = ours["total"] / lib["total"] if not bad else float("nan")
        want = goals["selective"]
        out.append(
            Row(f"selective start, {SELECTIVE} % of programs", name, _s(ours), _s(lib),
                "-" if bad else f"{frac:.3f}x", f"<= {want}x libbpf full", bad or ("met" if frac <= want else "missed"))
        )  # fmt: skip
        part = s["libbpf-part"]
        out.append(
            Row(f"  (libbpf's own start, {SELECTIVE} % autoload)", name, "", _s(part), "", "", "")
        )  # fmt: skip
        ours = s["dynbpf-full"]
        bad = _failed(ours, lib)
        if bad:
            goal = f"<= libbpf + {RSS_GOAL_MIB} MiB"
            out.append(Row("peak RSS, open + load all", name, "failed", "", "-", goal, bad))
        else:
            extra = (ours["maxrss_kib"] - lib["maxrss_kib"]) / MiB
            out.append(
                Row("peak RSS, open + load all", name, f"{ours['maxrss_kib'] / MiB:.0f} MiB",
                    f"{lib['maxrss_kib'] / MiB:.0f} MiB", f"{extra:+.0f} MiB", f"<= libbpf + {RSS_GOAL_MIB} MiB",
                    "met" if extra <= RSS_GOAL_MIB else "missed")
            )  # fmt: skip
    imp = summary["import"]
    added = imp["added"] * 1000
    out.append(
        Row("python -c 'import dynbpf'", "-", f"{imp['import'] * 1000:.0f} ms", f"{imp['bare'] * 1000:.0f} ms (bare)",
            f"{added:+.0f} ms", f"<= {IMPORT_GOAL_MS:.0f} ms added", "met" if added <= IMPORT_GOAL_MS else "missed")
    )  # fmt: skip
    ev = summary["first_event"]
    bad = _failed(ev["python"], ev["c"])
    ratio = ev["python"]["event"] / ev["c"]["event"] if not bad else float("nan")
    out.append(
        Row("time to first event (small tool)", "-", _s(ev["python"], "event"), _s(ev["c"], "event") + " (C)",
            "-" if bad else f"{ratio:.2f}x", f"<= {FIRST_EVENT_GOAL}x the C tool",
            bad or ("met" if ratio <= FIRST_EVENT_GOAL else "missed"))
    )  # fmt: skip
    return out


def report(summary: dict[str, Any], objects: list[str]) -> list[Row]:
    for name in objects:
        o = summary["described"][name]
        print(
            f"{name}: {o['programs']} programs, {o['insns']} insns, {o['maps']} maps, "
            f"{o['bytes'] / 1e6:.1f} MB ({o['path']})"
        )
    table = rows(summary, objects)
    widths = [max(len(getattr(r, f)) for r in table) for f in COLUMNS]
    heads = ["measure", "object", "dynbpf", "libbpf", "ratio", "goal", "verdict"]
    widths = [max(w, len(h)) for w, h in zip(widths, heads, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for r in table:
        print("  ".join(str(getattr(r, f)).ljust(w) for f, w in zip(COLUMNS, widths, strict=True)).rstrip())
    print("CPU seconds of one start (its process), and of other processes meanwhile:")
    for name in objects:
        runs = summary["objects"][name]
        cpu = [f"{k} {r['cpu']:.2f} (others {r['others_cpu']:.2f})" for k, r in runs.items() if "cpu" in r]
        print(f"  {name}: " + "; ".join(cpu))
    for name in objects:
        for scenario, result in summary["objects"][name].items():
            if "error" in result:
                print(f"{name} {scenario} failed: {result['error']}")
            elif "unavailable" in result:
                print(f"{name} {scenario}: {result['unavailable']}")
    return table


def plot(saved: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sw = saved["summary"]["sweep"]
    if sw["programs"]:
        xs = [p["n"] for p in sw["programs"]]
        for side, style, label in (
            ("libbpf", "o-", "libbpf open + bpf_object__load (serial)"),
            ("dynbpf", "s-", f"dynbpf open + coll.load(workers={saved['summary']['workers']})"),
        ):
            pts = [(x, r["total"]) for x, r in zip(xs, sw[side], strict=True) if "total" in r]
            left.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        pts = [(x, r["open"]) for x, r in zip(xs, sw["dynbpf"], strict=True) if "open" in r]
        left.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color="tab:orange", label="  of which dynbpf.open")
    left.set(xlabel="programs (synthetic agent)", ylabel="wall time, s", title="Whole start by programs")
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    objects = list(saved["summary"]["objects"])
    bars = [
        ("libbpf-full", "libbpf full"),
        ("dynbpf-full", "dynbpf full"),
        ("dynbpf-cached", "dynbpf, warm cache"),
        ("libbpf-part", f"libbpf {SELECTIVE} %"),
        ("dynbpf-part", f"dynbpf {SELECTIVE} %"),
    ]
    width = 0.8 / len(bars)
    for i, (key, label) in enumerate(bars):
        values = [saved["summary"]["objects"][o][key].get("total", 0.0) for o in objects]
        right.bar([j + i * width for j in range(len(objects))], values, width, label=label)
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(objects))], objects)
    right.set(ylabel="wall time, s", title="Start of each object (0: failed or n/a)")
    right.legend(fontsize=8)
    runtime_load.save_figure(fig, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="processes per scenario (median reported)")
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--programs", type=int, default=200, help="programs of the synthetic agent")
    ap.add_argument("--small", action="store_true", help="the linked agent's small variant (for tests)")
    ap.add_argument("--sweep", default=",".join(map(str, SWEEP)), help="program counts for the plot ('' for none)")
    ap.add_argument("--sweep-repeat", type=int, default=1)
    ap.add_argument("--import-repeat", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the raw results and summary here")
    ap.add_argument("--plot", nargs=2, type=Path, metavar=("RESULTS_JSON", "PNG"), help="plot saved results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(cached_run(args.path, args.cache, args.workers)))
        return
    if args.plot:
        plot(json.loads(args.plot[0].read_text()), args.plot[1])
        return

    paths = {
        "synthetic": synth_agent.build(args.programs),
        "linked": linked_agent.build(linked_agent.SMALL if args.small else linked_agent.FULL),
    }
    print(f"machine: {machine()}")
    load_before = os.getloadavg()
    with_bytecode()
    raw: dict[str, Any] = {"objects": {name: measure_object(p, args.repeat, args.workers) for name, p in paths.items()}}
    raw["import"] = import_cost(args.import_repeat)
    obj, tool = first_event_object(), first_event_tool()
    # both tools attach a tracepoint; a fresh machine may not have tracefs mounted yet
    tracefs_root(mount_if_missing=True)
    raw["first_event"] = {"c": [], "python": []}
    for _ in range(args.repeat):
        raw["first_event"]["c"].append(attempt(partial(time_to_event, [str(tool), str(obj)])))
        python = [sys.executable, str(HERE / "first_event.py"), str(obj)]
        raw["first_event"]["python"].append(attempt(partial(time_to_event, python)))
    sizes = [int(n) for n in args.sweep.split(",") if n.strip()]
    raw["sweep"] = sweep(sizes, args.sweep_repeat, args.workers)
    summary: dict[str, Any] = {
        "workers": args.workers,
        "described": {name: describe(p) for name, p in paths.items()},
        "objects": {name: {s: summarise(r) for s, r in runs.items()} for name, runs in raw["objects"].items()},
        "import": raw["import"],
        "first_event": {side: summarise(r) for side, r in raw["first_event"].items()},
        "sweep": raw["sweep"],
    }
    summary["loadavg"] = {"before": load_before, "after": os.getloadavg()}
    print(
        f"medians of {args.repeat} processes per scenario; {os.cpu_count()} cores; load average "
        f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (other work on the cores skews parallel loads)"
    )
    table = report(summary, list(paths))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "date": datetime.date.today().isoformat(),
                    "raw": raw,
                    "summary": summary,
                    "table": [asdict(r) for r in table],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
