"""What the kernel says a link is: its type, ids, and the hook it sits on.

A link opened from a pin carries no Python-side memory of how it was made,
so its kind and description are rebuilt from ``bpf_link_info``. The
per-type part of that struct is kept as raw bytes by ``sys.attrs``; the few
fields read here are decoded by offset (``union`` starts 16 bytes in).
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass

from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkInfo
from dynbpf._sys.constants import AttachType, LinkType, ProgType, type_name
from dynbpf.errors import DynbpfError

UNION = 16  # offset of the per-type union in bpf_link_info
_NAME_MAX = 4096

#: the union fields read or set here, by their kernel names, at their offsets inside the union
#: (each ``*name`` pointer is followed by its u32 length; tests check all of them against kernel BTF)
FIELDS = {
    "raw_tracepoint.tp_name": 0,
    "raw_tracepoint.tp_name_len": 8,
    "tracing.attach_type": 0,
    "tracing.target_btf_id": 8,
    "iter.target_name": 0,
    "iter.target_name_len": 8,
    "iter.map.map_id": 12,
    "perf_event.type": 0,
    "perf_event.uprobe.file_name": 8,
    "perf_event.uprobe.name_len": 16,
    "perf_event.uprobe.offset": 20,
    "perf_event.kprobe.func_name": 8,
    "perf_event.kprobe.name_len": 16,
    "perf_event.kprobe.offset": 20,
    "perf_event.tracepoint.tp_name": 8,
    "perf_event.tracepoint.name_len": 16,
    "cgroup.cgroup_id": 0,
    "cgroup.attach_type": 8,
    "xdp.ifindex": 0,
    "tcx.ifindex": 0,
    "tcx.attach_type": 4,
    "netns.netns_ino": 0,
    "netns.attach_type": 4,
    "sockmap.map_id": 0,
    "sockmap.attach_type": 4,
    "netfilter.pf": 0,
    "netfilter.hooknum": 4,
    "netfilter.priority": 8,
    "kprobe_multi.count": 8,
    "kprobe_multi.flags": 12,
    "uprobe_multi.path": 0,
    "uprobe_multi.path_size": 32,
    "uprobe_multi.count": 36,
    "uprobe_multi.flags": 40,
    "uprobe_multi.pid": 44,
}

#: bpf_link_info.perf_event.type (enum bpf_perf_event_type)
PERF_EVENT_KINDS = {1: "uprobe", 2: "uretprobe", 3: "kprobe", 4: "kretprobe", 5: "tracepoint", 6: "perf_event"}

TRACING_KINDS: dict[int, str] = {
    AttachType.TRACE_RAW_TP: "tp_btf",
    AttachType.TRACE_FENTRY: "fentry",
    AttachType.TRACE_FEXIT: "fexit",
    AttachType.MODIFY_RETURN: "fmod_ret",
    AttachType.LSM_MAC: "lsm",
    AttachType.TRACE_FSESSION: "fsession",
}


@dataclass(frozen=True, slots=True)
class LinkFacts:
    link_type: int
    id: int
    prog_id: int
    kind: str
    description: str


def _u32(info: LinkInfo, field: str) -> int:
    return int(struct.unpack_from("=I", info, UNION + FIELDS[field])[0])


def _name_request(link_type: int, info: LinkInfo) -> tuple[int, int] | None:
    """Where the kernel writes the hook's name for this link type: offsets of the pointer and its length."""
    if link_type == LinkType.UPROBE_MULTI:
        return FIELDS["uprobe_multi.path"], FIELDS["uprobe_multi.path_size"]
    field = _name_field(link_type, info)
    return (FIELDS[field], FIELDS[field] + 8) if field else None


def _name_field(link_type: int, info: LinkInfo) -> str | None:
    if link_type == LinkType.RAW_TRACEPOINT:
        return "raw_tracepoint.tp_name"
    if link_type == LinkType.ITER:
        return "iter.target_name"
    perf_kind = PERF_EVENT_KINDS.get(_u32(info, "perf_event.type")) if link_type == LinkType.PERF_EVENT else None
    if perf_kind in ("uprobe", "uretprobe"):
        return "perf_event.uprobe.file_name"
    if perf_kind in ("kprobe", "kretprobe"):
        return "perf_event.kprobe.func_name"
    if perf_kind == "tracepoint":
        return "perf_event.tracepoint.tp_name"
    return None


def link_facts(fd: int) -> LinkFacts:
    """Type, ids, kind and a description of the link behind ``fd`` (two OBJ_GET_INFO calls at most)."""
    info = commands.link_info(fd)
    link_type = int(info.type)
    name = ""
    where = _name_request(link_type, info)
    if where is not None:
        buf = ctypes.create_string_buffer(_NAME_MAX)
        named = LinkInfo()
        if link_type == LinkType.PERF_EVENT:
            struct.pack_into("=I", named, UNION + FIELDS["perf_event.type"], _u32(info, "perf_event.type"))
        pointer, length = where
        struct.pack_into("=Q", named, UNION + pointer, ctypes.addressof(buf))
        struct.pack_into("=I", named, UNION + length, _NAME_MAX)
        info = commands.obj_info(fd, named)
        name = buf.value.decode(errors="replace")
    kind, description = _describe(link_type, info, name)
    return LinkFacts(link_type, int(info.id), int(info.prog_id), kind, description)


