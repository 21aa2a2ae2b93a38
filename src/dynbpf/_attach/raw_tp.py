"""Raw tracepoint programs (``SEC("raw_tp/<name>")``): BPF_RAW_TRACEPOINT_OPEN.

The kernel has no BPF_LINK_CREATE path for this program type (only for
BTF-typed ``tp_btf`` programs), so this is the one way in. Target keywords:
``tracepoint=`` (the raw tracepoint name, e.g. ``sys_enter``) and
``cookie=`` (kernels from 6.10).
"""

from __future__ import annotations

import errno
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.request import Request, integer, take, text
from dynbpf._elf.sections import ProgramKind, RawTracepointTarget
from dynbpf._probes import attach as attach_features
from dynbpf._sys import commands

ACCEPTED = ("tracepoint", "cookie")


def attach_raw_tp(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    options = take(request, target, ACCEPTED)
    name = text(request, options, "tracepoint")
    if name is None and isinstance(kind.target, RawTracepointTarget):
        name = kind.target.name
    if name is None:
        raise request.error(
            'no tracepoint given: name it in the section (SEC("raw_tp/<name>")) or pass tracepoint= to attach()'
        )
    request = request.at(name)
    cookie = integer(request, options, "cookie", 0)
    fd = request.call(
        lambda: commands.raw_tracepoint_open(name, prog_fd, cookie),
        probe=attach_features.raw_tracepoint,
        reasons={
            errno.ENOENT: f"no raw tracepoint {name!r} in the kernel or its modules",
            errno.E2BIG: "this kernel predates raw tracepoint cookies (6.10)",
        },
    )
    return Link(fd, kind=request.kind, description=request.what)
