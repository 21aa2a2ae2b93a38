"""kprobe.multi, kretprobe.multi and kprobe.session programs: one link probing many kernel functions.

BPF_LINK_CREATE with the ``kprobe_multi`` attr (5.18; session 6.10). Target
keywords complete or override ``SEC("kprobe.multi/<pattern>")``: one of
``pattern=`` (a glob over kernel function names), ``symbols=`` (exact names)
or ``addrs=`` (kernel addresses), then ``retprobe=`` and ``cookies=`` (one
per function, in the order of ``symbols=``/``addrs=``; the kernel keeps each
cookie with its function whatever order it sorts them in).

A pattern is resolved like libbpf does: over the functions ftrace can
attach to (tracefs ``available_filter_functions``), so inlined, notrace and
blacklisted functions that kallsyms lists too are skipped rather than fail
the whole link; without tracefs, over the text symbols of ``/proc/kallsyms``.
The kernel needs each symbol once: names listed more than once (static
functions of several files, or in several modules) are passed once.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
from collections.abc import Sequence
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.multi_target import read_multi
from dynbpf._attach.request import Request, integers
from dynbpf._elf.sections import ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._sys import commands, fs, kallsyms
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType

ACCEPTED = ("pattern", "symbols", "addrs", "retprobe", "cookies")
KPROBE_MULTI_RETURN = 1  # BPF_F_KPROBE_MULTI_RETURN
MAX_FUNCTIONS = 1 << 20  # the kernel's own cap (MAX_KPROBE_MULTI_CNT)
#: entries ftrace lists but cannot attach to (functions whose address it could not resolve)
_INVALID_PREFIX = "__ftrace_invalid_address__"


def attach_kprobe_multi(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    multi = read_multi(request, kind, target, ACCEPTED, kernel=True)
    options, pattern, session, retprobe = multi.options, multi.pattern, multi.session, multi.retprobe
    if not (pattern or multi.chosen):
        raise request.error(
            'no target given: name it in the section (SEC("kprobe.multi/<pattern>")) '
            "or pass pattern= (or symbols=, addrs=) to attach()"
        )
    request = Request(request.program, multi.label).at(pattern or multi.chosen or "")
    probe = attach_features.kprobe_session if session else attach_features.kprobe_multi
    request.require(probe())
    cookies = integers(request, options.get("cookies", ()), "cookies", MAX_FUNCTIONS)
    names: list[str] = []
    addrs: list[int] = []
    if "addrs" in options:
        addrs = integers(request, options["addrs"], "addrs", MAX_FUNCTIONS)
        count = len(addrs)
    else:
        names = _symbols(request, options["symbols"]) if "symbols" in options else _matching(request, pattern or "")
        count = len(names)
    if not 1 <= count <= MAX_FUNCTIONS:
        raise request.error(f"{count} functions to probe (1 to {MAX_FUNCTIONS})")
    if cookies and len(cookies) != count:
        raise request.error(f"{len(cookies)} cookies for {count} functions")
    request = request.at(f"{request.target} ({count} functions)")
    c_names = [ctypes.create_string_buffer(n.encode()) for n in names]
    c_syms = (ctypes.c_uint64 * len(names))(*(ctypes.addressof(n) for n in c_names)) if names else None
    c_addrs = (ctypes.c_uint64 * len(addrs))(*addrs) if addrs else None
    c_cookies = (ctypes.c_uint64 * len(cookies))(*cookies) if cookies else None
    attach_type = AttachType.TRACE_KPROBE_SESSION if session else AttachType.TRACE_KPROBE_MULTI
    attr = LinkCreateAttr(prog_fd=prog_fd, attach_type=int(attach_type))
    attr.kprobe_multi.flags = KPROBE_MULTI_RETURN if retprobe else 0
    attr.kprobe_multi.cnt = count
    attr.kprobe_multi.syms = ctypes.addressof(c_syms) if c_syms is not None else 0
    attr.kprobe_multi.addrs = ctypes.addressof(c_addrs) if c_addrs is not None else 0
    attr.kprobe_multi.cookies = ctypes.addressof(c_cookies) if c_cookies is not None else 0
    reasons = {
        errno.ESRCH: "a function is not in the kernel, or ftrace cannot trace it",
        errno.ENOENT: "an address is not the start of a function ftrace can trace",
    }
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=probe, reasons=reasons)
    return Link(fd, kind=multi.label, description=request.what)


def attachable_functions() -> list[str]:
    """Kernel functions a kprobe.multi link can probe, in listing order, each once.

    ftrace's list where tracefs is mounted and lets us read it (what libbpf
    reads); else the text symbols of kallsyms, which may include functions
    the kernel then refuses.
    """
    root = fs.tracefs_root()
    path = os.path.join(root, "available_filter_functions") if root else None
    names: dict[str, None] = {}
    try:
        if path is not None:
            with open(path) as f:
                for line in f:
                    name = line.split(None, 1)[0] if line.strip() else ""
                    if name and not name.startswith(_INVALID_PREFIX):
                        names[name] = None
            return list(names)
    except OSError:
        names.clear()  # absent, or refused (a lockdown forbids reading it): kallsyms it is
    for symbol in kallsyms.parse(kallsyms.read_text()):
        if symbol.type in kallsyms.TEXT:
            names[symbol.name] = None
    return list(names)


def _matching(request: Request, pattern: str) -> list[str]:
    try:
        functions = attachable_functions()
    except (OSError, ValueError) as e:
        raise request.error(f"cannot list the kernel's functions to match {pattern!r}: {e}") from None
    found = [name for name in functions if fnmatch.fnmatchcase(name, pattern)]
    if not found:
        raise request.error(f"no attachable kernel function matches {pattern!r}")
    return found


def _symbols(request: Request, names: Any) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise request.error("symbols= takes a non-empty list of kernel function names")
    for name in names:
        if not isinstance(name, str) or not name or "\0" in name:
            raise request.error(f"symbols= has {name!r}, not a function name")
    if len(set(names)) != len(names):
        raise request.error("symbols= names a function twice (the kernel probes each once)")
    return list(names)
