"""usdt programs: the USDT probes of a binary or library, as libbpf's ``usdt.bpf.h`` expects them.

Target keywords complete or override ``SEC("usdt/<binary>:<provider>:<name>")``:
``path=`` (the binary or library, resolved as for uprobes), ``provider=``,
``name=``, ``pid=`` (only that process; -1 or None: every process) and
``cookie=`` (what ``bpf_usdt_cookie()`` returns).

A USDT probe is a uprobe at each of its call sites (``.note.stapsdt``,
see :mod:`usdt_notes`) plus the knowledge of where each site keeps its
arguments (:mod:`usdt_spec`). ``usdt.bpf.h`` finds that knowledge in the
object's ``__bpf_usdt_specs`` array, at the index the uprobe's BPF cookie
holds (the *spec id*): one spec per distinct argument string, shared by the
sites that have it. The ids belong to the collection (all its usdt programs
share the map), taken here and given back when the link detaches. The
``__bpf_usdt_ip_to_spec_id`` map serves kernels without BPF cookies, which
dynbpf refuses instead (cookies came with perf links in 5.15).

Where the kernel has uprobe_multi links, the program is loaded for them
(prepare sets ``BPF_TRACE_UPROBE_MULTI``) and one link covers every site;
else each site gets a perf uprobe. A site with a semaphore gets the
kernel's reference counter (``ref_ctr_offset``): the semaphore is nonzero
while the probe is attached, so the program evaluates its arguments.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynbpf._attach import binaries
from dynbpf._attach.link import Link, LinkGroup
from dynbpf._attach.perf_link import link_perf_event
from dynbpf._attach.request import Request, integer, take, text
from dynbpf._attach.uprobe import pmu_support
from dynbpf._attach.usdt_notes import UsdtNoteError, UsdtSite, find_sites
from dynbpf._attach.usdt_spec import SPEC_SIZE, UsdtSpecError, encode_spec, parse_args
from dynbpf._elf.sections import ProgramKind, UsdtTarget
from dynbpf._probes import attach as attach_features
from dynbpf._probes import kernel as kernel_features
from dynbpf._probes.result import Support
from dynbpf._sys import commands, perf
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType
from dynbpf.errors import AttachError

ACCEPTED = ("path", "provider", "name", "pid", "cookie")
SPECS_MAP = "__bpf_usdt_specs"
IP_MAP = "__bpf_usdt_ip_to_spec_id"
REF_CTR_FORMAT = f"{perf.PMU_ROOT}/uprobe/format/ref_ctr_offset"
REF_CTR_SHIFT = 32  # the uprobe PMU's format: ref_ctr_offset is config:32-63


class SpecIds:
    """The spec ids in use in one collection's ``__bpf_usdt_specs`` (thread-safe).

    Ids are indexes into the array, so they are the lowest free ones below
    its size; a detached link gives its ids back for the next attach.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[int] = set()

    def take(self, count: int, capacity: int) -> list[int] | None:
        """``count`` free ids below ``capacity``, now in use; None if there are not that many."""
        with self._lock:
            free = (i for i in range(capacity) if i not in self._used)
            ids = [i for _, i in zip(range(count), free, strict=False)]
            if len(ids) < count:
                return None
            self._used.update(ids)
            return ids

    def give(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._used.difference_update(ids)

    @property
    def used(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._used)


@dataclass(frozen=True, slots=True)
class UsdtContext:
    """What a usdt attach needs from the program's collection: the spec map and its ids."""

    specs_fd: int | None  # __bpf_usdt_specs of the program's collection (held while loaded); None: not used
    ids: SpecIds = field(compare=False)
    multi: bool  # the program was loaded for uprobe_multi links (expected attach type BPF_TRACE_UPROBE_MULTI)


class UsdtLink(LinkGroup):
    """The uprobes of one USDT probe (one uprobe_multi link, or a perf uprobe per site) and their spec ids.

    Detaching gives the spec ids back to the collection. It cannot be
    pinned: a pinned link would outlive the ids its cookies name, which the
    next attach may give to another probe.
    """

    def __init__(
        self, links: Sequence[tuple[str, Link]], *, kind: str, description: str, release: Callable[[], None]
    ) -> None:
        super().__init__(links, kind=kind, description=description)
        self._release = release

    def pin(self, path: str) -> None:
        raise AttachError(
            f"cannot pin {self.description}: its uprobes read argument specs at spec ids this process hands "
            "out (the BPF cookies), which are reused once it detaches; keep the link in a running process"
        )

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._release()


def semaphore_support() -> Support:
    """Whether uprobes can increment a USDT semaphore (the uprobe PMU's ``ref_ctr_offset`` format, 4.20)."""
    present = os.path.exists(REF_CTR_FORMAT)
    how = f"{REF_CTR_FORMAT} {'present' if present else 'absent'}"
    return Support("USDT semaphores (uprobe ref_ctr_offset)", present, how)


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where the uprobes go: the resolved file, its sites and the spec id each site's cookie carries."""

    path: str
    sites: tuple[UsdtSite, ...]
    cookies: tuple[int, ...]
    pid: int
    multi: bool  # one uprobe_multi link, else a perf uprobe per site


def _nothing() -> None:
    pass


def attach_usdt(
    request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any], context: UsdtContext | None
) -> Link:
    if context is None:
        raise request.at(kind.section).error(
            f"a usdt program reads its argument specs from its object's {SPECS_MAP} map, which only its "
            "collection can fill: attach it with Program.attach()"
        )
    request, path, sites, pid, cookie = _target(request, kind, target)
    request.require(kernel_features.bpf_cookie())
    if any(site.semaphore_offset for site in sites):
        request.require(semaphore_support())
    specs: dict[str, bytes] = {}  # argument string -> spec record, one spec id each
    for site in sites:
        if site.note.args not in specs:
            try:
                specs[site.note.args] = encode_spec(parse_args(site.note.args), cookie)
            except UsdtSpecError as e:
                raise request.error(f"the site at file offset {site.offset:#x}: {e}") from None
    if context.specs_fd is None:
        if cookie:
            raise request.error(f"cookie= is read through {SPECS_MAP}, which this program does not use")
        return _attach(request, prog_fd, _Placement(path, sites, (0,) * len(sites), pid, context.multi))
    ids = _write_specs(request, context, context.specs_fd, specs)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            context.ids.give(ids)

    try:
        id_of = dict(zip(specs, ids, strict=True))
        placement = _Placement(path, sites, tuple(id_of[site.note.args] for site in sites), pid, context.multi)
        return _attach(request, prog_fd, placement, release)
    except BaseException:
        release()
        raise


