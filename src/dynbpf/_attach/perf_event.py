"""perf_event programs: run on the samples of a perf event.

Target keywords: ``perf_event_fd=`` (an event the caller opened; it is
duplicated, the caller keeps its own fd), or a description of the event to
open: ``type=`` and ``config=`` (default: the software cpu-clock),
``sample_period=`` (default 1,000,000: every millisecond of cpu-clock) or
``sample_freq=`` (samples per second), ``cpu=`` and ``pid=``. Without
``cpu=`` or ``pid=`` one event is opened on every online CPU and the result
is a :class:`~dynbpf._attach.link.LinkGroup` of one link per CPU.
"""

from __future__ import annotations

import fcntl
import operator
from typing import Any

from dynbpf._attach.link import Link, LinkGroup
from dynbpf._attach.perf_link import link_perf_event
from dynbpf._attach.request import Request, integer, take
from dynbpf._sys import perf
from dynbpf._sys.cpus import parse_cpu_list
from dynbpf._sys.fd import Fd
from dynbpf.errors import KernelDataError

ACCEPTED = ("perf_event_fd", "type", "config", "sample_period", "sample_freq", "cpu", "pid", "cookie")
ONLINE = "/sys/devices/system/cpu/online"
DEFAULT_PERIOD = 1_000_000

SOFTWARE_EVENTS = {0: "cpu-clock", 1: "task-clock", 2: "page-faults", 3: "context-switches", 4: "cpu-migrations"}


def attach_perf_event(request: Request, prog_fd: int, target: dict[str, Any]) -> Link:
    options = take(request, target, ACCEPTED)
    cookie = integer(request, options, "cookie", 0)
    if "perf_event_fd" in options:
        others = sorted(set(options) - {"perf_event_fd", "cookie"})
        if others:
            raise request.error(f"perf_event_fd= names an open event; {', '.join(others)} would describe another")
        return _given(request, prog_fd, options["perf_event_fd"], cookie)
    attr, event_name = _attr(request, options)
    pid = options.get("pid", -1)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < -1:
        raise request.error(f"pid={pid!r} is not a process id (-1: every process)")
    cpu = options.get("cpu")
    if cpu is not None or pid >= 0:
        cpu = -1 if cpu is None else integer(request, options, "cpu", 0, bits=16)
        where = (f" on cpu {cpu}" if cpu >= 0 else "") + (f" pid {pid}" if pid >= 0 else "")
        return _one(request.at(event_name + where), prog_fd, attr, pid=pid, cpu=cpu, cookie=cookie)
    cpus = online_cpus(request)
    links: list[tuple[str, Link]] = []
    try:
        for n in cpus:
            link = _one(request.at(f"{event_name} on cpu {n}"), prog_fd, attr, pid=-1, cpu=n, cookie=cookie)
            links.append((f"cpu{n}", link))
    except BaseException:
        for _, made in links:
            made.detach()
        raise
    return LinkGroup(links, kind=request.kind, description=f"{request.kind} {event_name} on {len(links)} CPUs")


def _given(request: Request, prog_fd: int, given: Any, cookie: int) -> Link:
    try:
        raw = operator.index(given.fd if hasattr(given, "fd") else given)
        event = Fd(fcntl.fcntl(raw, fcntl.F_DUPFD_CLOEXEC, 3), "perf_event")
    except (TypeError, OSError) as e:
        raise request.error(f"perf_event_fd={given!r} is not an open file descriptor ({e})") from None
    return link_perf_event(request.at(f"fd {raw}"), prog_fd, event, cookie=cookie)


def _attr(request: Request, options: dict[str, Any]) -> tuple[perf.PerfEventAttr, str]:
    event_type = integer(request, options, "type", perf.PERF_TYPE_SOFTWARE, bits=32)
    config = integer(request, options, "config", perf.PERF_COUNT_SW_CPU_CLOCK)
    if "sample_freq" in options and "sample_period" in options:
        raise request.error("give sample_period= or sample_freq=, not both")
    attr = perf.PerfEventAttr(type=event_type, config=config)
    if "sample_freq" in options:
        attr.sample_period = integer(request, options, "sample_freq", 0)
        attr.flags |= perf.FLAG_FREQ
        rate = f"{attr.sample_period} Hz"
    else:
        attr.sample_period = integer(request, options, "sample_period", DEFAULT_PERIOD)
        rate = f"period {attr.sample_period}"
    if attr.sample_period == 0:
        raise request.error("a sampling period or frequency of 0 never samples")
    if event_type == perf.PERF_TYPE_SOFTWARE and config in SOFTWARE_EVENTS:
        name = SOFTWARE_EVENTS[config]
    else:
        name = f"type {event_type} config {config:#x}"
    return attr, f"{name} ({rate})"


def _one(request: Request, prog_fd: int, attr: perf.PerfEventAttr, *, pid: int, cpu: int, cookie: int) -> Link:
    event = request.call(lambda: perf.perf_event_open(attr, pid=pid, cpu=cpu, what=request.what))
    return link_perf_event(request, prog_fd, event, cookie=cookie)


def online_cpus(request: Request) -> list[int]:
    """The online CPUs (``0-3,8-11`` in sysfs): a CPU-wide event can only be opened on those."""
    try:
        with open(ONLINE) as f:
            text = f.read()
    except OSError as e:
        raise request.error(f"cannot read {ONLINE} to open one event per CPU: {e.strerror}; pass cpu=") from None
    try:
        return parse_cpu_list(text)
    except KernelDataError as e:
        raise KernelDataError(f"{e} in {ONLINE}") from None
