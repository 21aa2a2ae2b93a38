"""Attach loaded programs to their hooks; every attachment is a :class:`Link`.

``attach(kind, prog_fd, name, **target)`` reads what the section name
already says (``ProgramKind`` from ``dynbpf._elf.sections``) and lets
keywords complete or override it, per kind (docs/attach.md). One module per
family of kinds does the work; this one only picks it. A kind the running
kernel cannot attach raises :class:`~dynbpf.errors.KernelUnsupported` with
the ``dynbpf._probes`` probe that decided it; any other failure raises
:class:`~dynbpf.errors.AttachError` naming the program, the kind and the
target, after undoing whatever was half done.
"""

from __future__ import annotations

import operator
from typing import Any

from dynbpf._attach.cgroup import attach_cgroup
from dynbpf._attach.iter import attach_iter
from dynbpf._attach.kprobe import attach_kprobe
from dynbpf._attach.kprobe_multi import attach_kprobe_multi
from dynbpf._attach.link import IoctlPerfLink, IterLink, Link, LinkGroup
from dynbpf._attach.netdev import DIRECTIONS, attach_tcx, attach_xdp
from dynbpf._attach.netfilter import attach_netfilter
from dynbpf._attach.netns import attach_netns
from dynbpf._attach.perf_event import attach_perf_event
from dynbpf._attach.raw_tp import attach_raw_tp
from dynbpf._attach.request import Request
from dynbpf._attach.sockmap import SockmapAttachment, attach_sockmap
from dynbpf._attach.tracepoint import attach_tracepoint
from dynbpf._attach.tracing import attach_tracing, tracing_kind
from dynbpf._attach.uprobe import attach_uprobe, is_retprobe
from dynbpf._attach.uprobe_multi import attach_uprobe_multi
from dynbpf._attach.usdt import UsdtContext, attach_usdt
from dynbpf._elf.sections import Attacher, ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._sys.constants import AttachType, ProgType

__all__ = [
    "FD_TARGETS",
    "IoctlPerfLink",
    "IterLink",
    "Link",
    "LinkGroup",
    "SockmapAttachment",
    "attach",
    "kind_label",
]

#: target keywords whose value may be an fd of the attaching process (a path names the same thing in any process)
FD_TARGETS = frozenset({"cgroup", "netns", "map", "perf_event_fd", "map_fd", "pid_fd", "cgroup_fd"})

_NOT_YET = {
    Attacher.TRACING_MULTI: "fentry.multi links are not implemented by dynbpf yet",
    Attacher.STRUCT_OPS: "struct_ops programs are not attached one by one: registering their struct_ops map does it",
}

CGROUP_TYPES = frozenset(
    {
        ProgType.CGROUP_SKB,
        ProgType.CGROUP_SOCK,
        ProgType.CGROUP_SOCK_ADDR,
        ProgType.SOCK_OPS,
        ProgType.CGROUP_DEVICE,
        ProgType.CGROUP_SYSCTL,
        ProgType.CGROUP_SOCKOPT,
    }
)

_GATES = {
    Attacher.TRACING_MULTI: attach_features.trampolines,
}


_BY_PROG_TYPE = {
    ProgType.PERF_EVENT: "perf_event",
    ProgType.XDP: "xdp",
    ProgType.NETFILTER: "netfilter",
    ProgType.SK_LOOKUP: "sk_lookup",
    ProgType.FLOW_DISSECTOR: "flow_dissector",
    ProgType.SK_MSG: "sk_msg",
    ProgType.SK_SKB: "sk_skb",
}
_NETNS_TYPES = (ProgType.SK_LOOKUP, ProgType.FLOW_DISSECTOR)
_SOCKMAP_TYPES = (ProgType.SK_MSG, ProgType.SK_SKB)


