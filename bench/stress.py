"""Long stress run of the runtime: seeded concurrent lifecycle operations, the kernel checked after every step.

The driver is tests/stress_driver.py (the CI test runs a few thousand
operations of it): rounds of the 50-program stress fixture opened with
mixed map policies, most with some tracing programs run as an
application's features (apply, pause, resume, variant switch and
set_constants operations among the others), each step ``--threads``
operations at once, then the runtime's view and the application's status
compared with /proc, the kernel and the configuration. Unlike the test, a
violation ends only its round; the run goes on and reports them all.

Run as root: ``.venv/bin/python bench/stress.py --operations 100000 --threads 8 --seed S``
(or ``python -m bench.stress``). Exits 1 if any invariant was violated.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `tests` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import stress_driver as sd


def _progress(started: float) -> Callable[[sd.Report], None]:
    def show(report: sd.Report) -> None:
        rate = report.operations / (time.perf_counter() - started)
        print(
            f"  {report.operations:>8} operations, round {report.rounds}, {rate:.0f}/s, "
            f"{len(report.violations)} violations",
            file=sys.stderr,
            flush=True,
        )

    return show


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--operations", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    parser.add_argument("--no-attach", action="store_true", help="leave attach/detach out of the operations")
    parser.add_argument("--no-features", action="store_true", help="no round runs programs as features")
    parser.add_argument("--stop", action="store_true", help="stop at the first violation")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(
        f"stress: seed {seed}, {args.operations} operations, {args.threads} threads, "
        f"attach {'off' if args.no_attach else 'on'}, features {'off' if args.no_features else 'on'}",
        flush=True,
    )
    stress = sd.Stress(
        seed=seed,
        threads=args.threads,
        attach=not args.no_attach,
        features=not args.no_features,
        stop_on_violation=args.stop,
        progress=_progress(time.perf_counter()),
    )
    try:
        report = stress.run(args.operations)
    except sd.InvariantError as e:
        report = stress.report
        print(f"stopped: {e}", file=sys.stderr)
    print(
        f"{report.operations} operations in {report.seconds:.1f} s: {report.rate:.0f} operations/s; "
        f"{report.steps} steps, {report.rounds} rounds, {report.checks} checks"
    )
    for outcome, count in sorted(report.outcomes.items()):
        print(f"  {outcome:<22} {count:>8}")
    if report.violations:
        print(f"{len(report.violations)} violations (replay: --seed {seed} --threads {args.threads}):")
        for text in report.violations:
            print(text)
            print()
        return 1
    print("no violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
