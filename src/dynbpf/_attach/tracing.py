"""Programs attached by BTF id: tp_btf, fentry, fexit, fmod_ret, fsession, freplace and lsm.

Their hook was fixed when they were loaded (``attach_btf_id``), so attaching
only creates the link: BPF_LINK_CREATE with the program's own attach type on
kernels with tracing links, else BPF_RAW_TRACEPOINT_OPEN without a name
(the pre-link interface). Trampoline kinds and lsm are checked against their
probe first: kernels that forbid trampolines refuse them with a plain EPERM,
which would otherwise read like a permissions problem. ``cookie=`` is the
only target keyword.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dynbpf._attach.link import Link
from dynbpf._attach.request import Request, integer, take
from dynbpf._elf.sections import BtfTarget, ProgramKind
from dynbpf._probes import attach as attach_features
from dynbpf._probes.result import Support
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType, ProgType

ACCEPTED = ("cookie",)

#: what the kernel needs for each kind beyond loading it
_GATES: dict[str, Callable[[], Support]] = {
    "fentry": attach_features.trampolines,
    "fexit": attach_features.trampolines,
    "fmod_ret": attach_features.trampolines,
    "fsession": attach_features.trampolines,
    "freplace": attach_features.trampolines,
    "lsm": attach_features.lsm,
}


_LABELS = {
    AttachType.TRACE_RAW_TP: "tp_btf",
    AttachType.TRACE_FENTRY: "fentry",
    AttachType.TRACE_FEXIT: "fexit",
    AttachType.MODIFY_RETURN: "fmod_ret",
    AttachType.TRACE_FSESSION: "fsession",
}


def tracing_kind(kind: ProgramKind) -> str:
    if kind.prog_type == ProgType.EXT:
        return "freplace"
    if kind.prog_type == ProgType.LSM:
        return "lsm"
    if kind.expected_attach_type is None:
        return "tracing"
    return _LABELS.get(kind.expected_attach_type, "tracing")


def describe(kind: ProgramKind, attach_btf_id: int) -> str:
    name = kind.target.name if isinstance(kind.target, BtfTarget) else ""
    btf = f"(BTF id {attach_btf_id})" if attach_btf_id else ""
    return " ".join(p for p in (name, btf) if p)


def gate(label: str) -> Callable[[], Support] | None:
    return _GATES.get(label)


def attach_tracing(
    request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any], *, attach_btf_id: int
) -> Link:
    options = take(request, target, ACCEPTED)
    request = request.at(describe(kind, attach_btf_id))
    cookie = integer(request, options, "cookie", 0)
    needs = gate(request.kind)
    if needs is not None:
        request.require(needs())
    probe = needs or attach_features.tracing
    if attach_features.tracing().supported:
        attr = LinkCreateAttr(prog_fd=prog_fd, attach_type=int(kind.expected_attach_type or 0))
        attr.tracing.cookie = cookie
        fd = request.call(lambda: commands.link_create(attr, request.what), probe=probe)
    else:
        if cookie:
            raise request.error("a cookie needs a tracing link, which this kernel lacks")
        fd = request.call(lambda: commands.raw_tracepoint_open(None, prog_fd), probe=probe)
    return Link(fd, kind=request.kind, description=request.what)
