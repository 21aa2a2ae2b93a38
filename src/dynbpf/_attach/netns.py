"""Programs attached to a network namespace: sk_lookup and flow_dissector.

Target keyword: ``netns=``, a path to a namespace file (``/proc/<pid>/ns/net``,
``/run/netns/<name>``) or an open fd of one; default: the calling thread's
own namespace. The program then sees every lookup (sk_lookup) or every
flow dissection (flow_dissector) in that namespace. The attachment is a BPF
link (5.7/5.9), so it ends with the link and can be pinned and updated.
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import Callable
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.request import Request, take
from dynbpf._elf.sections import ProgramKind
from dynbpf._probes import net_attach
from dynbpf._probes.result import Support
from dynbpf._sys import commands, netns
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType
from dynbpf._sys.fd import Fd
from dynbpf.errors import SyscallError

ACCEPTED = ("netns",)
KINDS: dict[int, tuple[str, Callable[[], Support]]] = {
    AttachType.SK_LOOKUP: ("sk_lookup", net_attach.sk_lookup),
    AttachType.FLOW_DISSECTOR: ("flow_dissector", net_attach.flow_dissector),
}


def netns_name(fd: int) -> str:
    """``net:[<inode>]``, as ``ls -l /proc/self/ns/net`` and the kernel's link info (netns_ino) name it."""
    return f"net:[{os.fstat(fd).st_ino}]"


def attach_netns(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    eat = kind.expected_attach_type
    assert eat in KINDS, kind
    label, probe = KINDS[eat]
    options = take(request, target, ACCEPTED)
    given = options.get("netns")
    request = Request(request.program, label)
    if given is None or isinstance(given, str | os.PathLike):
        path = netns.CURRENT if given is None else os.fspath(given)
        try:
            ns = netns.open_netns(path)
        except SyscallError as e:
            raise request.at(f"netns {path}").error(f"cannot open the network namespace: {e}") from e
    else:
        try:
            ns_fd = operator.index(given)
        except TypeError:
            raise request.error(f"netns={given!r} is neither a path nor a file descriptor") from None
        try:
            ns = Fd(os.dup(ns_fd), "netns")
        except OSError as e:
            raise request.at(f"netns fd {ns_fd}").error(f"not an open file descriptor: {e.strerror}") from None
    with ns:  # the link holds the namespace
        request = request.at(f"netns {netns_name(ns.raw)}")
        attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=ns.raw, attach_type=eat)
        reasons = {
            errno.EINVAL: "not a network namespace, or the program's type or attach type does not fit",
            errno.E2BIG: "a flow dissector is attached there already (one per namespace)",
            errno.EEXIST: "a flow dissector is attached to the root namespace, which overrides every other one",
        }
        fd = request.call(lambda: commands.link_create(attr, request.what), probe=probe, reasons=reasons)
    return Link(fd, kind=label, description=request.what)
