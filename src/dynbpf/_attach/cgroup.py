"""Programs attached to a cgroup: cgroup_skb, cgroup/sock*, connect/bind/sendmsg hooks, sockops, sysctl, dev...

Target keyword: ``cgroup=``, a cgroup v2 directory (absolute, or relative
to the cgroup2 mount) or an open fd of one. The link is a BPF link on the
cgroup: it applies to every process in it and its descendants, and ends
with the link (never lingers as a legacy BPF_PROG_ATTACH would).
"""

from __future__ import annotations

import operator
import os
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.request import Request, take
from dynbpf._elf.sections import ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr

ACCEPTED = ("cgroup",)


def attach_cgroup(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    eat = kind.expected_attach_type
    if eat is None:
        raise request.at(kind.section).error(
            "the section names no hook (e.g. cgroup/skb): use one that does, such as cgroup_skb/ingress"
        )
    options = take(request, target, ACCEPTED)
    given = options.get("cgroup")
    if given is None:
        raise request.error("no cgroup given: pass cgroup= (a cgroup v2 directory or an fd of one) to attach()")
    label = kind.section.removeprefix("cgroup/").replace("/", "_")
    if isinstance(given, str | os.PathLike):
        path = os.fspath(given)
        if not os.path.isabs(path):
            root = attach_features.cgroup2_root()
            if root is None:
                raise request.error(f"cgroup={path!r} is relative and no cgroup2 filesystem is mounted")
            path = os.path.join(root, path)
        request = Request(request.program, "cgroup").at(f"{label} {path}")
        try:
            cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise request.error(f"cannot open the cgroup directory: {e.strerror}") from None
        owned = True
    else:
        try:
            cgroup_fd = operator.index(given)
        except TypeError:
            raise request.error(f"cgroup={given!r} is neither a path nor a file descriptor") from None
        request = Request(request.program, "cgroup").at(f"{label} (cgroup fd {cgroup_fd})")
        owned = False
    try:
        attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=cgroup_fd, attach_type=eat)
        fd = request.call(lambda: commands.link_create(attr, request.what), probe=attach_features.cgroup)
    finally:
        if owned:
            os.close(cgroup_fd)  # the link holds the cgroup
    return Link(fd, kind="cgroup", description=request.what)
