"""Hooking a loaded program up by hand, below dynbpf._attach: tests of the layers under it use these."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dynbpf._sys import commands, fs, perf
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType


@contextmanager
def on_tracepoint(prog_fd: int, category: str, name: str) -> Iterator[None]:
    """Attach to a tracepoint for this process only (perf event + link), detach on exit."""
    tp_id = fs.tracepoint_id(category, name)
    with (
        perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=0, cpu=-1) as pfd,
        commands.link_create(LinkCreateAttr(prog_fd=prog_fd, target_fd=pfd.raw, attach_type=AttachType.PERF_EVENT)),
    ):
        yield
