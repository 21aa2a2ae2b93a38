"""Tracepoint programs (``SEC("tp/<category>/<name>")``): a tracefs event opened as a perf event.

Target keywords: ``category=`` and ``event=`` (or ``tracepoint="category/event"``)
complete or override the section; ``cookie=`` is returned by
``bpf_get_attach_cookie``. The event id comes from tracefs, which must be
mounted (``dynbpf._sys.fs.tracefs_root(mount_if_missing=True)`` does it).
"""

from __future__ import annotations

from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.perf_link import link_perf_event
from dynbpf._attach.request import Request, integer, take, text
from dynbpf._elf.sections import ProgramKind, TracepointTarget
from dynbpf._sys import fs, perf
from dynbpf.errors import DynbpfError

ACCEPTED = ("tracepoint", "category", "event", "cookie")


def attach_tracepoint(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    options = take(request, target, ACCEPTED)
    category, event = _target(request, kind, options)
    request = request.at(f"{category}/{event}")
    cookie = integer(request, options, "cookie", 0)
    tp_id = tracepoint_id(request, category, event)
    pfd = request.call(
        lambda: perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=-1, cpu=0, what=f"tracepoint {category}/{event}")
    )
    return link_perf_event(request, prog_fd, pfd, cookie=cookie)


def _target(request: Request, kind: ProgramKind, options: dict[str, Any]) -> tuple[str, str]:
    section = kind.target if isinstance(kind.target, TracepointTarget) else None
    category, event = (section.category, section.name) if section else (None, None)
    joined = text(request, options, "tracepoint")
    if joined is not None:
        category, sep, event = joined.partition("/")
        if not sep:
            raise request.error(f"tracepoint={joined!r} is not '<category>/<event>'")
    category = text(request, options, "category") or category
    event = text(request, options, "event") or event
    if not category or not event:
        raise request.error(
            'no tracepoint given: name it in the section (SEC("tp/<category>/<event>")) '
            "or pass category= and event= to attach()"
        )
    for part in (category, event):
        if "/" in part or part in (".", ".."):
            raise request.error(f"{part!r} is not a tracepoint category or event name")
    return category, event


def tracepoint_id(request: Request, category: str, event: str) -> int:
    """The perf config id of ``category/event``, read from tracefs; a failure is this attach's error."""
    try:
        return fs.tracepoint_id(category, event)
    except DynbpfError as e:
        raise request.error(str(e)) from None
