"""How cheap is opening kernel BTF? dynbpf's lazy Spec beside libbpf's btf__new, in one run.

Reports the cold parse of vmlinux (header check + offset index; the goal is
<= 150 ms), the name index built by the first ``find``, decoding every type,
and what each step adds to the process's resident memory. libbpf parses the
same bytes with ``btf__new`` (ctypes on libbpf.so.1) and its time, memory and
name lookup are printed beside ours with the ratio. Memory is measured first,
in a quiet heap; parse timings are the best of ``--runs``.
Run: `.venv/bin/python -m bench.btf_parse`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynbpf._btf import Kind, Spec

PAGE = os.sysconf("SC_PAGESIZE")
MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def best(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def per_call(fn: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


class Libbpf:
    def __init__(self) -> None:
        lib = ctypes.CDLL("libbpf.so.1")
        lib.btf__new.restype = ctypes.c_void_p
        lib.btf__new.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.btf__free.argtypes = [ctypes.c_void_p]
        lib.btf__type_cnt.restype = ctypes.c_uint32
        lib.btf__type_cnt.argtypes = [ctypes.c_void_p]
        lib.btf__find_by_name_kind.restype = ctypes.c_int32
        lib.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
        lib.libbpf_get_error.restype = ctypes.c_long
        lib.libbpf_get_error.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def parse(self, data: bytes) -> int:
        btf: int | None = self.lib.btf__new(data, len(data))
        if not btf or self.lib.libbpf_get_error(btf):
            raise RuntimeError("libbpf btf__new failed")
        return btf

    def free(self, btf: int) -> None:
        self.lib.btf__free(btf)

    def find(self, btf: int, name: str, kind: Kind) -> int:
        found: int = self.lib.btf__find_by_name_kind(btf, name.encode(), kind)
        return found


@dataclass
class Costs:
    """Time (s) and resident memory (bytes) of each step, in the order a loader pays them."""

    parse: float
    parse_mem: int
    index: float
    index_mem: int
    decode: float
    decode_mem: int
    libbpf_mem: int


def costs(data: bytes, libbpf: Libbpf) -> Costs:
    gc.collect()
    start = rss()
    t0 = time.perf_counter()
    spec = Spec.parse(data)
    parse = time.perf_counter() - t0
    parsed = rss()
    t0 = time.perf_counter()
    spec.find("task_struct", Kind.STRUCT)
    index = time.perf_counter() - t0
    indexed = rss()
    t0 = time.perf_counter()
    for type_id in range(len(spec)):
        spec[type_id]
    decode = time.perf_counter() - t0
    decoded = rss()
    del spec
    gc.collect()
    before = rss()
    btf = libbpf.parse(data)
    libbpf_mem = rss() - before
    libbpf.free(btf)
    return Costs(parse, parsed - start, index, indexed - parsed, decode, decoded - indexed, libbpf_mem)


def lookups(data: bytes, libbpf: Libbpf) -> list[tuple[str, float, float]]:
    """(what, ours, libbpf's) seconds per lookup of an early and a late type id."""
    spec = Spec.parse(data)
    btf = libbpf.parse(data)
    late = max(i for i in range(max(len(spec) - 2000, 1), len(spec)) if spec.kind(i) == Kind.FUNC)
    late_name = getattr(spec[late], "name", "")
    out = []
    for label, name, kind in (("task_struct", "task_struct", Kind.STRUCT), (f"FUNC [{late}]", late_name, Kind.FUNC)):
        assert spec.find(name, kind)[0] == libbpf.find(btf, name, kind)
        ours = per_call(lambda n=name, k=kind: spec.find(n, k), 5000)  # type: ignore[misc]
        theirs = per_call(lambda n=name, k=kind: libbpf.find(btf, n, k), 50)  # type: ignore[misc]
        out.append((label, ours, theirs))
    libbpf.free(btf)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--path", default="/sys/kernel/btf/vmlinux")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    libbpf = Libbpf()
    t0 = time.perf_counter()
    with open(args.path, "rb") as f:
        data = f.read()
    read = time.perf_counter() - t0

    c = costs(data, libbpf)
    ours = best(lambda: Spec.parse(data), args.runs)
    theirs = best(lambda: libbpf.free(libbpf.parse(data)), args.runs)
    ntypes = len(Spec.parse(data)) - 1

    print(f"{args.path}: {len(data) / MiB:.1f} MiB, {ntypes} types, read in {read * 1e3:.1f} ms")
    print(f"parse (header + offset index): cold {c.parse * 1e3:5.1f} ms, best {ours * 1e3:5.1f} ms")
    print(f"libbpf btf__new (same bytes):            best {theirs * 1e3:5.1f} ms   ratio {ours / theirs:.1f}x")
    print(f"name index (first find):       {c.index * 1e3:5.1f} ms")
    print(f"decode every type:             {c.decode * 1e3:5.0f} ms")
    for label, ours_find, theirs_find in lookups(data, libbpf):
        print(f"find {label:<14} {ours_find * 1e6:8.1f} us   libbpf btf__find_by_name_kind {theirs_find * 1e6:8.1f} us")
    print("resident memory added (the blob itself is the caller's bytes, shared, not copied):")
    print(f"  parsed Spec      {c.parse_mem / MiB:6.1f} MiB")
    print(f"  + name index     {c.index_mem / MiB:6.1f} MiB")
    print(f"  + every type     {c.decode_mem / MiB:6.1f} MiB")
    print(f"  libbpf btf__new  {c.libbpf_mem / MiB:6.1f} MiB (copies the blob, then indexes it)")


if __name__ == "__main__":
    main()
