"""Does bpf(2) through ctypes really release the GIL?

Verifies the same CPU-heavy program N times serially, then split across
threads, and prints both wall times and their ratio. On an idle 2-core
machine the ratio approaches 0.5; 1.0 would mean the GIL serialised the
verifier. Run as root: `.venv/bin/python -m bench.gil_release`.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from dynbpf._asm.insn import R0, Insn, alu64_imm, jmp_imm, mov64_imm, return_imm
from dynbpf._asm.opcodes import AluOp, JmpOp
from dynbpf._probes.trial import load
from dynbpf._sys.constants import ProgType


def busy_program(iterations: int) -> list[Insn]:
    """A bounded loop the verifier walks ``iterations`` times: real verification cost."""
    return [mov64_imm(R0, 0), alu64_imm(AluOp.ADD, R0, 1), jmp_imm(JmpOp.JLT, R0, iterations, -2), *return_imm(0)]


def verify(prog: list[Insn], n: int) -> None:
    for _ in range(n):
        trial = load(ProgType.SOCKET_FILTER, prog)
        if not trial.ok:
            raise RuntimeError(f"load failed: {trial.result}")
        trial.close()


def measure(iterations: int, loads: int, threads: int) -> tuple[float, float]:
    """Wall seconds to verify ``loads`` programs serially, then over ``threads`` threads."""
    prog = busy_program(iterations)
    verify(prog, 1)  # warm caches
    t0 = time.perf_counter()
    verify(prog, loads)
    serial = time.perf_counter() - t0
    workers = [threading.Thread(target=verify, args=(prog, loads // threads)) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return serial, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--loads", type=int, default=8, help="programs to verify in each mode")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--iterations", type=int, default=250_000, help="loop trips the verifier walks")
    args = parser.parse_args()
    serial, parallel = measure(args.iterations, args.loads, args.threads)
    print(f"programs verified: {args.loads} ({args.iterations} loop trips each), threads: {args.threads}")
    print(f"serial:   {serial:.3f} s")
    print(f"parallel: {parallel:.3f} s")
    print(f"ratio:    {parallel / serial:.2f} (ideal {1 / args.threads:.2f})")


if __name__ == "__main__":
    main()
