"""uprobe.multi programs: one link probing many functions of a file (BPF_LINK_CREATE uprobe_multi, 6.6).

Target keywords complete or override ``SEC("uprobe.multi/<binary>:<pattern>")``:
``path=`` (as for uprobes), ``pattern=`` (a glob over the file's function
names) or ``symbols=`` (exact names) or ``offsets=`` (file offsets),
``pid=`` (only that process), ``retprobe=`` and ``cookies=`` (one per
function, in the order of ``symbols=``/``offsets=``).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Any

from dynbpf._attach import binaries, symbols
from dynbpf._attach.link import Link
from dynbpf._attach.multi_target import read_multi
from dynbpf._attach.request import Request, integers, text
from dynbpf._elf.sections import ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType

ACCEPTED = ("path", "pattern", "symbols", "offsets", "pid", "retprobe", "cookies")
UPROBE_MULTI_RETURN = 1  # BPF_F_UPROBE_MULTI_RETURN
MAX_FUNCTIONS = 1 << 20  # the kernel's own cap (MAX_UPROBE_MULTI_CNT)


def attach_uprobe_multi(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    multi = read_multi(request, kind, target, ACCEPTED, kernel=False)
    options, pattern, retprobe = multi.options, multi.pattern, multi.retprobe
    binary = text(request, options, "path") or (multi.section.binary if multi.section else None)
    if binary is None or not (pattern or multi.chosen):
        raise request.error(
            'no target given: name it in the section (SEC("uprobe.multi/<binary>:<pattern>")) '
            "or pass path= and pattern= (or symbols=, offsets=) to attach()"
        )
    pid = options.get("pid", -1)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < -1 or pid == 0 or pid >= 1 << 31:
        raise request.error(f"pid={pid!r} is not a process id (or -1 / None for every process)")
    what = pattern or multi.chosen
    request = Request(request.program, multi.label).at(f"{binary}:{what}" + (f" pid {pid}" if pid > 0 else ""))
    try:
        path = binaries.resolve(binary, pid if pid > 0 else None)
        offsets = _offsets(request, path, pattern, options)
    except (binaries.BinaryNotFoundError, symbols.SymbolError) as e:
        raise request.error(str(e)) from None
    cookies = integers(request, options.get("cookies", ()), "cookies", MAX_FUNCTIONS)
    if cookies and len(cookies) != len(offsets):
        raise request.error(f"{len(cookies)} cookies for {len(offsets)} functions")
    request = request.at(f"{request.target} ({len(offsets)} functions in {path})")
    c_path = ctypes.create_string_buffer(os.fsencode(path))
    c_offsets = (ctypes.c_uint64 * len(offsets))(*offsets)
    c_cookies = (ctypes.c_uint64 * len(cookies))(*cookies) if cookies else None
    attr = LinkCreateAttr(prog_fd=prog_fd, attach_type=int(kind.expected_attach_type or AttachType.TRACE_UPROBE_MULTI))
    attr.uprobe_multi.path = ctypes.addressof(c_path)
    attr.uprobe_multi.offsets = ctypes.addressof(c_offsets)
    attr.uprobe_multi.cookies = ctypes.addressof(c_cookies) if c_cookies is not None else 0
    attr.uprobe_multi.cnt = len(offsets)
    attr.uprobe_multi.flags = UPROBE_MULTI_RETURN if retprobe else 0
    attr.uprobe_multi.pid = max(pid, 0)
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=attach_features.uprobe_multi)
    return Link(fd, kind=multi.label, description=request.what)


def _offsets(request: Request, path: str, pattern: str | None, options: dict[str, Any]) -> list[int]:
    if "offsets" in options:
        offsets = integers(request, options["offsets"], "offsets", MAX_FUNCTIONS)
    elif "symbols" in options:
        names = options["symbols"]
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise request.error("symbols= takes a list of function names")
        offsets = [symbols.function_offset(path, name).offset for name in names]
    else:
        assert pattern is not None
        offsets = sorted(symbols.functions_matching(path, pattern).values())
        if not offsets:
            raise request.error(f"no function of {path} matches {pattern!r}")
    if not offsets or len(offsets) > MAX_FUNCTIONS:
        raise request.error(f"{len(offsets)} functions to probe (1 to {MAX_FUNCTIONS})")
    return offsets
