"""Parallel, selective and repeated loads of a 200-program agent: dynbpf beside libbpf 1.1, same object, same run.

The object is bench/synth_agent.py's. libbpf's reference is what an
application does today: open, then ``bpf_object__load``, which verifies
every program serially. Each scenario runs in its own process (peak RSS is
VmHWM, the side's own), scenarios interleaved, ``--repeat`` processes each:

- ``libbpf-full``: open + ``bpf_object__load`` of every program;
- ``libbpf-part-P``: the same with autoload off for all but P % of the programs;
- ``dynbpf-full-W``: ``dynbpf.open`` + ``coll.load(workers=W)`` of every program;
- ``dynbpf-part-P``: ``dynbpf.open`` + ``coll.load(P % of the programs, workers=cores)``;
- ``dynbpf-later``: everything loaded but one program, then that one loaded
  (``Program.load``), and ``Program.reload`` of a loaded one — medians over 10
  programs.

The P % subsets take every (100/P)-th program of the plan, so each mixes
families and costs as much per program as the whole. Run as root:

    .venv/bin/python -m bench.runtime_load [--programs N] [--repeat K] [--json out.json]
    .tools/bin/uv run --no-project --with matplotlib python -m bench.runtime_load \\
        --plot out.json /tmp/runtime_load.png

matplotlib is not a project dependency (the locked environment stays lean):
``uv run --with`` fetches it into a throwaway environment for the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.prepare_load import Libbpf, _maxrss_kib, machine, median

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
WORKERS = sorted({1, 2, 3, 4, CORES})
PARTS = (10, 25, 50)
SELECTIVE = 10  # the issue's "selective load": 10 % of the programs
LATER_SAMPLES = 10


def subset(names: list[str], percent: int) -> list[str]:
    step = 100 / percent
    return [names[int(i * step)] for i in range(max(1, round(len(names) * percent / 100)))]


# --- scenarios (run in a worker process) ----------------------------------------------------


def libbpf_run(path: Path, percent: int) -> dict[str, float]:
    libbpf = Libbpf()
    t0 = time.perf_counter()
    with libbpf.object(path) as obj:
        t1 = time.perf_counter()
        programs = libbpf.programs(obj)
        if percent < 100:
            keep = set(subset([n for n, _ in programs], percent))
            for name, prog in programs:
                libbpf.lib.bpf_program__set_autoload(prog, name in keep)
        libbpf.load(obj)
        t2 = time.perf_counter()
    return {"open": t1 - t0, "load": t2 - t1, "total": t2 - t0}


def dynbpf_run(path: Path, percent: int, workers: int) -> dict[str, float]:
    import dynbpf

    t0 = time.perf_counter()
    with dynbpf.open(path) as coll:
        t1 = time.perf_counter()
        names = list(coll.programs)
        chosen = names if percent == 100 else subset(names, percent)
        failures = coll.load(chosen, workers=workers)
        t2 = time.perf_counter()
        if failures:
            raise RuntimeError(f"{len(failures)} programs failed: {next(iter(failures.values()))}")
    return {"open": t1 - t0, "load": t2 - t1, "total": t2 - t0}


def dynbpf_later(path: Path) -> dict[str, float]:
    import dynbpf

    with dynbpf.open(path) as coll:
        names = list(coll.programs)
        late = subset(names, 5)[:LATER_SAMPLES]
        assert not coll.load([n for n in names if n not in late], workers=CORES)
        loads, reloads = [], []
        for name in late:
            t0 = time.perf_counter()
            coll.programs[name].load()
            loads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            coll.programs[name].reload()
            reloads.append(time.perf_counter() - t0)
    return {"load_one": median(loads), "reload_one": median(reloads)}


def worker(scenario: str, path: Path) -> dict[str, Any]:
    side, kind, *arg = scenario.split("-")
    if side == "dynbpf":
        import dynbpf  # noqa: F401 - imports before the baseline RSS
    baseline = _maxrss_kib()
    if side == "libbpf":
        result = libbpf_run(path, 100 if kind == "full" else int(arg[0]))
    elif kind == "later":
        result = dynbpf_later(path)
    elif kind == "full":
        result = dynbpf_run(path, 100, int(arg[0]))
    else:
        result = dynbpf_run(path, int(arg[0]), CORES)
    return {**result, "baseline_kib": baseline, "maxrss_kib": _maxrss_kib()}


def spawn(scenario: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.runtime_load", "--worker", scenario, "--path", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {scenario} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# --- report ---------------------------------------------------------------------------------


def scenarios() -> list[str]:
    return [
        "libbpf-full",
        *(f"libbpf-part-{p}" for p in PARTS),
        *(f"dynbpf-full-{w}" for w in WORKERS),
        *(f"dynbpf-part-{p}" for p in PARTS),
        "dynbpf-later",
    ]


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for scenario, runs in raw.items():
        keys = [k for k in runs[0] if k not in ("baseline_kib",)]
        out[scenario] = {k: median([r[k] for r in runs]) for k in keys}
    return out


def report(summary: dict[str, dict[str, float]], programs: int, repeat: int) -> None:
    ref = summary["libbpf-full"]
    print(f"median of {repeat} processes per scenario; {programs} programs; {CORES} cores")
    print(f"{'scenario':34} {'open s':>8} {'load s':>8} {'total s':>8} {'vs libbpf':>10} {'peak RSS':>9}")

    def row(label: str, s: dict[str, float]) -> None:
        ratio = ref["total"] / s["total"]
        print(
            f"{label:34} {s['open']:8.3f} {s['load']:8.3f} {s['total']:8.3f} {ratio:9.2f}x "
            f"{s['maxrss_kib'] / 1024:7.0f} MiB"
        )

    row("libbpf open + bpf_object__load", ref)
    for w in WORKERS:
        row(f"dynbpf open + load, {w} worker(s)", summary[f"dynbpf-full-{w}"])
    for p in PARTS:
        row(f"libbpf, {p} % of programs", summary[f"libbpf-part-{p}"])
        row(f"dynbpf, {p} % of programs", summary[f"dynbpf-part-{p}"])
    later = summary["dynbpf-later"]
    print(
        f"dynbpf one more program later:  {later['load_one'] * 1000:.1f} ms; reload of one: "
        f"{later['reload_one'] * 1000:.1f} ms (medians over {LATER_SAMPLES} programs)"
    )
    full = summary[f"dynbpf-full-{CORES}"]
    part = summary[f"dynbpf-part-{SELECTIVE}"]
    speedup_total = ref["total"] / full["total"]
    speedup_load = ref["load"] / full["load"]
    selective = part["total"] / ref["total"]
    print("goals:")
    verdict = "met" if speedup_total >= 1.8 else "met for the load phase" if speedup_load >= 1.8 else "missed"
    print(f"  full parallel load >= 1.8x libbpf: open+load {speedup_total:.2f}x,", end=" ")
    print(f"load phase {speedup_load:.2f}x: {verdict}")
    part_load = part["load"] / ref["load"]
    verdict = "met" if selective <= 0.15 else "met for the load phase" if part_load <= 0.15 else "missed"
    print(f"  selective {SELECTIVE} % <= 0.15x libbpf full: open+load {selective:.3f}x,", end=" ")
    print(f"load phase {part_load:.3f}x: {verdict}")


def plot(summary: dict[str, dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = summary["libbpf-full"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    totals = [summary[f"dynbpf-full-{w}"]["total"] for w in WORKERS]
    loads = [summary[f"dynbpf-full-{w}"]["load"] for w in WORKERS]
    left.plot(WORKERS, totals, "o-", label="dynbpf open + coll.load(workers=N)")
    left.plot(WORKERS, loads, "s--", label="dynbpf coll.load only")
    left.axhline(ref["total"], color="tab:red", label="libbpf open + bpf_object__load (serial)")
    left.axvline(CORES, color="grey", linestyle=":", linewidth=1)
    left.set(xlabel="workers (threads)", ylabel="wall time, s", title="All programs, by workers", ylim=(0, None))
    left.set_xticks(WORKERS)
    left.legend(fontsize=8)
    percents = [*PARTS, 100]
    dyn = [*(summary[f"dynbpf-part-{p}"]["total"] for p in PARTS), summary[f"dynbpf-full-{CORES}"]["total"]]
    lib = [*(summary[f"libbpf-part-{p}"]["total"] for p in PARTS), ref["total"]]
    dyn_load = [*(summary[f"dynbpf-part-{p}"]["load"] for p in PARTS), summary[f"dynbpf-full-{CORES}"]["load"]]
    right.plot(percents, dyn, "o-", label=f"dynbpf open + coll.load(workers={CORES})")
    right.plot(percents, dyn_load, "s--", label="dynbpf coll.load only")
    right.plot(percents, lib, "o-", color="tab:red", label="libbpf open + load (autoload subset)")
    right.axhline(ref["total"] * 0.15, color="grey", linestyle=":", linewidth=1, label="0.15x libbpf full")
    right.set(xlabel="% of programs loaded", ylabel="wall time, s", title="By programs loaded", ylim=(0, None))
    right.set_xticks(percents)
    right.legend(fontsize=8)
    save_figure(fig, out)


def save_figure(fig: Any, out: Path) -> None:
    """Lay out and write a benchmark's plot (every bench plot is saved the same way)."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="processes per scenario (median reported)")
    ap.add_argument("--json", type=Path, help="write the raw results and summary here")
    ap.add_argument("--plot", nargs=2, type=Path, metavar=("RESULTS_JSON", "PNG"), help="plot saved results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path)))
        return
    if args.plot:
        saved = json.loads(args.plot[0].read_text())
        plot(saved["summary"], args.plot[1])
        return

    from bench.synth_agent import build

    path = build(args.programs)
    print(f"machine: {machine()}")
    print(f"object: {path.name}, {args.programs} programs ({path})")
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios()}
    for _ in range(args.repeat):
        for s in scenarios():
            raw[s].append(spawn(s, path))
    summary = summarise(raw)
    report(summary, args.programs, args.repeat)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "programs": args.programs, "raw": raw, "summary": summary}, indent=1)
        )


if __name__ == "__main__":
    main()
