"""Kernel programs, maps and links as the listing commands show them: found by id, pin or name, described.

What dynbpf pinned lives under a pin root (``/sys/fs/bpf/dynbpf`` unless
``--pin-root`` says otherwise); ``dynbpf load --pin DIR`` lays a load out
as ``DIR/progs/<program>``, ``DIR/links/<program>`` and ``DIR/maps/<map>``.
Every pin below the root is found by walking it and asking the kernel
what each file holds, so pins made by hand or by another tool show too.
The rest of the kernel's objects are found by id (``*_GET_NEXT_ID``).

A reference on the command line is an id (digits), a pin's path
(anything with a ``/``), or a name: first a pin's file name under the root,
then the kernel's name of a program or map (which the kernel cuts at 15
characters). A name that fits several is refused, listing them.
"""

from __future__ import annotations

import datetime
import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dynbpf._cli.common import bad_input
from dynbpf._sys import commands, fs
from dynbpf._sys.commands import ObjKind
from dynbpf._sys.constants import LinkType, MapType, ProgType, type_name
from dynbpf._sys.fd import Fd, object_kind
from dynbpf.errors import DynbpfError, SyscallError

Kind = Literal["prog", "map", "link"]
OBJ_KINDS: dict[Kind, ObjKind] = {"prog": ObjKind.PROG, "map": ObjKind.MAP, "link": ObjKind.LINK}
WORDS: dict[Kind, str] = {"prog": "program", "map": "map", "link": "link"}
#: where ``load --pin DIR`` puts each kind, below DIR
SUBDIRS: dict[Kind, str] = {"prog": "progs", "map": "maps", "link": "links"}


@dataclass(frozen=True, slots=True)
class Pin:
    """A file on bpffs and the kernel object it holds."""

    path: str
    kind: str  # prog, map, link (or another kind of BPF object, which the listings leave out)
    id: int


def pins(root: str) -> list[Pin]:
    """Every BPF object pinned below ``root`` (none if it does not exist or is not on bpffs), by path."""
    if not os.path.isdir(root) or not fs.is_bpffs(root):
        return []
    found: list[Pin] = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            pin = _pin(os.path.join(directory, name))
            if pin is not None:
                found.append(pin)
    return found


def _pin(path: str) -> Pin | None:
    try:
        fd = commands.obj_get(path)
    except DynbpfError:
        return None  # not a BPF object (bpffs holds iterator files too), or removed meanwhile
    with fd:
        kind = object_kind(fd.raw)
        obj_id = _id(kind, fd.raw)
    return Pin(path, kind, obj_id) if obj_id is not None else None


def _id(kind: str, fd: int) -> int | None:
    if kind == "prog":
        return int(commands.prog_info(fd).id)
    if kind == "map":
        return int(commands.map_info(fd).id)
    if kind == "link":
        return int(commands.link_info(fd).id)
    return None


def pinned_at(found: list[Pin], kind: Kind) -> dict[int, list[str]]:
    """Pin paths of each object of ``kind``, by id."""
    out: dict[int, list[str]] = {}
    for pin in found:
        if pin.kind == kind:
            out.setdefault(pin.id, []).append(pin.path)
    return out


def kernel_objects(kind: Kind) -> Iterator[tuple[int, Fd]]:
    """Every object of ``kind`` the kernel has, with an fd (the caller closes it); ones gone meanwhile skipped."""
    for obj_id in commands.ids(OBJ_KINDS[kind]):
        try:
            fd = commands.fd_by_id(OBJ_KINDS[kind], obj_id)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                continue
            raise
        yield obj_id, fd


def exists(kind: Kind, obj_id: int) -> bool:
    try:
        commands.fd_by_id(OBJ_KINDS[kind], obj_id).close()
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


# --- describing ---------------------------------------------------------------------------------


