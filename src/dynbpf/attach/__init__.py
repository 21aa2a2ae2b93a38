"""Attach loaded programs to their hooks; every attachment is a :class:`Link`.

``attach(kind, prog_fd, name=..., **target)`` reads what the section name
already says (``ProgramKind`` from ``dynbpf.elf.sections``) and lets
keywords complete or override it, per kind (docs/attach.md). One module per
family of kinds does the work; this one only picks it. A kind the running
kernel cannot attach raises :class:`~dynbpf.errors.KernelUnsupported` with
the ``dynbpf.features`` probe that decided it; any other failure raises
:class:`~dynbpf.errors.AttachError` naming the program, the kind and the
target, after undoing whatever was half done.
"""

from __future__ import annotations

import operator
from typing import Any

from dynbpf.attach.iter import attach_iter
from dynbpf.attach.kprobe import attach_kprobe
from dynbpf.attach.link import IoctlPerfLink, IterLink, Link, LinkGroup
from dynbpf.attach.perf_event import attach_perf_event
from dynbpf.attach.raw_tp import attach_raw_tp
from dynbpf.attach.request import Request
from dynbpf.attach.tracepoint import attach_tracepoint
from dynbpf.attach.tracing import attach_tracing, tracing_kind
from dynbpf.attach.uprobe import attach_uprobe, is_retprobe
from dynbpf.elf.sections import Attacher, ProgramKind
from dynbpf.features import attach as attach_features
from dynbpf.sys.constants import ProgType

__all__ = ["IoctlPerfLink", "IterLink", "Link", "LinkGroup", "attach", "kind_label"]

_NOT_YET = {
    Attacher.USDT: "usdt programs need the binary's USDT notes and argument specs, which dynbpf does not read yet",
    Attacher.KPROBE_MULTI: "kprobe.multi links are not implemented by dynbpf yet",
    Attacher.KPROBE_SESSION: "kprobe.session links are not implemented by dynbpf yet",
    Attacher.UPROBE_MULTI: "uprobe.multi links are not implemented by dynbpf yet; use a uprobe per function",
    Attacher.TRACING_MULTI: "fentry.multi links are not implemented by dynbpf yet",
    Attacher.STRUCT_OPS: "struct_ops programs are not attached one by one: registering their struct_ops map does it",
}

_GATES = {
    Attacher.KPROBE_MULTI: attach_features.kprobe_multi,
    Attacher.KPROBE_SESSION: attach_features.kprobe_multi,
    Attacher.UPROBE_MULTI: attach_features.uprobe_multi,
    Attacher.TRACING_MULTI: attach_features.trampolines,
}


def kind_label(kind: ProgramKind) -> str:
    """The name a link of this kind goes by (``tracepoint``, ``uretprobe``, ``tp_btf``...)."""
    if kind.prog_type == ProgType.PERF_EVENT:
        return "perf_event"
    attacher = kind.attacher
    if attacher in (Attacher.TRACING, Attacher.LSM):
        return tracing_kind(kind)
    if attacher is Attacher.UPROBE:
        return "uretprobe" if is_retprobe(kind) else "uprobe"
    if attacher in (Attacher.KPROBE, Attacher.KSYSCALL):
        return kind.rule.split(".")[0].removesuffix("+")
    return {Attacher.TRACEPOINT: "tracepoint", Attacher.RAW_TP: "raw_tp", Attacher.ITER: "iter"}.get(
        attacher, kind.rule.removesuffix("+")
    )


def attach(kind: ProgramKind, prog_fd: int, *, name: str, attach_btf_id: int = 0, **target: Any) -> Link:
    """Attach the loaded program ``prog_fd`` (called ``name``) to the hook ``kind`` and ``target`` describe.

    The returned link is the attachment: it lasts until ``detach()`` (or,
    once pinned, until ``unpin()``). See docs/attach.md for the target
    keywords of each kind.
    """
    prog_fd = operator.index(prog_fd)
    request = Request(name, kind_label(kind))
    if kind.prog_type == ProgType.PERF_EVENT:
        return attach_perf_event(request, prog_fd, target)
    attacher = kind.attacher
    if attacher is Attacher.TRACEPOINT:
        return attach_tracepoint(request, kind, prog_fd, target)
    if attacher is Attacher.RAW_TP:
        return attach_raw_tp(request, kind, prog_fd, target)
    if attacher in (Attacher.TRACING, Attacher.LSM):
        return attach_tracing(request, kind, prog_fd, target, attach_btf_id=attach_btf_id)
    if attacher is Attacher.ITER:
        return attach_iter(request, kind, prog_fd, target, attach_btf_id=attach_btf_id)
    if attacher is Attacher.UPROBE:
        return attach_uprobe(request, kind, prog_fd, target)
    if attacher in (Attacher.KPROBE, Attacher.KSYSCALL):
        return attach_kprobe(request, kind, prog_fd, target)
    gate = _GATES.get(attacher)
    if gate is not None:
        request.require(gate())
    reason = _NOT_YET.get(attacher) or (
        f"{kind.section!r} programs are attached to an object the caller names (an interface, a cgroup, a socket "
        "map...), which dynbpf.attach does not do yet"
    )
    raise request.at(kind.section).error(reason)
