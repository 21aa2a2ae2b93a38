"""kprobe, kretprobe, ksyscall and kretsyscall programs, through the kprobe PMU.

Target keywords: ``function=`` and ``offset=`` (kprobes), ``syscall=``
(ksyscall: the architecture's syscall wrapper, e.g. ``__x64_sys_openat``),
``retprobe=`` and ``cookie=``. Kernels built without kprobe events have no
kprobe PMU; the ``kprobes`` probe says so and attaching raises
:class:`~dynbpf.errors.KernelUnsupported` before anything is opened.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.perf_link import link_perf_event
from dynbpf._attach.request import Request, integer, take, text
from dynbpf._attach.uprobe import is_retprobe, pmu_support
from dynbpf._elf.sections import KprobeTarget, KsyscallTarget, ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._sys import kallsyms, perf

ACCEPTED = ("function", "offset", "retprobe", "cookie")
ACCEPTED_SYSCALL = ("syscall", "retprobe", "cookie")

#: syscall wrapper prefixes the kernel's own syscall entry points carry, per machine
SYSCALL_PREFIX = {
    "x86_64": "__x64_sys_",
    "aarch64": "__arm64_sys_",
    "s390x": "__s390x_sys_",
    "riscv64": "__riscv_sys_",
    "ppc64le": "sys_",
    "armv7l": "sys_",
}


@functools.cache
def syscall_prefix() -> str:
    """The prefix of the kernel's syscall entry points, decided like libbpf: the architecture's wrapper
    prefix (``__x64_sys_``) when the kernel has ``<prefix>bpf``, else plain ``sys_`` (kernels built
    without syscall wrappers, or architectures without them)."""
    prefix = SYSCALL_PREFIX.get(platform.machine(), "sys_")
    if prefix == "sys_":
        return prefix
    wanted = f"{prefix}bpf"
    try:
        found = any(s.name == wanted and s.type in kallsyms.TEXT for s in kallsyms.parse(kallsyms.read_text()))
    except (OSError, ValueError):
        return prefix  # kallsyms unreadable: the wrapper is by far the common case
    return prefix if found else "sys_"


def attach_kprobe(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    syscall = kind.rule.startswith(("ksyscall", "kretsyscall"))
    options = take(request, target, ACCEPTED_SYSCALL if syscall else ACCEPTED)
    section = kind.target
    retprobe = bool(options.get("retprobe", getattr(section, "retprobe", is_retprobe(kind))))
    label = ("kretsyscall" if retprobe else "ksyscall") if syscall else ("kretprobe" if retprobe else "kprobe")
    request = Request(request.program, label, request.target)
    if syscall:
        name = text(request, options, "syscall") or (section.syscall if isinstance(section, KsyscallTarget) else None)
        function = syscall_prefix() + name if name else None
        offset = 0
    else:
        function = text(request, options, "function") or (
            section.function if isinstance(section, KprobeTarget) else None
        )
        offset = integer(request, options, "offset", section.offset if isinstance(section, KprobeTarget) else 0)
    if function is None:
        what = "syscall=" if syscall else "function="
        raise request.error(f"no target given: name it in the section or pass {what} to attach()")
    request = request.at(function + (f"+{offset:#x}" if offset else ""))
    request.require(pmu_support("kprobe", attach_features.kprobes))
    cookie = integer(request, options, "cookie", 0)
    pmu = perf.pmu_type("kprobe")
    if pmu is None:
        raise request.error(f"no kprobe PMU at {perf.PMU_ROOT}/kprobe")
    bit = perf.pmu_retprobe_bit("kprobe") if retprobe else None
    attr, _keep = perf.probe_attr(pmu, target=function.encode(), offset=offset, retprobe_bit=bit)
    event = request.call(lambda: perf.perf_event_open(attr, pid=-1, cpu=0, what=request.what))
    return link_perf_event(request, prog_fd, event, cookie=cookie)