def describe(kind: Kind, fd: int, pinned: list[str]) -> dict[str, Any]:
    if kind == "prog":
        return describe_prog(fd, pinned)
    if kind == "map":
        return describe_map(fd, pinned)
    return describe_link(fd, pinned)


def describe_prog(fd: int, pinned: list[str]) -> dict[str, Any]:
    info = commands.prog_info(fd)
    return {
        "id": int(info.id),
        "type": type_name(ProgType, info.type),
        "name": info.name.decode(errors="replace"),
        "tag": bytes(info.tag).hex(),
        "gpl": bool(info.gpl_compatible & 1),
        "loaded_at": _wall_time(int(info.load_time)),
        "uid": int(info.created_by_uid),
        "xlated_bytes": int(info.xlated_prog_len),
        "jited_bytes": int(info.jited_prog_len),
        "verified_insns": int(info.verified_insns),
        "map_ids": commands.prog_map_ids(fd),
        "btf_id": int(info.btf_id),
        "run_cnt": int(info.run_cnt),
        "run_time_ns": int(info.run_time_ns),
        "pinned": pinned,
    }


def describe_map(fd: int, pinned: list[str]) -> dict[str, Any]:
    info = commands.map_info(fd)
    return {
        "id": int(info.id),
        "type": type_name(MapType, info.type),
        "name": info.name.decode(errors="replace"),
        "key_size": int(info.key_size),
        "value_size": int(info.value_size),
        "max_entries": int(info.max_entries),
        "flags": int(info.map_flags),
        "btf_id": int(info.btf_id),
        "pinned": pinned,
    }


def describe_link(fd: int, pinned: list[str]) -> dict[str, Any]:
    from dynbpf._attach.linkinfo import link_facts

    facts = link_facts(fd)
    return {
        "id": facts.id,
        "type": type_name(LinkType, facts.link_type),
        "kind": facts.kind,
        "prog_id": facts.prog_id,
        "description": facts.description,
        "pinned": pinned,
    }


def _wall_time(boot_ns: int) -> str:
    """A CLOCK_BOOTTIME stamp (``load_time``) as local wall-clock time, to the second."""
    ago = time.clock_gettime(time.CLOCK_BOOTTIME) - boot_ns / 1e9
    return datetime.datetime.fromtimestamp(time.time() - ago).astimezone().isoformat(timespec="seconds")


def listing(kind: Kind, root: str, *, everything: bool) -> list[dict[str, Any]]:
    """What ``<kind> list`` shows: the objects pinned under ``root`` or, with ``everything``, all the kernel's."""
    found = pinned_at(pins(root), kind)
    rows: list[dict[str, Any]] = []
    if everything:
        for obj_id, fd in kernel_objects(kind):
            with fd:
                rows.append(describe(kind, fd.raw, found.get(obj_id, [])))
        return rows
    for _, paths in sorted(found.items()):
        try:
            fd = commands.obj_get(paths[0])
        except DynbpfError:
            continue  # unpinned meanwhile
        with fd:
            rows.append(describe(kind, fd.raw, paths))
    return rows


def shown_path(path: str, root: str) -> str:
    """A pin path as a table shows it: relative to the root it was found under, when below it."""
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative


# --- references ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Found:
    """An object a command line named: an fd for it (the caller closes it), its id and the pin it was named by."""

    fd: Fd
    id: int
    path: str | None


