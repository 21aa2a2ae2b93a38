"""Minimal kernel objects for probes: load a tiny program, create a tiny map."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

from dynbpf._asm import Insn, encode
from dynbpf._btf import Kind, kernel
from dynbpf._probes.result import outcome
from dynbpf._sys import commands, kernel_version
from dynbpf._sys.attrs import MapCreateAttr, ProgLoadAttr
from dynbpf._sys.closing import Closing
from dynbpf._sys.constants import AttachType, Cmd, MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import bpf_raw, good_fd

LOG_SIZE = 4096
_LICENSE = ctypes.create_string_buffer(b"GPL")


@dataclass
class Trial(Closing):
    """What one probe operation did: the fd on success (caller closes), errno, verifier log."""

    fd: Fd | None
    errno: int
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.fd is not None

    @property
    def result(self) -> str:
        return outcome(self.errno)

    def close(self) -> None:
        if self.fd is not None:
            self.fd.close()


def kernel_btf_id(name: str, kind: Kind) -> int | None:
    """Id of the first vmlinux BTF type ``name`` of ``kind`` (a real attach target), if any."""
    spec = kernel.vmlinux()
    ids = spec.find(name, kind) if spec is not None else []
    return ids[0] if ids else None


def load(
    prog_type: ProgType,
    insns: Sequence[Insn],
    *,
    expected_attach_type: AttachType | int = 0,
    attach_btf_id: int = 0,
    prog_flags: int = 0,
    with_log: bool = False,
    name: bytes = b"",
) -> Trial:
    code = encode(insns)
    buf = ctypes.create_string_buffer(code, len(code))
    log = ctypes.create_string_buffer(LOG_SIZE) if with_log else None
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(code) // 8,
        insns=ctypes.addressof(buf),
        license=ctypes.addressof(_LICENSE),
        expected_attach_type=expected_attach_type,
        attach_btf_id=attach_btf_id,
        prog_flags=prog_flags,
        prog_name=name,
        kern_version=kernel_version.code() if prog_type == ProgType.KPROBE else 0,
    )
    if log is not None:
        attr.log_buf = ctypes.addressof(log)
        attr.log_size = LOG_SIZE
        attr.log_level = 1
    fd, err = commands.prog_load_raw(attr)
    return Trial(fd, err, log.value.decode(errors="replace") if log is not None else "")


def create_map(
    map_type: MapType,
    key_size: int,
    value_size: int,
    max_entries: int,
    **extra: int,
) -> Trial:
    attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries, **extra)
    return raw_fd(Cmd.MAP_CREATE, attr, "map")


def raw_fd(cmd: Cmd, attr: ctypes.Structure, kind: str) -> Trial:
    """Run a bpf command that returns an fd, capturing errno instead of raising."""
    ret, err = bpf_raw(cmd, attr)
    return Trial(Fd(good_fd(ret), kind) if ret >= 0 else None, err)
