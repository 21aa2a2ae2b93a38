"""Typed wrappers for the bpf(2) commands dynbpf uses.

Each wrapper owns the buffers its request points to for the duration of the
call and returns an :class:`Fd` for anything that creates a kernel object.
They add no policy (retries beyond EAGAIN, fallbacks): that is the job of
higher layers, which know what the caller wanted.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
from dataclasses import dataclass
from typing import TypeVar

from dynbpf._sys.attrs import (
    BtfInfo,
    BtfLoadAttr,
    EnableStatsAttr,
    GetIdAttr,
    InfoAttr,
    IterCreateAttr,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkInfo,
    LinkUpdateAttr,
    MapBatchAttr,
    MapCreateAttr,
    MapElemAttr,
    MapInfo,
    ObjPinAttr,
    ProgAssocStructOpsAttr,
    ProgAttachAttr,
    ProgBindMapAttr,
    ProgInfo,
    ProgLoadAttr,
    ProgQueryAttr,
    ProgTestRunAttr,
    RawTracepointAttr,
    addr,
)
from dynbpf._sys.constants import Cmd
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import bpf, bpf_raw, error_for, good_fd

Buffer = ctypes.Array[ctypes.c_char] | ctypes.Array[ctypes.c_ubyte]

#: libbpf's PROG_LOAD_ATTEMPTS: the verifier returns EAGAIN when interrupted by a signal.
PROG_LOAD_ATTEMPTS = 5


def _fd(cmd: Cmd, attr: ctypes.Structure, kind: str, detail: str = "", retry_eagain: int = 0) -> Fd:
    return Fd(good_fd(bpf(cmd, attr, detail=detail, retry_eagain=retry_eagain)), kind)


def _buf_addr(data: bytes | Buffer | None) -> tuple[int, object]:
    """Address of ``data`` plus the object that keeps it alive during the call."""
    if data is None:
        return 0, None
    if isinstance(data, bytes):
        keep = ctypes.create_string_buffer(data, len(data))
        return ctypes.addressof(keep), keep
    return ctypes.addressof(data), data


# --- maps -------------------------------------------------------------------


def map_create(attr: MapCreateAttr) -> Fd:
    name = attr.map_name.decode(errors="replace")
    return _fd(Cmd.MAP_CREATE, attr, "map", detail=f"map {name!r}" if name else "")


def map_create_raw(attr: MapCreateAttr) -> tuple[Fd | None, int]:
    """MAP_CREATE returning ``(fd, 0)`` or ``(None, errno)``: for a retry with a different request."""
    ret, err = bpf_raw(Cmd.MAP_CREATE, attr)
    return (Fd(good_fd(ret), "map"), 0) if ret >= 0 else (None, err)


def _elem(cmd: Cmd, map_fd: int, key: bytes | Buffer | None, value: bytes | Buffer | None, flags: int) -> int:
    kaddr, _k = _buf_addr(key)
    vaddr, _v = _buf_addr(value)
    attr = MapElemAttr(map_fd=map_fd, key=kaddr, value=vaddr, flags=flags)
    ret, err = bpf_raw(cmd, attr)
    return 0 if ret >= 0 else err


def map_lookup_elem(map_fd: int, key: bytes | Buffer | None, value: Buffer, flags: int = 0) -> bool:
    """Fill ``value``; False if the key is absent."""
    err = _elem(Cmd.MAP_LOOKUP_ELEM, map_fd, key, value, flags)
    if err in (0, errno.ENOENT):
        return err == 0
    raise error_for(Cmd.MAP_LOOKUP_ELEM, err)


def map_update_elem(map_fd: int, key: bytes | Buffer | None, value: bytes | Buffer, flags: int = 0) -> None:
    err = _elem(Cmd.MAP_UPDATE_ELEM, map_fd, key, value, flags)
    if err:
        raise error_for(Cmd.MAP_UPDATE_ELEM, err)


def map_delete_elem(map_fd: int, key: bytes | Buffer) -> bool:
    """False if the key was absent."""
    err = _elem(Cmd.MAP_DELETE_ELEM, map_fd, key, None, 0)
    if err in (0, errno.ENOENT):
        return err == 0
    raise error_for(Cmd.MAP_DELETE_ELEM, err)


def map_get_next_key(map_fd: int, key: bytes | Buffer | None, next_key: Buffer) -> bool:
    """Fill ``next_key`` with the key after ``key`` (first key if None); False at the end."""
    err = _elem(Cmd.MAP_GET_NEXT_KEY, map_fd, key, next_key, 0)
    if err in (0, errno.ENOENT):
        return err == 0
    raise error_for(Cmd.MAP_GET_NEXT_KEY, err)


def map_freeze(map_fd: int) -> None:
    bpf(Cmd.MAP_FREEZE, MapElemAttr(map_fd=map_fd))


@dataclass(frozen=True)
class BatchResult:
    count: int
    done: bool


def map_batch_raw(
    cmd: Cmd,
    map_fd: int,
    *,
    keys: Buffer,
    values: Buffer | None,
    count: int,
    in_batch: Buffer | None = None,
    out_batch: Buffer | None = None,
    elem_flags: int = 0,
) -> tuple[int, int]:
    """A batch command returning ``(elements processed, errno)`` (0 on success): the count matters on failure too."""
    attr = MapBatchAttr(
        in_batch=addr(in_batch),
        out_batch=addr(out_batch),
        keys=addr(keys),
        values=addr(values),
        count=count,
        map_fd=map_fd,
        elem_flags=elem_flags,
    )
    ret, err = bpf_raw(cmd, attr)
    return int(attr.count), 0 if ret >= 0 else err


def map_batch(
    cmd: Cmd,
    map_fd: int,
    *,
    keys: Buffer,
    values: Buffer | None,
    count: int,
    in_batch: Buffer | None = None,
    out_batch: Buffer | None = None,
    elem_flags: int = 0,
) -> BatchResult:
    """MAP_LOOKUP_BATCH / LOOKUP_AND_DELETE_BATCH / UPDATE_BATCH / DELETE_BATCH.

    ``done`` is True when a lookup reached the end of the map (the kernel's
    ENOENT); ``count`` is how many elements were processed either way.
    """
    processed, err = map_batch_raw(
        cmd,
        map_fd,
        keys=keys,
        values=values,
        count=count,
        in_batch=in_batch,
        out_batch=out_batch,
        elem_flags=elem_flags,
    )
    if not err:
        return BatchResult(processed, False)
    if err == errno.ENOENT and cmd in (Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH):
        return BatchResult(processed, True)
    raise error_for(cmd, err, f"{processed} of {count} elements processed")


# --- programs ------------------------------------------------------------------


def prog_load(attr: ProgLoadAttr) -> Fd:
    """Load a program; the caller interprets failures (it owns the log buffer)."""
    name = attr.prog_name.decode(errors="replace")
    return _fd(Cmd.PROG_LOAD, attr, "prog", detail=f"program {name!r}", retry_eagain=PROG_LOAD_ATTEMPTS)


def prog_load_raw(attr: ProgLoadAttr) -> tuple[Fd | None, int]:
    """PROG_LOAD returning ``(fd, 0)`` or ``(None, errno)``: for probes and log retries."""
    for _ in range(PROG_LOAD_ATTEMPTS):
        ret, err = bpf_raw(Cmd.PROG_LOAD, attr)
        if ret >= 0:
            return Fd(good_fd(ret), "prog"), 0
        if err != errno.EAGAIN:
            break
    return None, err


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    duration_ns: int
    data_out: bytes
    ctx_out: bytes


def prog_test_run(
    prog_fd: int,
    *,
    data_in: bytes = b"",
    data_out_size: int = 0,
    ctx_in: bytes = b"",
    ctx_out_size: int = 0,
    repeat: int = 1,
    flags: int = 0,
    cpu: int = 0,
) -> TestRunResult:
    din, _din = _buf_addr(data_in or None)
    cin, _cin = _buf_addr(ctx_in or None)
    dout = ctypes.create_string_buffer(data_out_size) if data_out_size else None
    cout = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
    attr = ProgTestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(data_in),
        data_size_out=data_out_size,
        data_in=din,
        data_out=addr(dout),
        repeat=repeat,
        ctx_size_in=len(ctx_in),
        ctx_size_out=ctx_out_size,
        ctx_in=cin,
        ctx_out=addr(cout),
        flags=flags,
        cpu=cpu,
    )
    bpf(Cmd.PROG_TEST_RUN, attr)
    return TestRunResult(
        retval=attr.retval,
        duration_ns=attr.duration,
        data_out=dout.raw[: attr.data_size_out] if dout is not None else b"",
        ctx_out=cout.raw[: attr.ctx_size_out] if cout is not None else b"",
    )


def prog_bind_map(prog_fd: int, map_fd: int) -> None:
    bpf(Cmd.PROG_BIND_MAP, ProgBindMapAttr(prog_fd=prog_fd, map_fd=map_fd))


def prog_assoc_struct_ops(prog_fd: int, map_fd: int, flags: int = 0) -> None:
    """BPF_PROG_ASSOC_STRUCT_OPS (command 38): tie a non-struct_ops program to a struct_ops map."""
    bpf(Cmd.PROG_ASSOC_STRUCT_OPS, ProgAssocStructOpsAttr(map_fd=map_fd, prog_fd=prog_fd, flags=flags))


# --- BTF ------------------------------------------------------------------------


def btf_load(data: bytes, *, log: Buffer | None = None, log_level: int = 0) -> Fd:
    keep = ctypes.create_string_buffer(data, len(data))
    attr = BtfLoadAttr(
        btf=ctypes.addressof(keep),
        btf_size=len(data),
        btf_log_buf=addr(log),
        btf_log_size=ctypes.sizeof(log) if log is not None else 0,
        btf_log_level=log_level if log is not None else 0,
    )
    return _fd(Cmd.BTF_LOAD, attr, "btf")


# --- pinning ----------------------------------------------------------------------


def obj_pin(fd: int, path: str) -> None:
    keep = ctypes.create_string_buffer(os.fsencode(path))
    bpf(Cmd.OBJ_PIN, ObjPinAttr(pathname=ctypes.addressof(keep), bpf_fd=fd), detail=path)


def obj_get(path: str, file_flags: int = 0) -> Fd:
    keep = ctypes.create_string_buffer(os.fsencode(path))
    return _fd(Cmd.OBJ_GET, ObjPinAttr(pathname=ctypes.addressof(keep), file_flags=file_flags), "pinned", path)


# --- ids, fds and info -------------------------------------------------------------------


class ObjKind(enum.Enum):
    """Kernel object kinds enumerable by id: (GET_NEXT_ID, GET_FD_BY_ID) commands."""

    PROG = (Cmd.PROG_GET_NEXT_ID, Cmd.PROG_GET_FD_BY_ID)
    MAP = (Cmd.MAP_GET_NEXT_ID, Cmd.MAP_GET_FD_BY_ID)
    BTF = (Cmd.BTF_GET_NEXT_ID, Cmd.BTF_GET_FD_BY_ID)
    LINK = (Cmd.LINK_GET_NEXT_ID, Cmd.LINK_GET_FD_BY_ID)


def next_id(kind: ObjKind, start: int) -> int | None:
    """The id after ``start`` (0 for the first), or None at the end."""
    attr = GetIdAttr(start_id=start)
    ret, err = bpf_raw(kind.value[0], attr)
    if ret >= 0:
        return int(attr.next_id)
    if err == errno.ENOENT:
        return None
    raise error_for(kind.value[0], err)


def ids(kind: ObjKind) -> list[int]:
    """Every id of ``kind`` currently alive in the kernel."""
    out: list[int] = []
    cur = next_id(kind, 0)
    while cur is not None:
        out.append(cur)
        cur = next_id(kind, cur)
    return out


def fd_by_id(kind: ObjKind, obj_id: int) -> Fd:
    return _fd(kind.value[1], GetIdAttr(start_id=obj_id), kind.name.lower(), f"id {obj_id}")


InfoT = TypeVar("InfoT", ProgInfo, MapInfo, BtfInfo, LinkInfo)


def obj_info(fd: int, info: InfoT) -> InfoT:
    """Fill ``info`` (whose pointer fields the caller may have set up) for the object behind ``fd``."""
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    return info


def prog_info(fd: int) -> ProgInfo:
    return obj_info(fd, ProgInfo())


def prog_map_ids(fd: int) -> list[int]:
    """The maps the kernel says a loaded program uses (``bpf_prog_info.map_ids``)."""
    n = prog_info(fd).nr_map_ids
    arr = (ctypes.c_uint32 * max(n, 1))()
    info = ProgInfo(nr_map_ids=n, map_ids=ctypes.addressof(arr))
    obj_info(fd, info)
    return list(arr[: min(n, info.nr_map_ids)])


def map_info(fd: int) -> MapInfo:
    return obj_info(fd, MapInfo())


def btf_info(fd: int) -> BtfInfo:
    return obj_info(fd, BtfInfo())


def link_info(fd: int) -> LinkInfo:
    return obj_info(fd, LinkInfo())


# --- tracepoints and links -------------------------------------------------------------------


def raw_tracepoint_open(name: str | None, prog_fd: int, cookie: int = 0) -> Fd:
    keep = ctypes.create_string_buffer(name.encode()) if name else None
    attr = RawTracepointAttr(name=addr(keep), prog_fd=prog_fd, cookie=cookie)
    return _fd(Cmd.RAW_TRACEPOINT_OPEN, attr, "link", detail=name or "")


def enable_stats() -> Fd:
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): programs count runs and run time while the returned fd is open."""
    return _fd(Cmd.ENABLE_STATS, EnableStatsAttr(type=0), "stats")


