"""The control socket: who may connect, checked twice.

The file is root's, mode 0600 (0660 and the configured group when there
is one), set while it is created (umask) so it is never open to others for
a moment. The kernel then tells the agent who is at the other end of each
connection (``SO_PEERCRED``, ``SO_PEERGROUPS``), and the API answers only
root or a member of the configured group: a socket whose mode was widened
by hand still refuses everyone else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Protocol

from dynbpf.errors import SyscallError

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13; Python does not name it
_MAX_GROUPS = 65536


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]

    def allowed(self, group: int | None) -> bool:
        """Root, or (with a configured group) a member of it, primary or supplementary."""
        return self.uid == 0 or (group is not None and (self.gid == group or group in self.groups))


class _Sock(Protocol):
    def getsockopt(self, level: int, option: int, size: int, /) -> bytes: ...


def peer(sock: _Sock) -> Peer:
    """Who is connected to ``sock``, as the kernel recorded it at connect time."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    size = 256 * 4
    groups: tuple[int, ...] = ()
    while size <= _MAX_GROUPS * 4:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as e:
            if e.errno == errno.ERANGE:
                size *= 4
                continue
            break  # a kernel without SO_PEERGROUPS: the primary group is still checked
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
        break
    return Peer(pid, uid, gid, groups)


@dataclass(frozen=True, slots=True)
class Listening:
    """The bound socket, and the file it made (to remove that file and no other)."""

    sock: socket.socket
    path: str
    inode: int

    def remove(self) -> None:
        """Unlink the socket's file if it is still the one this socket made (a newer agent may have replaced it)."""
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)


def bind(path: str, group: int | None) -> Listening:
    """A listening unix socket at ``path``: root's, mode 0600, or 0660 with ``group``.

    A socket left by an agent that died is replaced; one another agent
    still listens on is refused (``SyscallError`` EADDRINUSE), and so is
    anything at ``path`` that is not a socket. The directory is created
    (mode 0755) when missing.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SyscallError("bind", errno.EEXIST, "not a socket: the agent does not replace it", path)
        if _listening(path):
            raise SyscallError("bind", errno.EADDRINUSE, "another agent listens on this socket", path)
        os.unlink(path)
    mode = 0o660 if group is not None else 0o600
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chown(path, 0 if os.geteuid() == 0 else -1, group if group is not None else -1)
        os.chmod(path, mode)
        sock.listen(128)
        sock.setblocking(False)
        inode = os.lstat(path).st_ino
    except OSError as e:
        sock.close()
        raise SyscallError("bind", e.errno or errno.EIO, "cannot make the control socket", path) from None
    return Listening(sock, path, inode)


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True