def _target(
    request: Request, kind: ProgramKind, target: dict[str, Any]
) -> tuple[Request, str, tuple[UsdtSite, ...], int, int]:
    """The request named after its probe, the resolved file, the probe's sites, the pid and the user cookie."""
    options = take(request, target, ACCEPTED)
    section = kind.target if isinstance(kind.target, UsdtTarget) else None
    binary = text(request, options, "path") or (section.binary if section else None)
    provider = text(request, options, "provider") or (section.provider if section else None)
    name = text(request, options, "name") or (section.name if section else None)
    if binary is None or provider is None or name is None:
        raise request.error(
            'no target given: name it in the section (SEC("usdt/<binary>:<provider>:<name>")) '
            "or pass path=, provider= and name= to attach()"
        )
    pid = options.get("pid", -1)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < -1 or pid == 0 or pid >= 1 << 31:
        raise request.error(f"pid={pid!r} is not a process id (or -1 / None for every process)")
    cookie = integer(request, options, "cookie", 0)
    request = request.at(f"{binary}:{provider}:{name}" + (f" pid {pid}" if pid > 0 else ""))
    try:
        path = binaries.resolve(binary, pid if pid > 0 else None)
        sites = find_sites(path, provider, name)
    except (binaries.BinaryNotFoundError, UsdtNoteError) as e:
        raise request.error(str(e)) from None
    if path != binary:
        request = request.at(f"{request.target} ({path})")
    return request, path, sites, pid, cookie


