"""How fast is reading a large object? dynbpf beside libbpf's open.

Builds the synthetic agent object (bench/synth.py, 200 programs by default)
and times, in the same run, ``dynbpf.read`` — split into the ELF layer
(sections, symbols, relocations) and the rest — against libbpf 1.1's
``bpf_object__open_file`` + ``bpf_object__close`` through ctypes (open only,
no kernel work). Run: `.venv/bin/python -m bench.elf_read [--programs N]`.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.synth import build
from dynbpf._elf import read
from dynbpf._elf.image import Image

LIBBPF = "/usr/lib/x86_64-linux-gnu/libbpf.so.1"


def libbpf_open(path: Path) -> Callable[[], None]:
    lib = ctypes.CDLL(LIBBPF)
    lib.bpf_object__open_file.restype = ctypes.c_void_p
    lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.bpf_object__close.argtypes = [ctypes.c_void_p]
    quiet = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda *_: 0)
    lib.libbpf_set_print.restype = ctypes.c_void_p
    lib.libbpf_set_print(quiet)
    raw = str(path).encode()

    def run() -> None:
        obj = lib.bpf_object__open_file(raw, None)
        if not obj:
            raise RuntimeError("libbpf could not open the object")
        lib.bpf_object__close(obj)

    run.keep_alive = quiet  # type: ignore[attr-defined]
    return run


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    path = build(args.programs)
    data = path.read_bytes()
    spec = read(path)
    total = median_ms(lambda: read(path), args.runs)
    elf = median_ms(lambda: Image(data), args.runs)
    ref = median_ms(libbpf_open(path), args.runs)
    insns = sum(len(f.instructions) for f in spec.functions.values())
    print(f"object: {args.programs} programs, {len(spec.maps)} maps, {insns} instructions, {len(data)} bytes")
    print(f"dynbpf.read:         {total:8.1f} ms (median of {args.runs})")
    print(f"  of which ELF layer: {elf:8.1f} ms (headers, symbols)")
    print(f"libbpf open+close:   {ref:8.1f} ms")
    print(f"ratio dynbpf/libbpf: {total / ref:8.1f}x")


if __name__ == "__main__":
    main()
