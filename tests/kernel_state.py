"""What the kernel and /proc say this process holds, without asking dynbpf's runtime.

Invariant tests compare the runtime's own view (which programs are loaded,
which maps exist) with these answers, so none of them may come from the
runtime: file descriptors are read from ``/proc/self/fd`` and
``/proc/self/fdinfo``, kernel objects are enumerated by id (GET_NEXT_ID)
and described by ``OBJ_GET_INFO_BY_FD`` through the bare syscall wrappers
of ``dynbpf._sys.commands``.

Everything here reads a moment's state; callers use it where nothing else
in the process is opening or closing fds (a quiescent point), and allow the
kernel time to free objects (RCU defers it) with :func:`eventually`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dynbpf._sys import commands
from dynbpf._sys.attrs import MapInfo, ProgInfo
from dynbpf._sys.commands import ObjKind
from dynbpf.errors import SyscallError

#: What ``readlink /proc/self/fd/N`` shows for each kind of BPF object fd.
BPF_INODES: Mapping[str, str] = MappingProxyType(
    {
        "anon_inode:bpf-prog": "prog",
        "anon_inode:bpf-map": "map",
        "anon_inode:bpf_link": "link",
        "anon_inode:btf": "btf",
        "anon_inode:bpf_iter": "iter",
    }
)
_ID_FIELD = {"prog": "prog_id", "map": "map_id", "link": "link_id", "btf": "btf_id"}
PLACEHOLDER_PREFIX = "/memfd:dynbpf:"


@dataclass(frozen=True, slots=True)
class HeldFd:
    """One open fd of this process: where it points and, for BPF objects, which kernel object."""

    fd: int
    target: str
    kind: str  # "prog", "map", "link", "btf", "iter", "perf_event", "placeholder" or "other"
    obj_id: int | None
    info: Mapping[str, str]

    @property
    def placeholder_of(self) -> str | None:
        """The map name a dynbpf placeholder memfd reserves the number for, else None."""
        if not self.target.startswith(PLACEHOLDER_PREFIX):
            return None
        return self.target.removeprefix(PLACEHOLDER_PREFIX).removesuffix(" (deleted)")


# --- this process's fds -----------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    """Every open fd of this process and what it points at (the fd listing the directory left out)."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile, or the directory fd of the listing itself
    return out


def fdinfo(fd: int) -> dict[str, str]:
    """``/proc/self/fdinfo/<fd>`` as fields; empty if the fd is gone."""
    try:
        handle = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        text = os.read(handle, 1 << 16).decode(errors="replace")  # a few hundred bytes; one read
    finally:
        os.close(handle)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _kind(target: str) -> str:
    kind = BPF_INODES.get(target)
    if kind is not None:
        return kind
    if target == "anon_inode:[perf_event]":
        return "perf_event"
    if target.startswith(PLACEHOLDER_PREFIX):
        return "placeholder"
    return "other"


def held(fds: Mapping[int, str] | None = None) -> list[HeldFd]:
    """This process's fds, BPF ones with the object id the kernel reports in fdinfo."""
    out: list[HeldFd] = []
    for fd, target in sorted((open_fds() if fds is None else fds).items()):
        kind = _kind(target)
        info: dict[str, str] = fdinfo(fd) if kind in _ID_FIELD or kind == "iter" else {}
        raw_id = info.get(_ID_FIELD.get(kind, ""))
        out.append(HeldFd(fd, target, kind, int(raw_id) if raw_id is not None else None, MappingProxyType(info)))
    return out


def held_ids(kind: str) -> dict[int, list[int]]:
    """Kernel object id -> the fds of this process that hold it, for one kind ("prog", "map", "link", "btf")."""
    if kind not in _ID_FIELD:
        raise ValueError(f"unknown kind {kind!r} (kinds: {', '.join(_ID_FIELD)})")
    out: dict[int, list[int]] = {}
    for h in held():
        if h.kind == kind and h.obj_id is not None:
            out.setdefault(h.obj_id, []).append(h.fd)
    return out