def link_create(attr: LinkCreateAttr, detail: str = "") -> Fd:
    return _fd(Cmd.LINK_CREATE, attr, "link", detail)


def link_update(link_fd: int, new_prog_fd: int, *, old_prog_fd: int = 0, flags: int = 0) -> None:
    bpf(Cmd.LINK_UPDATE, LinkUpdateAttr(link_fd=link_fd, new_prog_fd=new_prog_fd, old_prog_fd=old_prog_fd, flags=flags))


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0, detail: str = "") -> None:
    """BPF_PROG_ATTACH: the attachment lives in the target (a sockmap...), not in an fd of its own."""
    attr = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type, attach_flags=flags)
    bpf(Cmd.PROG_ATTACH, attr, detail=detail)


def prog_detach(target_fd: int, prog_fd: int, attach_type: int, detail: str = "") -> None:
    """BPF_PROG_DETACH of the program ``prog_fd`` that BPF_PROG_ATTACH put on ``target_fd``."""
    attr = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    bpf(Cmd.PROG_DETACH, attr, detail=detail)


def prog_query(target_fd: int, attach_type: int, *, max_progs: int = 64) -> list[int]:
    """Ids of the programs attached to ``target_fd`` for ``attach_type`` (BPF_PROG_QUERY)."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = ProgQueryAttr(target_fd=target_fd, attach_type=attach_type, prog_ids=addr(ids), prog_cnt=max_progs)
    bpf(Cmd.PROG_QUERY, attr)
    return list(ids[: min(attr.prog_cnt, max_progs)])


def link_detach(link_fd: int) -> None:
    bpf(Cmd.LINK_DETACH, LinkDetachAttr(link_fd=link_fd))


def iter_create(link_fd: int) -> Fd:
    return Fd(good_fd(bpf(Cmd.ITER_CREATE, IterCreateAttr(link_fd=link_fd))), "iter")