def _program_type(prog_id: int) -> int | None:
    """A tp_btf program's link is a raw tracepoint link too; only the program's type tells them apart."""
    try:
        with commands.fd_by_id(commands.ObjKind.PROG, prog_id) as fd:
            return int(commands.prog_info(fd.raw).type)
    except DynbpfError:
        return None


def _describe(link_type: int, info: LinkInfo, name: str) -> tuple[str, str]:
    if link_type == LinkType.RAW_TRACEPOINT:
        kind = "tp_btf" if _program_type(int(info.prog_id)) == ProgType.TRACING else "raw_tp"
        return kind, f"{kind} {name}"
    if link_type == LinkType.TRACING:
        attach_type, btf_id = _u32(info, "tracing.attach_type"), _u32(info, "tracing.target_btf_id")
        kind = TRACING_KINDS.get(attach_type, "tracing")
        return kind, f"{kind} (kernel BTF id {btf_id})"
    if link_type == LinkType.ITER:
        map_id = _u32(info, "iter.map.map_id")
        return "iter", f"iter {name}" + (f" (map id {map_id})" if map_id else "")
    if link_type == LinkType.PERF_EVENT:
        kind = PERF_EVENT_KINDS.get(_u32(info, "perf_event.type"), "perf_event")
        if kind in ("uprobe", "uretprobe", "kprobe", "kretprobe"):
            offset = _u32(info, "perf_event.uprobe.offset")
            return kind, f"{kind} {name}" + (f"+{offset:#x}" if offset else "")
        return kind, f"{kind} {name}" if name else kind
    return _describe_attached(link_type, info, name)


def _describe_attached(link_type: int, info: LinkInfo, name: str) -> tuple[str, str]:
    """Links on an object rather than a kernel hook: interfaces, cgroups, netfilter, a file's functions."""
    if link_type == LinkType.XDP:
        return "xdp", f"xdp {_interface(_u32(info, 'xdp.ifindex'))}"
    if link_type in (LinkType.TCX, LinkType.NETKIT):
        kind = "tcx" if link_type == LinkType.TCX else "netkit"
        direction = type_name(AttachType, _u32(info, "tcx.attach_type")).removeprefix(f"{kind}_")
        return kind, f"{kind} {direction} {_interface(_u32(info, 'tcx.ifindex'))}"
    if link_type == LinkType.CGROUP:
        cgroup_id = struct.unpack_from("=Q", info, UNION + FIELDS["cgroup.cgroup_id"])[0]
        cgroup_hook = type_name(AttachType, _u32(info, "cgroup.attach_type")).removeprefix("cgroup_")
        return "cgroup", f"cgroup {cgroup_hook} (cgroup id {cgroup_id})"
    if link_type == LinkType.NETNS:
        netns_kind = type_name(AttachType, _u32(info, "netns.attach_type"))
        return netns_kind, f"{netns_kind} netns net:[{_u32(info, 'netns.netns_ino')}]"
    if link_type == LinkType.SOCKMAP:
        return sockmap_description(_u32(info, "sockmap.attach_type"), _u32(info, "sockmap.map_id"))
    if link_type == LinkType.NETFILTER:
        priority = struct.unpack_from("=i", info, UNION + FIELDS["netfilter.priority"])[0]
        pf, hook = _u32(info, "netfilter.pf"), _u32(info, "netfilter.hooknum")
        return "netfilter", f"netfilter pf {pf} hook {hook} priority {priority}"
    if link_type == LinkType.KPROBE_MULTI:  # count and flags are reported from 6.6 on (0 before)
        kind = "kretprobe.multi" if _u32(info, "kprobe_multi.flags") & 1 else "kprobe.multi"
        count = _u32(info, "kprobe_multi.count")
        return kind, f"{kind} ({count} functions)" if count else kind
    if link_type == LinkType.UPROBE_MULTI:
        kind = "uretprobe.multi" if _u32(info, "uprobe_multi.flags") & 1 else "uprobe.multi"
        pid = _u32(info, "uprobe_multi.pid")
        return kind, f"{kind} {name} ({_u32(info, 'uprobe_multi.count')} functions)" + (f" pid {pid}" if pid else "")
    kind = type_name(LinkType, link_type)
    return kind, kind


#: a sockmap link's attach type -> (kind, hook); dynbpf._attach.sockmap describes its links the same way
SOCKMAP_HOOKS: dict[int, tuple[str, str]] = {
    AttachType.SK_MSG_VERDICT: ("sk_msg", "verdict"),
    AttachType.SK_SKB_STREAM_PARSER: ("sk_skb", "stream_parser"),
    AttachType.SK_SKB_STREAM_VERDICT: ("sk_skb", "stream_verdict"),
    AttachType.SK_SKB_VERDICT: ("sk_skb", "verdict"),
}


def sockmap_description(attach_type: int, map_id: int) -> tuple[str, str]:
    """(kind, description) of a program on a socket map, as its link info reads back."""
    kind, hook = SOCKMAP_HOOKS.get(attach_type, ("sockmap", f"attach type {attach_type}"))
    return kind, f"{kind} {hook} (map id {map_id})"


def _interface(ifindex: int) -> str:
    try:
        return f"{socket.if_indextoname(ifindex)} (ifindex {ifindex})"
    except OSError:
        return f"ifindex {ifindex}"
