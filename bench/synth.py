"""A synthetic "security agent" object: N programs over shared maps, subprograms and globals.

Real agents ship one object with ~200 programs; benchmarks need one of that
shape without depending on a third-party agent's source. Each program hooks a
different syscall tracepoint (so it loads on any kernel with tracepoints),
uses a few of the shared maps, global configuration and a subprogram.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.bpfbuild import CACHE, CFLAGS, clang_version, dynbpf_headers, produce, vmlinux_h

_HEADER = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct event { u32 pid; u32 kind; u64 ts; u64 arg; };

#define MAP(kind, name, k, v, n) \\
    struct { __uint(type, kind); __uint(max_entries, n); __type(key, k); __type(value, v); } name SEC(".maps")

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } events SEC(".maps");
MAP(BPF_MAP_TYPE_HASH, seen, u32, u64, 4096);
MAP(BPF_MAP_TYPE_PERCPU_ARRAY, counts, u32, u64, {nprogs});
MAP(BPF_MAP_TYPE_LRU_HASH, cache, u64, u32, 1024);

const volatile u32 target_pid = 0;
u64 dropped = 0;

static __noinline int count(u32 slot)
{
    u64 *c = bpf_map_lookup_elem(&counts, &slot);
    if (c)
        *c += 1;
    return 0;
}

static __noinline int emit(u32 kind, u64 arg)
{
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        __sync_fetch_and_add(&dropped, 1);
        return 0;
    }
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->kind = kind;
    e->ts = bpf_ktime_get_ns();
    e->arg = arg;
    bpf_ringbuf_submit(e, 0);
    return 0;
}
"""

_PROGRAM = """
SEC("tracepoint/syscalls/{event}")
int handle_{index}(void *ctx)
{{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    u64 one = 1, key = ((u64)pid << 16) | {index};
    if (target_pid && pid != target_pid)
        return 0;
    count({index});
    if ({index} % 3 == 0)
        bpf_map_update_elem(&seen, &pid, &one, BPF_ANY);
    if ({index} % 4 == 1)
        bpf_map_update_elem(&cache, &key, &pid, BPF_ANY);
    return emit({index}, key);
}}
"""


def syscall_events(limit: int) -> list[str]:
    """Tracepoint names of this kernel's syscalls (sys_enter_* then sys_exit_*), from its BTF-free event list."""
    root = Path("/sys/kernel/tracing/events/syscalls")
    if not root.is_dir():
        root = Path("/sys/kernel/debug/tracing/events/syscalls")
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(names) < limit:
        names = [f"sys_enter_fake{i}" for i in range(limit)]  # parse-only benchmarks need no real events
    return names[:limit]


def source(nprogs: int) -> str:
    parts = [_HEADER.replace("{nprogs}", str(nprogs))]
    for i, event in enumerate(syscall_events(nprogs)):
        parts.append(_PROGRAM.format(event=event, index=i))
    return "".join(parts)


def build(nprogs: int = 200) -> Path:
    """Compile the synthetic agent with ``nprogs`` programs (cached by content)."""
    text = source(nprogs)
    header = vmlinux_h()
    key = hashlib.sha256((text + " ".join(CFLAGS) + clang_version()).encode()).hexdigest()[:24]
    out = CACHE / f"synth-{nprogs}-{key}.bpf.o"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        src = out.with_suffix(".c")
        src.write_text(text)
        subprocess.run(["clang", *CFLAGS, "-I", str(header.parent), "-c", str(src), "-o", str(out)], check=True)
    return out


def tracefs_events(group: str) -> list[str]:
    """Sorted event names of one tracefs group ("syscalls", "sched"); empty when tracefs is not mounted."""
    for root in (Path("/sys/kernel/tracing/events"), Path("/sys/kernel/debug/tracing/events")):
        if (root / group).is_dir():
            return sorted(p.name for p in (root / group).iterdir() if p.is_dir())
    return []


def compile_cached(text: str, stem: str) -> Path:
    """Compile BPF C ``text`` against this kernel's vmlinux.h, cached by content.

    The object is ``<CACHE>/<stem>-<key>/<stem>.bpf.o``: libbpf names the
    global-data maps after the file name (``<stem>.rodata``), so the file name
    stays the same whatever the content.
    """
    header = vmlinux_h()
    include, headers = dynbpf_headers()  # dynbpf.h: an object may declare its features in decl tags
    seed = (text + " ".join(CFLAGS) + clang_version() + str(header)).encode() + headers
    key = hashlib.sha256(seed).hexdigest()[:24]
    out = CACHE / f"{stem}-{key}" / f"{stem}.bpf.o"
    src = out.with_suffix(".c")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(text)
    flags = [*CFLAGS, "-I", str(header.parent), "-I", str(include)]
    return produce(out, lambda tmp: ["clang", *flags, "-c", str(src), "-o", str(tmp)], src)