def kind_label(kind: ProgramKind) -> str:
    """The name a link of this kind goes by (``tracepoint``, ``uretprobe``, ``tp_btf``...)."""
    if kind.prog_type in _BY_PROG_TYPE:
        return _BY_PROG_TYPE[kind.prog_type]
    if kind.prog_type in CGROUP_TYPES or kind.expected_attach_type == AttachType.LSM_CGROUP:
        return "cgroup"
    if kind.prog_type == ProgType.SCHED_CLS:
        eat = kind.expected_attach_type
        return DIRECTIONS[eat][0] if eat in DIRECTIONS else "tc"
    attacher = kind.attacher
    if attacher in (Attacher.TRACING, Attacher.LSM):
        return tracing_kind(kind)
    if attacher is Attacher.UPROBE:
        return "uretprobe" if is_retprobe(kind) else "uprobe"
    if attacher in (Attacher.KPROBE, Attacher.KSYSCALL):
        return kind.rule.split(".")[0].removesuffix("+")
    if attacher is Attacher.UPROBE_MULTI:
        return kind.rule.removesuffix("+").removesuffix(".s")
    if attacher in (Attacher.KPROBE_MULTI, Attacher.KPROBE_SESSION):
        return kind.rule.removesuffix("+")
    return {Attacher.TRACEPOINT: "tracepoint", Attacher.RAW_TP: "raw_tp", Attacher.ITER: "iter"}.get(
        attacher, kind.rule.removesuffix("+")
    )


def attach(
    kind: ProgramKind,
    prog_fd: int,
    program: str | None = None,
    /,
    *,
    attach_btf_id: int = 0,
    usdt_context: UsdtContext | None = None,
    **target: Any,
) -> Link:
    """Attach the loaded program ``prog_fd`` (called ``program``, or ``name=``) to the hook ``kind`` and
    ``target`` describe.

    The returned link is the attachment: it lasts until ``detach()`` (or,
    once pinned, until ``unpin()``). See docs/attach.md for the target
    keywords of each kind. A usdt probe's own ``name=`` needs the program's
    name passed positionally; ``usdt_context`` is the collection's USDT spec
    map, which a usdt program needs (``Program.attach`` passes both).
    """
    name = program if program is not None else target.pop("name", None)
    if not isinstance(name, str):
        raise TypeError("attach() needs the program's name (positionally, or as name=)")
    prog_fd = operator.index(prog_fd)
    request = Request(name, kind_label(kind))
    if kind.error is not None and not target:
        raise request.error(f"{kind.error}; the program loads, but attach() needs its target passed explicitly")
    prog_type = kind.prog_type
    if prog_type == ProgType.PERF_EVENT:
        return attach_perf_event(request, prog_fd, target)
    if prog_type == ProgType.XDP:
        return attach_xdp(request, kind, prog_fd, target)
    if prog_type == ProgType.SCHED_CLS:
        return attach_tcx(request, kind, prog_fd, target)
    if prog_type == ProgType.NETFILTER:
        return attach_netfilter(request, prog_fd, target)
    if prog_type in _NETNS_TYPES:
        return attach_netns(request, kind, prog_fd, target)
    if prog_type in _SOCKMAP_TYPES:
        return attach_sockmap(request, kind, prog_fd, target)
    if prog_type in CGROUP_TYPES or kind.expected_attach_type == AttachType.LSM_CGROUP:
        if kind.expected_attach_type == AttachType.LSM_CGROUP:
            request.require(attach_features.lsm())
        return attach_cgroup(request, kind, prog_fd, target)
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
    if attacher is Attacher.UPROBE_MULTI:
        return attach_uprobe_multi(request, kind, prog_fd, target)
    if attacher is Attacher.USDT:
        return attach_usdt(request, kind, prog_fd, target, usdt_context)
    if attacher in (Attacher.KPROBE_MULTI, Attacher.KPROBE_SESSION):
        return attach_kprobe_multi(request, kind, prog_fd, target)
    gate = _GATES.get(attacher)
    if gate is not None:
        request.require(gate())
    reason = _NOT_YET.get(attacher) or (
        f"{kind.section!r} programs are attached to an object the caller names (a socket, a lirc device...), "
        "which dynbpf._attach does not do yet"
    )
    raise request.at(kind.section).error(reason)
