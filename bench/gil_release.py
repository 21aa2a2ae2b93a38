"""Does bpf(2) through ctypes really release the GIL?

Verifies the same CPU-heavy program N times serially, then split across
threads, and prints both wall times and their ratio. On an idle 2-core
machine the ratio approaches 0.5; 1.0 would mean the GIL serialised the
verifier. Run as root: `.venv/bin/python bench/gil_release.py`.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from dynbpf.asm.insn import R0, Insn, alu64_imm, jmp_imm, mov64_imm, return_imm
from dynbpf.asm.opcodes import AluOp, JmpOp
from dynbpf.features.trial import load
from dynbpf.sys.constants import ProgType


def program(iterations: int) -> list[Insn]:
    return [mov64_imm(R0, 0), alu64_imm(AluOp.ADD, R0, 1), jmp_imm(JmpOp.JLT, R0, iterations, -2), *return_imm(0)]


def verify(prog: list[Insn], n: int) -> None:
    for _ in range(n):
        trial = load(ProgType.SOCKET_FILTER, prog)
        if not trial.ok:
            raise SystemExit(f"load failed: {trial.result}")
        trial.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=8, help="programs to verify in each mode")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--iterations", type=int, default=250_000, help="loop trips the verifier walks")
    args = parser.parse_args()
    prog = program(args.iterations)
    verify(prog, 1)

    t0 = time.perf_counter()
    verify(prog, args.loads)
    serial = time.perf_counter() - t0

    per_thread = args.loads // args.threads
    threads = [threading.Thread(target=verify, args=(prog, per_thread)) for _ in range(args.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parallel = time.perf_counter() - t0

    print(f"programs verified: {args.loads} ({args.iterations} loop trips each), threads: {args.threads}")
    print(f"serial:   {serial:.3f} s")
    print(f"parallel: {parallel:.3f} s")
    print(f"ratio:    {parallel / serial:.2f} (ideal {1 / args.threads:.2f})")


if __name__ == "__main__":
    main()
