"""Netfilter programs (``SEC("netfilter")``): a BPF link on a netfilter hook (6.4).

Target keywords: ``pf=`` (``"ipv4"``, ``"ipv6"`` or the NFPROTO number),
``hook=`` (``"prerouting"``, ``"local_in"``, ``"forward"``, ``"local_out"``,
``"postrouting"`` or its number), ``priority=`` (default 0; the kernel
refuses the extreme values reserved for its own first/last hooks) and
``defrag=True`` (see packets after IP defragmentation).
"""

from __future__ import annotations

from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.request import Request, take
from dynbpf._probes import attach as attach_features
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType

ACCEPTED = ("pf", "hook", "priority", "defrag")
FAMILIES = {"ipv4": 2, "ipv6": 10}
HOOKS = {"prerouting": 0, "local_in": 1, "forward": 2, "local_out": 3, "postrouting": 4}
IP_DEFRAG = 1  # BPF_F_NETFILTER_IP_DEFRAG
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def attach_netfilter(request: Request, prog_fd: int, target: dict[str, Any]) -> Link:
    options = take(request, target, ACCEPTED)
    pf = _choice(request, options, "pf", FAMILIES)
    hook = _choice(request, options, "hook", HOOKS)
    priority = options.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not _INT_MIN < priority < _INT_MAX:
        raise request.error(f"priority={priority!r} is not an int strictly between -2**31 and 2**31-1")
    pf_name = next((k for k, v in FAMILIES.items() if v == pf), str(pf))
    hook_name = next((k for k, v in HOOKS.items() if v == hook), str(hook))
    request = request.at(f"{pf_name} {hook_name} priority {priority}")
    attr = LinkCreateAttr(prog_fd=prog_fd, attach_type=AttachType.NETFILTER)
    attr.netfilter.pf, attr.netfilter.hooknum, attr.netfilter.priority = pf, hook, priority
    attr.netfilter.flags = IP_DEFRAG if options.get("defrag") else 0
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=attach_features.netfilter)
    return Link(fd, kind="netfilter", description=request.what)


def _choice(request: Request, options: dict[str, Any], name: str, names: dict[str, int]) -> int:
    value = options.get(name)
    if value is None:
        raise request.error(f"no {name}= given: one of {', '.join(names)} (or its number)")
    if isinstance(value, str):
        if value not in names:
            raise request.error(f"{name}={value!r} is not one of {', '.join(names)}")
        return names[value]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 256:
        raise request.error(f"{name}={value!r} is not one of {', '.join(names)} or a number")
    return value
