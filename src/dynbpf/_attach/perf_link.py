"""Run a program on a perf event: tracepoints, kprobes, uprobes and perf_event programs all end here.

Kernels since 5.15 make a BPF link of it (BPF_LINK_CREATE perf_event): the
link holds the perf event, so the event fd is closed right away and the
link alone can be pinned. Older kernels only know PERF_EVENT_IOC_SET_BPF,
where the perf event fd *is* the attachment. Which one is used is decided
by the ``perf_link`` probe, never by a kernel version.
"""

from __future__ import annotations

from dynbpf._attach.link import IoctlPerfLink, Link
from dynbpf._attach.request import Request
from dynbpf._probes import kernel as kernel_features
from dynbpf._sys import commands, perf
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType
from dynbpf._sys.fd import Fd


def link_perf_event(
    request: Request, prog_fd: int, event: Fd, *, cookie: int = 0, use_link: bool | None = None
) -> Link:
    """Attach ``prog_fd`` to the perf event ``event``, taking ownership of ``event`` (closed on failure too).

    ``use_link`` forces the link (True) or the ioctl (False); None asks the probe.
    """
    try:
        support = kernel_features.perf_link()
    except BaseException:
        event.close()
        raise
    if use_link is None:
        use_link = support.supported
    if use_link:
        return _link(request, prog_fd, event, cookie)
    why = "the caller asked for it" if support.supported else f"this kernel has no perf links: {support.how}"
    return _ioctl(request, prog_fd, event, cookie, why)


def _link(request: Request, prog_fd: int, event: Fd, cookie: int) -> Link:
    try:
        attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=event.raw, attach_type=AttachType.PERF_EVENT)
        attr.perf_event.bpf_cookie = cookie
        fd = request.call(lambda: commands.link_create(attr, request.what))
    finally:
        event.close()  # the link holds its own reference to the event
    return Link(fd, kind=request.kind, description=request.what)


def _ioctl(request: Request, prog_fd: int, event: Fd, cookie: int, why: str) -> Link:
    try:
        if cookie:
            raise request.error(f"a cookie needs a perf link, not PERF_EVENT_IOC_SET_BPF ({why})")
        request.call(lambda: perf.ioctl(event.raw, perf.PERF_EVENT_IOC_SET_BPF, prog_fd))
        request.call(lambda: perf.ioctl(event.raw, perf.PERF_EVENT_IOC_ENABLE))
    except BaseException:
        event.close()
        raise
    return IoctlPerfLink(event, kind=request.kind, description=request.what, why=why)
