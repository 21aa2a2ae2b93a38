"""The pseudo filesystems BPF depends on: bpffs (pinning) and tracefs (tracepoint ids).

Both are often not mounted in containers and minimal VMs. Detection uses the
filesystem magic from statfs(2), not path conventions, so a plain directory
at /sys/fs/bpf is never mistaken for bpffs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
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


def check_pin_root(root: str, *, shared: bool = False) -> None:
    """Refuse a pin root where somebody else could put pins dynbpf would then trust.

    Every directory on the way must be reached without symbolic links and
    owned by root or this process's user; one writable by others must be
    sticky (so nobody else can rename what dynbpf creates in it). The root
    itself must not be writable by others at all: anyone could plant a pin
    under a name dynbpf is about to use (``/sys/fs/bpf`` is often mode
    1777) — unless ``shared`` says the caller accepts that.
    """
    path = os.path.normpath(root)
    if not os.path.isabs(path):
        raise PinError(f"pin_root {root!r} is not an absolute path", path=root)
    euid = os.geteuid()
    parts = path.split("/")[1:]
    for depth in range(len(parts) + 1):
        here = "/" + "/".join(parts[:depth])
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return  # the rest is created by make_pin_dirs, mode 0700
        except OSError as e:
            raise SyscallError("lstat", e.errno or errno.EIO, "cannot check the pin root", here) from None
        if stat.S_ISLNK(st.st_mode):
            raise PinError(
                f"pin_root {root}: {here} is a symbolic link; dynbpf does not follow links in pin paths", path=root
            )
        if st.st_uid not in (0, euid):
            raise PinError(
                f"pin_root {root}: {here} belongs to uid {st.st_uid}, who could replace the pins in it; "
                "use a directory owned by root",
                path=root,
            )
        open_to_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if here == path and open_to_others and not shared:
            raise PinError(
                f"pin_root {root} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): anyone could pin a "
                "map of their own under a name dynbpf then reuses. Use a directory only root can write "
                f"(dynbpf creates a missing one with mode 0700, e.g. pin_root='{os.path.join(path, 'myapp')}'), "
                "or pass allow_shared_pin_root=True to accept the risk",
                path=root,
            )
        if here != path and open_to_others and not st.st_mode & stat.S_ISVTX:
            raise PinError(
                f"pin_root {root}: {here} is writable by others and not sticky (mode {stat.S_IMODE(st.st_mode):04o}): "
                "anyone could replace the directories below it",
                path=root,
            )


def make_pin_dirs(path: str) -> None:
    """Create the directories leading to pin ``path`` (see :func:`make_pin_dir`)."""
    if not os.path.isabs(path) or ".." in path.split("/"):
        raise PinError(f"cannot pin at {path!r}: give an absolute path without '..' on a BPF filesystem", path=path)
    make_pin_dir(os.path.dirname(path), what=f"pin at {path}")


def make_pin_dir(directory: str, *, what: str = "") -> None:
    """Create ``directory`` (mode 0700, parents too), once it is known it would be on bpffs.

    Checked before anything is created (root creating directories outside
    bpffs is the harm): the path is absolute, has no ``..``, and the deepest
    directory that exists already is on bpffs and reached without symlinks.
    Missing directories below it are created, as ``mkdir -p`` would.
    """
    what = what or f"create {directory}"
    if not os.path.isabs(directory) or ".." in directory.split("/"):
        raise PinError(f"cannot {what}: give an absolute path without '..' on a BPF filesystem", path=directory)
    existing = directory if os.path.lexists(directory) else _nearest_existing(directory)
    if os.path.realpath(existing) != os.path.normpath(existing):
        raise PinError(f"cannot {what}: {existing} is reached through a symbolic link", path=directory)
    if not is_bpffs(existing):
        mount = "mount one, e.g. `mount -t bpf bpf /sys/fs/bpf`"
        if existing == directory:
            raise PinError(f"cannot {what}: {directory} is not on a BPF filesystem ({mount})", path=directory)
        raise PinError(
            f"cannot {what}: {directory} does not exist, and dynbpf creates directories for pins only on a "
            f"BPF filesystem; {existing}, the nearest that exists, is not on one ({mount})",
            path=directory,
        )
    missing = []
    while directory != existing:
        missing.append(directory)
        directory = os.path.dirname(directory)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)  # libbpf's mode for the directories it makes (os.makedirs gives parents 0777)
        except FileExistsError:
            pass  # made meanwhile by another process opening the same object
        except OSError as e:
            raise SyscallError("mkdir", e.errno or errno.EIO, "cannot create the pin directory", d) from None


def check_pin_owner(path: str) -> None:
    """Refuse a pin another user made: dynbpf trusts only pins of root or this user."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # gone since it was seen: BPF_OBJ_GET says so
    if st.st_uid not in (0, os.geteuid()):
        raise PinError(f"{path} is pinned by uid {st.st_uid}; dynbpf reuses only pins of root or this user", path=path)


def pinned(path: str) -> bool:
    """Whether something is pinned at ``path``; a symlink there is refused, never followed.

    bpffs directories are often world-writable and sticky: a user could plant
    a link to another application's pin and have root write into that map.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise PinError(f"cannot look at the pin {path}: {e.strerror}", path=path) from None
    if stat.S_ISLNK(st.st_mode):
        raise PinError(f"{path} is a symbolic link, not a pin; dynbpf does not follow links in pin paths", path=path)
    return True


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
            "mount it with `mount -t tracefs nodev /sys/kernel/tracing` or "
            "dynbpf._sys.fs.tracefs_root(mount_if_missing=True)"
        )
    for part in (category, name):
        if not part or "/" in part or part in (".", ".."):
            raise AttachError(f"{part!r} is not a tracepoint category or event name")
    path = os.path.join(root, "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        raise AttachError(f"no tracepoint {category}/{name} on this kernel ({path} does not exist)") from None
    except (OSError, ValueError) as e:
        raise AttachError(f"cannot read tracepoint id from {path}: {e}") from None