def held_prog_ids() -> set[int]:
    return set(held_ids("prog"))


def held_map_ids() -> set[int]:
    return set(held_ids("map"))


def held_link_ids() -> set[int]:
    return set(held_ids("link"))


def new_fds(baseline: Mapping[int, str], now: Mapping[int, str] | None = None) -> dict[int, str]:
    """Fds open now that were not open (to the same target) in ``baseline``."""
    now = open_fds() if now is None else now
    return {fd: t for fd, t in now.items() if baseline.get(fd) != t}


# --- the kernel's objects -----------------------------------------------------------------------


def _info_by_id(kind: ObjKind, obj_id: int) -> ProgInfo | MapInfo | None:
    """The info of a live object, or None if it went away since it was listed."""
    try:
        fd = commands.fd_by_id(kind, obj_id)
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    with fd:
        if kind is ObjKind.PROG:
            return commands.prog_info(fd.raw)
        return commands.map_info(fd.raw)


def _named(kind: ObjKind, prefix: str | tuple[str, ...]) -> dict[int, str]:
    out: dict[int, str] = {}
    for obj_id in commands.ids(kind):
        info = _info_by_id(kind, obj_id)
        if info is None:
            continue
        name = bytes(info.name).split(b"\0", 1)[0].decode(errors="replace")
        if name.startswith(prefix):
            out[obj_id] = name
    return out


def kernel_prog_ids() -> set[int]:
    return set(commands.ids(ObjKind.PROG))


def kernel_map_ids() -> set[int]:
    return set(commands.ids(ObjKind.MAP))


def kernel_link_ids() -> set[int]:
    return set(commands.ids(ObjKind.LINK))


def kernel_progs_named(prefix: str | tuple[str, ...]) -> dict[int, str]:
    """Every live kernel program (any process's) whose name starts with ``prefix``: id -> name."""
    return _named(ObjKind.PROG, prefix)


def kernel_maps_named(prefix: str | tuple[str, ...]) -> dict[int, str]:
    """Every live kernel map (any process's) whose name starts with ``prefix``: id -> name.

    Opens every map by id, which is not harmless: on 6.18 a prog array
    opened by id while its last user reference (fd or pin) goes away can
    be leaked by the kernel for good. Dropping the last user reference
    queues a deferred clear that holds a map reference; reopening and
    closing it queues it again and takes another reference, and if the
    first is still pending the second reference is never put (about 8% of
    prog arrays in a tight race, none of plain arrays). So scan by name
    only once the maps of interest are gone by id (:func:`alive`).
    """
    return _named(ObjKind.MAP, prefix)


def alive(kind: ObjKind, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` still name a live kernel object."""
    wanted = set(ids)
    return wanted & set(commands.ids(kind)) if wanted else set()


def prog_name(fd: int) -> str:
    return bytes(commands.prog_info(fd).name).split(b"\0", 1)[0].decode(errors="replace")


def map_name(fd: int) -> str:
    return bytes(commands.map_info(fd).name).split(b"\0", 1)[0].decode(errors="replace")


# --- what maps hold -----------------------------------------------------------------------------


def fd_array_ids(map_fd: int, max_entries: int) -> dict[int, int]:
    """A prog array's or map-of-maps' filled slots: index -> the id of the program or map in it.

    Looked up from user space, these arrays answer with ids, not fds.
    """
    out: dict[int, int] = {}
    value = ctypes.c_uint32()
    for index in range(max_entries):
        if commands.map_lookup_elem(map_fd, index.to_bytes(4, "little"), value):
            out[index] = value.value
    return out


# --- waiting for the kernel ---------------------------------------------------------------------


def eventually(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Whether ``check`` holds within ``timeout`` seconds: the kernel frees objects after an RCU grace period."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
