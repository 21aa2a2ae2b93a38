"""uprobe and uretprobe programs: a function of a user-space file, through the uprobe PMU.

Target keywords complete or override ``SEC("uprobe/<binary>:<function>[+<offset>]")``:
``path=`` (the binary: absolute, a library name such as ``libc.so.6``, or a
program on PATH), ``symbol=`` (a function in its ``.symtab`` or ``.dynsym``,
``name@VERSION`` to pick a symbol version), ``offset=`` (added to the
symbol; the file offset itself when there is no symbol), ``pid=`` (only
that process; -1 or None: every process), ``retprobe=`` (on return) and
``cookie=``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dynbpf._attach import binaries, symbols
from dynbpf._attach.link import Link
from dynbpf._attach.perf_link import link_perf_event
from dynbpf._attach.request import Request, integer, take, text
from dynbpf._elf.sections import ProgramKind, UprobeTarget
from dynbpf._probes import attach as attach_features
from dynbpf._probes import kernel as kernel_features
from dynbpf._probes.result import Support
from dynbpf._sys import perf

ACCEPTED = ("path", "symbol", "offset", "pid", "retprobe", "cookie")


def is_retprobe(kind: ProgramKind) -> bool:
    return kind.rule.startswith(("uretprobe", "kretprobe", "kretsyscall"))


def pmu_support(pmu: str, probe: Callable[[], Support]) -> Support:
    """Whether ``pmu`` probes can be attached: the link probe where perf links exist, else the PMU itself."""
    if kernel_features.perf_link().supported:
        return probe()
    present = perf.pmu_type(pmu) is not None
    how = f"no perf links; {perf.PMU_ROOT}/{pmu} {'present' if present else 'absent'}"
    return Support(f"{pmu}s", present, how)


def attach_uprobe(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    options = take(request, target, ACCEPTED)
    section = kind.target if isinstance(kind.target, UprobeTarget) else None
    retprobe = bool(options.get("retprobe", section.retprobe if section else is_retprobe(kind)))
    if retprobe:
        request = Request(request.program, "uretprobe", request.target)
    binary = text(request, options, "path") or (section.binary if section else None)
    symbol = text(request, options, "symbol") or (section.function if section else None)
    offset = integer(request, options, "offset", section.offset if section else 0)
    pid = _pid(request, options)
    if binary is None or (symbol is None and "offset" not in options and section is None):
        raise request.error(
            'no target given: name it in the section (SEC("uprobe/<binary>:<function>")) '
            "or pass path= and symbol= (or offset=) to attach()"
        )
    request.require(pmu_support("uprobe", attach_features.uprobes))
    where = f"{binary}:{symbol}" if symbol else f"{binary}:{offset:#x}"
    request = request.at(where + (f"+{offset:#x}" if symbol and offset else "") + (f" pid {pid}" if pid >= 0 else ""))
    try:
        path = binaries.resolve(binary, pid if pid >= 0 else None)
    except binaries.BinaryNotFoundError as e:
        raise request.error(str(e)) from None
    file_offset = offset
    if symbol is not None:
        try:
            file_offset += symbols.function_offset(path, symbol).offset
        except symbols.SymbolError as e:
            raise request.error(str(e)) from None
    if path != binary:
        request = request.at(f"{request.target} ({path} at file offset {file_offset:#x})")
    cookie = integer(request, options, "cookie", 0)
    pmu = perf.pmu_type("uprobe")
    if pmu is None:
        raise request.error(f"no uprobe PMU at {perf.PMU_ROOT}/uprobe")
    bit = perf.pmu_retprobe_bit("uprobe") if retprobe else None
    if retprobe and bit is None:
        raise request.error(f"the uprobe PMU has no retprobe format bit ({perf.PMU_ROOT}/uprobe/format/retprobe)")
    attr, _keep = perf.probe_attr(pmu, target=os.fsencode(path), offset=file_offset, retprobe_bit=bit)
    # one event for every CPU when any process is traced; one per process (any CPU) otherwise
    cpu = 0 if pid < 0 else -1
    event = request.call(lambda: perf.perf_event_open(attr, pid=pid, cpu=cpu, what=request.what))
    return link_perf_event(request, prog_fd, event, cookie=cookie)


def _pid(request: Request, options: dict[str, Any]) -> int:
    pid = options.get("pid", -1)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < -1 or pid == 0 or pid >= 1 << 31:
        raise request.error(f"pid={pid!r} is not a process id (or -1 / None for every process)")
    return pid