def _write_specs(request: Request, context: UsdtContext, specs_fd: int, specs: dict[str, bytes]) -> list[int]:
    """Take a spec id per spec and write the specs there; the ids (given back on failure)."""
    info = request.call(lambda: commands.map_info(specs_fd))
    if info.value_size != SPEC_SIZE:
        raise request.error(
            f"the object's {SPECS_MAP} holds {info.value_size}-byte values, not the {SPEC_SIZE}-byte "
            "struct __bpf_usdt_spec dynbpf writes (an unknown usdt.bpf.h?)"
        )
    ids = context.ids.take(len(specs), info.max_entries)
    if ids is None:
        raise request.error(
            f"{len(specs)} more argument specs do not fit in {SPECS_MAP} ({info.max_entries} entries, "
            f"{len(context.ids.used)} in use): detach other usdt links or define BPF_USDT_MAX_SPEC_CNT larger"
        )
    try:
        for spec_id, value in zip(ids, specs.values(), strict=True):
            request.call(functools.partial(commands.map_update_elem, specs_fd, struct.pack("<i", spec_id), value))
    except BaseException:
        context.ids.give(ids)
        raise
    return ids


def _attach(request: Request, prog_fd: int, placement: _Placement, release: Callable[[], None] = _nothing) -> Link:
    n = len(placement.sites)
    description = f"{request.what}, {n} site{'s' if n != 1 else ''}"
    members = (
        [("multi", _multi(request, prog_fd, placement))] if placement.multi else _perf(request, prog_fd, placement)
    )
    try:
        return UsdtLink(members, kind=request.kind, description=description, release=release)
    except BaseException:  # nothing half done: the uprobes made go again (the caller gives the spec ids back)
        for _, link in members:
            link.detach()
        raise


def _multi(request: Request, prog_fd: int, placement: _Placement) -> Link:
    sites = placement.sites
    n = len(sites)
    c_path = ctypes.create_string_buffer(os.fsencode(placement.path))
    c_offsets = (ctypes.c_uint64 * n)(*(s.offset for s in sites))
    c_ref_ctrs = (ctypes.c_uint64 * n)(*(s.semaphore_offset for s in sites))
    c_cookies = (ctypes.c_uint64 * n)(*placement.cookies)
    attr = LinkCreateAttr(prog_fd=prog_fd, attach_type=int(AttachType.TRACE_UPROBE_MULTI))
    attr.uprobe_multi.path = ctypes.addressof(c_path)
    attr.uprobe_multi.offsets = ctypes.addressof(c_offsets)
    attr.uprobe_multi.ref_ctr_offsets = ctypes.addressof(c_ref_ctrs) if any(s.semaphore_offset for s in sites) else 0
    attr.uprobe_multi.cookies = ctypes.addressof(c_cookies)
    attr.uprobe_multi.cnt = n
    attr.uprobe_multi.pid = max(placement.pid, 0)
    fd = request.call(lambda: commands.link_create(attr, request.what), probe=attach_features.uprobe_multi)
    return Link(fd, kind=request.kind, description=f"{request.what} (uprobe_multi, {n} sites)")


def _perf(request: Request, prog_fd: int, placement: _Placement) -> list[tuple[str, Link]]:
    request.require(pmu_support("uprobe", attach_features.uprobes))
    pmu = perf.pmu_type("uprobe")
    if pmu is None:
        raise request.error(f"no uprobe PMU at {perf.PMU_ROOT}/uprobe")
    pid = placement.pid
    cpu = 0 if pid < 0 else -1  # one event for every CPU when any process is traced; one per process otherwise
    path = os.fsencode(placement.path)
    members: list[tuple[str, Link]] = []
    try:
        for index, (site, cookie) in enumerate(zip(placement.sites, placement.cookies, strict=True)):
            at = request.at(f"{request.target} site {index} at file offset {site.offset:#x}")
            attr, _keep = perf.probe_attr(pmu, target=path, offset=site.offset, retprobe_bit=None)
            attr.config |= site.semaphore_offset << REF_CTR_SHIFT
            event = at.call(functools.partial(perf.perf_event_open, attr, pid=pid, cpu=cpu, what=at.what))
            members.append((f"site{index}", link_perf_event(at, prog_fd, event, cookie=cookie)))
    except BaseException:
        for _, link in members:
            link.detach()
        raise
    return members
