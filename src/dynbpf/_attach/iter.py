"""Iterator programs (``SEC("iter/<target>")``): an iterator link, read through BPF_ITER_CREATE.

Target keywords narrow what the iterator walks: ``map_fd=`` (map element
iterators such as ``bpf_map_elem``; required by them), ``tid=``/``pid=``/
``pid_fd=`` (task iterators: one thread, one process), ``cgroup_fd=`` or
``cgroup_id=`` with ``order=`` (cgroup iterators). The result is an
:class:`~dynbpf._attach.link.IterLink`; ``read()`` runs one full pass.
"""

from __future__ import annotations

import ctypes
from typing import Any

from dynbpf._attach.link import IterLink
from dynbpf._attach.request import Request, integer, take
from dynbpf._attach.tracing import describe
from dynbpf._elf.sections import BtfTarget, ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._sys import commands
from dynbpf._sys.attrs import IterLinkInfo, LinkCreateAttr
from dynbpf._sys.constants import AttachType

ACCEPTED = ("map_fd", "tid", "pid", "pid_fd", "cgroup_fd", "cgroup_id", "order")
#: iterator targets that need a map (the kernel's iterators registered with a map_fd "attach target")
MAP_ITERATORS = frozenset({"bpf_map_elem", "bpf_sk_storage_map", "sockmap"})


def attach_iter(
    request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any], *, attach_btf_id: int
) -> IterLink:
    options = take(request, target, ACCEPTED)
    iterated = kind.target.name if isinstance(kind.target, BtfTarget) else ""
    if iterated in MAP_ITERATORS and "map_fd" not in options:
        raise request.at(iterated).error(f"a {iterated} iterator walks one map: pass map_fd= to attach()")
    info, narrowed = _info(request, options)
    request = request.at(" ".join(p for p in (describe(kind, attach_btf_id), narrowed) if p))
    attr = LinkCreateAttr(prog_fd=prog_fd, attach_type=AttachType.TRACE_ITER)
    if narrowed:
        attr.iter_info = ctypes.addressof(info)
        attr.iter_info_len = ctypes.sizeof(info)
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=attach_features.iterators)
    return IterLink(fd, kind=request.kind, description=request.what)


def _info(request: Request, options: dict[str, Any]) -> tuple[IterLinkInfo, str]:
    """``bpf_iter_link_info`` from the keywords, and how they narrow the iterator (empty: not at all)."""
    info = IterLinkInfo()
    groups = [
        g for g in (("map_fd",), ("tid", "pid", "pid_fd"), ("cgroup_fd", "cgroup_id", "order")) if set(g) & set(options)
    ]
    if len(groups) > 1:
        raise request.error(f"{', '.join(sorted(options))} mix map, task and cgroup iterator targets")
    if "map_fd" in options:
        info.map.map_fd = integer(request, options, "map_fd", 0, bits=31)
        return info, f"(map fd {info.map.map_fd})"
    parts = []
    for name in ("tid", "pid", "pid_fd"):
        if name in options:
            setattr(info.task, name, integer(request, options, name, 0, bits=31))
            parts.append(f"{name} {getattr(info.task, name)}")
    for name in ("cgroup_fd", "cgroup_id", "order"):
        if name in options:
            setattr(info.cgroup, name, integer(request, options, name, 0, bits=64 if name == "cgroup_id" else 31))
            parts.append(f"{name} {getattr(info.cgroup, name)}")
    return info, f"({', '.join(parts)})" if parts else ""
