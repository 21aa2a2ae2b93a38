"""Programs attached to a network interface: xdp, tcx (``tcx/ingress``, ``tc/egress``...) and netkit.

Target keywords: ``interface=`` (a name such as ``"eth0"`` or an ifindex)
or ``ifindex=``; for xdp also ``mode=`` (``"skb"`` generic, ``"driver"``
native, ``"hw"`` offloaded; default: the kernel's choice, native where the
driver supports it). Every one is a BPF link on the interface, so it goes
away with the link and can be pinned or updated to another program.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.linkinfo import link_facts
from dynbpf._attach.request import Request, integer, take
from dynbpf._elf.sections import ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._probes import net_attach
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType
from dynbpf.errors import SyscallError

ACCEPTED_XDP = ("interface", "ifindex", "mode")
ACCEPTED = ("interface", "ifindex")
XDP_MODES = {"skb": 1 << 1, "generic": 1 << 1, "driver": 1 << 2, "native": 1 << 2, "hw": 1 << 3, "offload": 1 << 3}
DIRECTIONS = {
    AttachType.TCX_INGRESS: ("tcx", "ingress"),
    AttachType.TCX_EGRESS: ("tcx", "egress"),
    AttachType.NETKIT_PRIMARY: ("netkit", "primary"),
    AttachType.NETKIT_PEER: ("netkit", "peer"),
}


def interface(request: Request, options: dict[str, Any]) -> tuple[int, str]:
    """(ifindex, name) from ``interface=`` or ``ifindex=``."""
    given = options.get("interface", options.get("ifindex"))
    if "interface" in options and "ifindex" in options:
        raise request.error("give interface= or ifindex=, not both")
    if given is None:
        raise request.error("no interface given: pass interface= (a name or an ifindex) to attach()")
    try:
        if isinstance(given, str):
            return socket.if_nametoindex(given), given
        index = integer(request, {"ifindex": given}, "ifindex", 0, bits=31)
        return index, socket.if_indextoname(index)
    except OSError:
        raise request.error(f"no network interface {given!r}") from None


def attach_xdp(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    if kind.expected_attach_type in (AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
        raise request.at(kind.section).error(
            "devmap/cpumap programs run from a map entry: store the program fd in the devmap or cpumap value"
        )
    options = take(request, target, ACCEPTED_XDP)
    ifindex, name = interface(request, options)
    mode = options.get("mode")
    if mode is not None and mode not in XDP_MODES:
        raise request.error(f"mode={mode!r} is not one of {', '.join(XDP_MODES)}")
    request = request.at(f"{name} (ifindex {ifindex})" + (f" {mode} mode" if mode else ""))
    attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=ifindex, attach_type=AttachType.XDP)
    attr.flags = XDP_MODES[mode] if mode else 0
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=attach_features.xdp)
    return Link(fd, kind="xdp", description=request.what)


def attach_tcx(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    eat = kind.expected_attach_type
    if eat not in DIRECTIONS:
        raise request.at(kind.section).error(
            "classic tc programs are attached through a clsact qdisc (netlink), which dynbpf does not do; "
            'name the hook in the section instead: SEC("tcx/ingress") or SEC("tcx/egress")'
        )
    assert eat is not None
    family, direction = DIRECTIONS[eat]
    options = take(request, target, ACCEPTED)
    ifindex, name = interface(request, options)
    request = Request(request.program, family).at(f"{direction} {name} (ifindex {ifindex})")
    attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=ifindex, attach_type=eat)
    probe = attach_features.tcx if family == "tcx" else net_attach.netkit
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=probe)
    link = Link(fd, kind=family, description=request.what)
    if eat == AttachType.NETKIT_PEER:
        # attached through the primary, but the kernel puts the program on the peer device: say so, as
        # the link's info (and Link.from_pin) will
        with contextlib.suppress(SyscallError):
            link.description = link_facts(fd.raw).description
    return link
