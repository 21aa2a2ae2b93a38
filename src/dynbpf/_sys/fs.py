"""The pseudo filesystems BPF depends on: bpffs (pinning) and tracefs (tracepoint ids).

Both are often not mounted in containers and minimal VMs. Detection uses the
filesystem magic from statfs(2), not path conventions, so a plain directory
at /sys/fs/bpf is never mistaken for bpffs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

from dynbpf._sys.syscall import libc
from dynbpf.errors import AttachError, PinError, SyscallError

BPF_FS_MAGIC = 0xCAFE4A11
TRACEFS_MAGIC = 0x74726163
DEBUGFS_MAGIC = 0x64626720

DEFAULT_BPFFS = "/sys/fs/bpf"
TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_statfs = libc.statfs
_statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_mount = libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def fs_magic(path: str) -> int | None:
    """``f_type`` of the filesystem holding ``path``, or None if it cannot be stat'ed."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on LP64; f_type comes first
    if _statfs(os.fsencode(path), buf) != 0:
        return None
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder) & 0xFFFFFFFF


def mount(source: str, target: str, fstype: str) -> None:
    if _mount(source.encode(), os.fsencode(target), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise SyscallError(f"mount -t {fstype}", err, "mounting needs CAP_SYS_ADMIN in the mount namespace", target)


# --- bpffs -----------------------------------------------------------------------


def is_bpffs(path: str) -> bool:
    return fs_magic(path) == BPF_FS_MAGIC


def bpffs_mounts() -> list[str]:
    """Mount points of bpffs in this mount namespace."""
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "bpf":
                    out.append(parts[1])
    except OSError:
        pass
    return out


def ensure_bpffs(path: str = DEFAULT_BPFFS, *, mount_if_missing: bool = False) -> str:
    """Return ``path`` if it is a directory on bpffs, optionally mounting bpffs there first.

    Nothing is created otherwise: a missing directory is reported as
    missing (with whether it would be on bpffs), not as "not a BPF
    filesystem", which would send the user to mount one that is there.
    """
    if is_bpffs(path):
        return path
    if mount_if_missing:
        os.makedirs(path, exist_ok=True)
        mount("bpf", path, "bpf")
        return path
    if not os.path.lexists(path):
        existing = _nearest_existing(path)
        if is_bpffs(existing):
            why = f"dynbpf does not create it: `mkdir -p {path}` makes it, on the BPF filesystem holding {existing}"
        else:
            why = (
                f"{existing}, its nearest existing parent, is not on a BPF filesystem ({_mounts()}): "
                "mount one or choose another pin root"
            )
        raise PinError(f"{path} does not exist, and {why}", path=path)
    raise PinError(
        f"{path} is not on a BPF filesystem ({_mounts()}); "
        f"mount one with `mount -t bpf bpf {path}` or choose another pin root",
        path=path,
    )


def _mounts() -> str:
    return "bpffs mounts here: " + (", ".join(bpffs_mounts()) or "none")


def _nearest_existing(path: str) -> str:
    """The deepest directory on the way to ``path`` that exists (``/`` at worst)."""
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    return existing


def pin_path(root: str, *parts: str) -> str:
    """Join pin path components, refusing names that would escape ``root``."""
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part or len(part.encode()) > 255:
            raise PinError(f"invalid pin name component {part!r} (no '/', '.', '..', NUL; at most 255 bytes)")
    return os.path.join(root, *parts)


def make_pin_dirs(path: str) -> None:
    """Create the directories leading to pin ``path``, once it is known they would be on bpffs.

    Checked before anything is created (root creating directories outside
    bpffs is the harm): the path is absolute, has no ``..``, and the deepest
    directory that exists already is on bpffs and reached without symlinks.
    Missing directories below it are created, as ``mkdir -p`` would.
    """
    if not os.path.isabs(path) or ".." in path.split("/"):
        raise PinError(f"cannot pin at {path!r}: give an absolute path without '..' on a BPF filesystem", path=path)
    parent = os.path.dirname(path)
    existing = parent if os.path.lexists(parent) else _nearest_existing(parent)
    if os.path.realpath(existing) != os.path.normpath(existing):
        raise PinError(f"cannot pin at {path}: {existing} is reached through a symbolic link", path=path)
    if not is_bpffs(existing):
        mount = "mount one, e.g. `mount -t bpf bpf /sys/fs/bpf`"
        if existing == parent:
            raise PinError(f"cannot pin at {path}: {parent} is not on a BPF filesystem ({mount})", path=path)
        raise PinError(
            f"cannot pin at {path}: {parent} does not exist, and dynbpf creates directories for pins only on a "
            f"BPF filesystem; {existing}, the nearest that exists, is not on one ({mount})",
            path=path,
        )
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise SyscallError("mkdir", e.errno or errno.EIO, "cannot create the pin directory", parent) from None


# --- tracefs ---------------------------------------------------------------------


def tracefs_root(*, mount_if_missing: bool = False) -> str | None:
    """Where tracefs is mounted (preferring /sys/kernel/tracing), optionally mounting it."""
    for cand in TRACEFS_CANDIDATES:
        if fs_magic(cand) == TRACEFS_MAGIC:
            return cand
    if mount_if_missing and os.path.isdir(TRACEFS_CANDIDATES[0]):
        mount("nodev", TRACEFS_CANDIDATES[0], "tracefs")
        return TRACEFS_CANDIDATES[0]
    return None


def tracepoint_id(category: str, name: str, *, root: str | None = None) -> int:
    """The perf config id of tracepoint ``category/name``."""
    root = root or tracefs_root()
    if root is None:
        raise AttachError(
            "tracefs is not mounted (looked in " + ", ".join(TRACEFS_CANDIDATES) + "); "
            "mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
        )
    path = os.path.join(root, "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        raise AttachError(f"no tracepoint {category}/{name} on this kernel ({path} does not exist)") from None
    except (OSError, ValueError) as e:
        raise AttachError(f"cannot read tracepoint id from {path}: {e}") from None
