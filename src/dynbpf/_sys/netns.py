"""Network namespaces: open one by path, or make a private one that nothing else uses.

sk_lookup and flow_dissector programs are attached to a network namespace
(a link holding a netns fd). A probe must not change what the host's
network does, so it attaches in a fresh, empty namespace: ``unshare`` is
run in a short-lived helper thread (a thread's network namespace is its
own), which keeps an fd of the new namespace and exits; the namespace lives
as long as that fd is open. Python 3.11 has no ``os.unshare``/``os.setns``,
hence libc through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from dynbpf._sys.fd import Fd
from dynbpf.errors import SyscallError

CLONE_NEWNET = 0x40000000
CURRENT = "/proc/thread-self/ns/net"
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def open_netns(path: str = CURRENT) -> Fd:
    """An fd of the network namespace at ``path`` (``/proc/<pid>/ns/net``, a bind mount under /run/netns...)."""
    try:
        return Fd(os.open(path, os.O_RDONLY | os.O_CLOEXEC), "netns")
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, "cannot open the network namespace", path) from None


def _unshare_net() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SyscallError("unshare", err, "cannot create a network namespace", "CLONE_NEWNET")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SyscallError("setns", err, "cannot enter the network namespace", f"fd {fd}")


def in_thread(fn: Callable[[], T], *, netns: int | None = None) -> T:
    """Run ``fn`` in a fresh thread inside the namespace ``netns`` (an fd), or a new empty one if None.

    The calling thread's namespace never changes; what ``fn`` raises is
    raised here. Sockets created by ``fn`` stay in that namespace after it
    returns.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if netns is None:
                _unshare_net()
            else:
                _setns(netns)
            result.append(fn())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, name="dynbpf-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@contextmanager
def private_netns() -> Iterator[Fd]:
    """A new, empty network namespace (only its loopback, down) as an fd; it goes away when closed."""
    fd = in_thread(lambda: open_netns(CURRENT))
    with fd:
        yield fd
