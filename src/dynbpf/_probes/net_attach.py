"""Attach probes for programs hooked to a network namespace, a socket map or a netkit device.

Like ``dynbpf._probes.attach``, each makes the real attachment and undoes
it at once, without changing what the host's network does: namespace
programs go on a private, empty namespace (``dynbpf._sys.netns``), socket
map programs on a fresh empty sockmap.
"""

from __future__ import annotations

import errno
import socket

from dynbpf._asm.insn import return_imm
from dynbpf._probes.attach import _link, _link_create
from dynbpf._probes.result import Support, cached, outcome
from dynbpf._probes.trial import create_map, load
from dynbpf._sys import commands, netns
from dynbpf._sys.constants import AttachType, MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf.errors import SyscallError

SK_PASS = 1
FLOW_DISSECTOR_CONTINUE = 129  # BPF_FLOW_DISSECTOR_CONTINUE: "let the kernel's own dissector do it"


def _netns_link(name: str, prog_type: ProgType, eat: AttachType, verdict: int, verdict_name: str) -> Support:
    prog = load(prog_type, return_imm(verdict), expected_attach_type=eat)

    def attach(fd: Fd) -> Fd:
        with netns.private_netns() as ns:
            return _link_create(fd, ns.raw, eat)

    return _link(
        name,
        prog,
        f"{prog_type.name.lower()} program (returns {verdict_name}) load",
        attach,
        f"BPF_LINK_CREATE {eat.name.lower()} on a private network namespace",
    )


@cached
def sk_lookup() -> Support:
    return _netns_link("sk_lookup links", ProgType.SK_LOOKUP, AttachType.SK_LOOKUP, SK_PASS, "SK_PASS")


@cached
def flow_dissector() -> Support:
    return _netns_link(
        "flow_dissector links",
        ProgType.FLOW_DISSECTOR,
        AttachType.FLOW_DISSECTOR,
        FLOW_DISSECTOR_CONTINUE,
        "BPF_FLOW_DISSECTOR_CONTINUE",
    )


def _sockmap() -> tuple[Fd | None, str]:
    trial = create_map(MapType.SOCKMAP, 4, 4, 1)
    return trial.fd, f"BPF_MAP_CREATE sockmap -> {trial.result}"


@cached
def sockmap_link() -> Support:
    """sk_msg/sk_skb programs on a sockmap through a BPF link (6.10); older kernels only BPF_PROG_ATTACH."""
    name = "sockmap links"
    sockmap, how = _sockmap()
    if sockmap is None:
        return Support(name, False, how)
    with sockmap:
        prog = load(ProgType.SK_MSG, return_imm(SK_PASS), expected_attach_type=AttachType.SK_MSG_VERDICT)
        support = _link(
            name,
            prog,
            "sk_msg program (returns SK_PASS) load",
            lambda fd: _link_create(fd, sockmap.raw, AttachType.SK_MSG_VERDICT),
            "BPF_LINK_CREATE sk_msg_verdict on an empty sockmap",
        )
    return support


@cached
def sockmap_attach() -> Support:
    """sk_msg/sk_skb programs on a sockmap through BPF_PROG_ATTACH (every kernel with sockmaps)."""
    name = "sockmap program attachment"
    sockmap, how = _sockmap()
    if sockmap is None:
        return Support(name, False, how)
    with sockmap, load(ProgType.SK_MSG, return_imm(SK_PASS), expected_attach_type=AttachType.SK_MSG_VERDICT) as p:
        if p.fd is None:
            return Support(name, False, f"sk_msg program (returns SK_PASS) load -> {p.result}")
        try:
            commands.prog_attach(sockmap.raw, p.fd.raw, AttachType.SK_MSG_VERDICT)
            commands.prog_detach(sockmap.raw, p.fd.raw, AttachType.SK_MSG_VERDICT)
            err = 0
        except SyscallError as e:
            err = e.errno
    how = f"sk_msg program load -> ok; BPF_PROG_ATTACH + DETACH on a sockmap -> {outcome(err)}"
    return Support(name, err == 0, how)


@cached
def netkit() -> Support:
    """netkit links (6.7, CONFIG_NETKIT): asked on lo, which a kernel with netkit refuses as not a netkit device.

    Without netkit the kernel's stub answers EINVAL; with it, looking the
    device up answers ENXIO (lo is no netkit device). A test that needs a
    real netkit device creates one.
    """
    prog = load(ProgType.SCHED_CLS, return_imm(0), expected_attach_type=AttachType.NETKIT_PRIMARY)
    with prog:
        if prog.fd is None:
            return Support("netkit links", False, f"sched_cls program (netkit_primary) load -> {prog.result}")
        try:
            _link_create(prog.fd, socket.if_nametoindex("lo"), AttachType.NETKIT_PRIMARY).close()
            err = 0
        except SyscallError as e:
            err = e.errno
    return Support(
        "netkit links",
        err in (0, errno.ENXIO),
        f"sched_cls program (netkit_primary) load -> ok; BPF_LINK_CREATE netkit_primary on lo -> {outcome(err)} "
        "(ENXIO: netkit known, lo is not a netkit device; EINVAL: no netkit in this kernel)",
    )