def resolve(kind: Kind, ref: str, root: str, *, option: str) -> Found:
    """The object ``ref`` names (see the module docstring); exit status 2 when it names none or several."""
    word = WORDS[kind]
    if ref.isdigit():
        try:
            fd = commands.fd_by_id(OBJ_KINDS[kind], int(ref))
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                raise bad_input(f"the kernel has no {word} with id {ref}", option=option) from None
            raise
        return Found(fd, int(ref), None)
    if "/" in ref:
        return _open_pin(kind, ref, option)
    found = pins(root)
    named = [p for p in found if p.kind == kind and os.path.basename(p.path) == ref]
    ids = {p.id for p in named}
    if len(ids) == 1:
        return _open_pin(kind, named[0].path, option)
    if len(ids) > 1:
        where = ", ".join(f"{p.path} (id {p.id})" for p in named)
        raise bad_input(f"{ref!r} names several {word}s pinned under {root}: {where}; give a path or id", option=option)
    if kind != "link":
        by_kernel_name: list[int] = []
        for obj_id, fd in kernel_objects(kind):
            with fd:
                info = commands.prog_info(fd.raw) if kind == "prog" else commands.map_info(fd.raw)
                if info.name.decode(errors="replace") == ref[:15]:
                    by_kernel_name.append(obj_id)
        if len(by_kernel_name) == 1:
            return Found(commands.fd_by_id(OBJ_KINDS[kind], by_kernel_name[0]), by_kernel_name[0], None)
        if by_kernel_name:
            listed = ", ".join(map(str, by_kernel_name))
            raise bad_input(f"{ref!r} is the name of several {word}s (ids {listed}); give an id", option=option)
    pinned_names = sorted({os.path.basename(p.path) for p in found if p.kind == kind})
    known = f"{word}s pinned under {root}: {', '.join(pinned_names) or 'none'}"
    raise bad_input(f"no {word} named {ref!r} ({known}); give an id, a pin path or a name", option=option)


def _open_pin(kind: Kind, path: str, option: str) -> Found:
    if not os.path.lexists(path):
        raise bad_input(f"nothing is pinned at {path}", option=option)
    try:
        fd = commands.obj_get(path)
    except SyscallError as e:
        raise bad_input(f"{path} is not a pinned BPF object ({e})", option=option) from None
    what = object_kind(fd.raw)
    if what != kind:
        fd.close()
        raise bad_input(f"{path} pins a BPF {what}, not a {WORDS[kind]}", option=option)
    obj_id = _id(kind, fd.raw)
    assert obj_id is not None
    return Found(fd, obj_id, path)


# --- letting go -------------------------------------------------------------------------------------


def unpin(path: str) -> None:
    """Remove a pin (a file on bpffs); the kernel drops that hold on the object."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # removed meanwhile: what was asked is done
    except OSError as e:
        raise SyscallError("unlink", e.errno or errno.EIO, "cannot remove the pin", path) from None


Ref = tuple[Kind, int]


def gone(objects: list[Ref], *, wait: float = 2.0) -> tuple[list[Ref], list[Ref]]:
    """Which of ``objects`` the kernel has freed, and which it still holds, after up to ``wait`` seconds.

    A pin's hold ends when bpffs evicts its inode, after an RCU grace
    period, and a program's maps go after the program: freeing lags the
    unlink by a few milliseconds, so the question is asked until it
    settles.
    """
    deadline = time.monotonic() + wait
    while True:
        held: list[Ref] = [(kind, obj_id) for kind, obj_id in objects if exists(kind, obj_id)]
        if not held or time.monotonic() >= deadline:
            freed = [o for o in objects if o not in held]
            return freed, held
        time.sleep(0.02)


def show_listing(
    kind: Kind,
    root: str,
    *,
    everything: bool,
    as_json: bool,
    columns: Sequence[str],
    cells: Callable[[dict[str, Any]], list[Any]],
    wrap: Sequence[str] = (),
) -> None:
    """``<kind> list``: :func:`listing` as JSON, or a table of ``cells`` of each object plus its pins."""
    from dynbpf._cli.common import failures, print_json, print_table, say

    with failures():
        rows = listing(kind, root, everything=everything)
    if as_json:
        print_json(rows)
    elif not rows:
        say(f"no {WORDS[kind]}s pinned under {root}" if not everything else f"the kernel has no {WORDS[kind]}s")
    else:
        table = [[*cells(r), ", ".join(shown_path(p, root) for p in r["pinned"]) or None] for r in rows]
        print_table([*columns, "pinned"], table, wrap=[*wrap, "pinned"])
