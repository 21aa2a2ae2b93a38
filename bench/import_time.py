"""What does ``import dynbpf`` cost? Fresh interpreters beside a bare one, in one run.

The goal (issue 12): ``python -c 'import dynbpf'`` within 60 ms of
``python -c pass``. Each row is the median wall time of fresh ``python -c``
processes; the rows take turns run by run, so a busy moment of the machine
hits all of them alike. Besides the bare import, "dynbpf.open ready" also
touches ``dynbpf.open``, which imports what reading and preparing an object
needs (informational: that is the price of the first real use).

Two bytecode states, each on a private copy of ``src/dynbpf`` put first on
``PYTHONPATH``, so the checkout's ``__pycache__`` is neither read nor written:

- cached ``.pyc``: written by a warm-up run, as an installed package has them;
- no ``.pyc``: ``PYTHONDONTWRITEBYTECODE=1`` and none written, so every
  dynbpf module is compiled at each start (how a checkout runs where that
  variable is set, as on the project's test machine).

Run: ``.venv/bin/python -m bench.import_time [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "dynbpf"
GOAL_MS = 60.0

SCENARIOS = {
    "bare interpreter": "pass",
    "import dynbpf": "import dynbpf",
    "dynbpf.open ready": "import dynbpf; dynbpf.open",
}
MODES = ("cached .pyc", "no .pyc")


def environment(root: Path, *, write_bytecode: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPATH"] = str(root)
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def copy_package(into: Path) -> Path:
    """A copy of the package without bytecode; the directory to put on PYTHONPATH."""
    root = into / "site"
    shutil.copytree(SRC, root / "dynbpf", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"python -c {code!r} failed:\n{done.stderr}")
    return done.stdout


def wall(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def modules_loaded(code: str, env: dict[str, str]) -> tuple[int, int]:
    """(dynbpf modules, all modules) that ``code`` adds to a bare interpreter's."""
    listing = "print(json.dumps(list(set(sys.modules) - before)))"
    out = run(f"import json, sys; before = set(sys.modules); {code}; {listing}", env)
    added = json.loads(out)
    return sum(m == "dynbpf" or m.startswith("dynbpf.") for m in added), len(added)


def measure(runs: int, envs: dict[str, dict[str, str]]) -> dict[tuple[str, str], list[float]]:
    times: dict[tuple[str, str], list[float]] = {(m, s): [] for m in envs for s in SCENARIOS}
    for _ in range(runs):
        for mode, env in envs.items():
            for label, code in SCENARIOS.items():
                times[mode, label].append(wall(code, env))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21, help="fresh processes per row and bytecode state (median)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dynbpf-import-") as tmp:
        envs = {
            "cached .pyc": environment(copy_package(Path(tmp, "cached")), write_bytecode=True),
            "no .pyc": environment(copy_package(Path(tmp, "plain")), write_bytecode=False),
        }
        for mode, env in envs.items():
            where = run("import dynbpf; print(dynbpf.__file__)", env).strip()
            if not where.startswith(env["PYTHONPATH"]):
                raise SystemExit(f"{mode}: dynbpf was imported from {where}, not from the copy under test")
            for code in SCENARIOS.values():
                run(code, env)  # the cached copy's .pyc are written here; both warm the page cache
        loaded = {label: modules_loaded(code, envs["cached .pyc"]) for label, code in SCENARIOS.items()}
        times = measure(args.runs, envs)

    median = {key: statistics.median(ts) * 1000 for key, ts in times.items()}
    bare = {mode: median[mode, "bare interpreter"] for mode in MODES}
    print(f"python {sys.version.split()[0]}, {args.runs} fresh processes per cell, median wall time")
    print(f"{'':20s}{MODES[0]:^26s}{MODES[1]:^26s}modules added")
    print(f"{'':20s}" + f"{'median':>12s}{'over bare':>12s}  " * 2 + "(dynbpf/all)")
    for label in SCENARIOS:
        cells = ""
        for mode in MODES:
            ms = median[mode, label]
            extra = f"{ms - bare[mode]:+8.1f} ms" if label != "bare interpreter" else f"{'-':>11s}"
            cells += f"{ms:9.1f} ms {extra}  "
        ours, everything = loaded[label]
        print(f"{label:20s}{cells}{ours:6d}/{everything}")
    over = {mode: median[mode, "import dynbpf"] - bare[mode] for mode in MODES}
    verdict = "met" if all(v <= GOAL_MS for v in over.values()) else "NOT met"
    print(
        f"goal: import dynbpf <= bare interpreter + {GOAL_MS:.0f} ms: {verdict} "
        f"({', '.join(f'{mode} {v:+.1f} ms' for mode, v in over.items())})"
    )


if __name__ == "__main__":
    main()
