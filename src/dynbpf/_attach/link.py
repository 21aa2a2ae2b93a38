"""``Link``: one attachment of a program to a hook, owned by exactly one object.

The kernel keeps a program attached while something references its link: an
open fd or a pin in bpffs. ``detach()`` drops this process's fd, so an
unpinned link stops at once and a pinned one lives on until ``unpin()``
(possibly after this process has exited; ``Link.from_pin`` picks it up
again). Listeners let the runtime follow what happens to a link it handed
out: ``"detach"`` when its fd is closed, ``"update"`` (with the new program's
fd) when BPF_LINK_UPDATE swapped the program it runs.
"""

from __future__ import annotations

import errno
import operator
import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, SupportsIndex

from dynbpf._attach.linkinfo import LinkFacts, link_facts
from dynbpf._sys import commands, fs, perf
from dynbpf._sys.closing import Closing
from dynbpf._sys.constants import LinkType, type_name
from dynbpf._sys.fd import Fd, object_kind
from dynbpf.errors import AttachError, PinError, StateError, SyscallError

Listener = Callable[["Link", str, "int | None"], None]

#: link types whose kernel ops implement update_prog (the others answer EINVAL to BPF_LINK_UPDATE)
UPDATABLE = frozenset(
    {LinkType.CGROUP, LinkType.ITER, LinkType.NETNS, LinkType.XDP, LinkType.TCX, LinkType.NETKIT, LinkType.SOCKMAP}
)
_READ_CHUNK = 1 << 16


class HasFd(Protocol):
    @property
    def fd(self) -> int: ...


def program_fd(program: SupportsIndex | HasFd) -> int:
    """The fd of ``program``: an int, an :class:`Fd`, or anything with an ``fd`` (a runtime ``Program``)."""
    if hasattr(program, "fd"):
        return operator.index(program.fd)
    return operator.index(program)


class Link(Closing):
    """A program attached to a hook (see the module docstring); thread-safe, a context manager."""

    def __init__(self, fd: Fd, *, kind: str, description: str, pinned: str | None = None) -> None:
        self._fd = fd
        self.kind = kind
        self.description = description
        self._pinned = pinned
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        try:
            state = "detached" if self.closed else f"fd {self._fd.raw}"
        except StateError:
            state = "partly detached"
        pin = f" pinned at {self._pinned}" if self._pinned else ""
        return f"<{type(self).__name__} {self.description} {state}{pin}>"

    def close(self) -> None:
        """Detach (what closing the link's fd does); the ``with`` block's exit calls it."""
        self.detach()

    # --- state --------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        with self._lock:
            return self._open_fd()

    @property
    def closed(self) -> bool:
        return self._fd.closed

    @property
    def pinned(self) -> str | None:
        """The bpffs path this link was pinned at by this object (or opened from), else None."""
        return self._pinned

    def facts(self) -> LinkFacts:
        """What the kernel reports about this link (type, link id, program id, hook)."""
        with self._lock:
            return link_facts(self._open_fd())

    @property
    def id(self) -> int:
        return self.facts().id

    @property
    def program_id(self) -> int:
        """Id of the program the link runs now (it changes with :meth:`update`)."""
        return self.facts().prog_id

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # --- operations ------------------------------------------------------------------------

    def detach(self) -> None:
        """Close this process's reference; idempotent. A pinned link stays attached until :meth:`unpin`."""
        with self._lock:
            if self.closed:
                return
            self._close()
        self._notify("detach", None)

    def pin(self, path: str) -> None:
        """Pin in bpffs so the attachment outlives this fd and this process (``Link.from_pin`` reopens it)."""
        with self._lock:
            fd = self._open_fd()
            if self._pinned is not None:
                raise StateError(f"link {self.description} is already pinned at {self._pinned}; unpin() it first")
            fs.make_pin_dirs(path)
            commands.obj_pin(fd, path)
            self._pinned = path

    def unpin(self) -> None:
        """Remove the pin this object made (or was opened from); a no-op if there is none.

        Works after :meth:`detach` too: detach then unpin stops a pinned link.
        """
        with self._lock:
            path, self._pinned = self._pinned, None
        if path is not None:
            _unlink(path)

    def update(self, new_program: SupportsIndex | HasFd) -> None:
        """Make the link run ``new_program`` (BPF_LINK_UPDATE), without a moment of detachment.

        Only link types whose kernel side implements it accept (iterators,
        cgroup, xdp, tcx, netns...); tracepoint, raw tracepoint, tracing and
        perf-event links do not, and raise :class:`AttachError` saying so.
        """
        new_fd = program_fd(new_program)
        with self._lock:
            fd = self._open_fd()
            try:
                commands.link_update(fd, new_fd)
            except SyscallError as e:
                raise self._update_error(fd, new_fd, e) from e
        self._notify("update", new_fd)

    # --- pins -------------------------------------------------------------------------------

    @classmethod
    def from_pin(cls, path: str) -> Link:
        """Open a link pinned at ``path`` (by this or another process); kind and description come from the kernel.

        A directory pinned by a :class:`LinkGroup` opens as a group again.
        """
        if os.path.isdir(path) and fs.is_bpffs(path):
            return LinkGroup.from_pin_dir(path)
        fd = commands.obj_get(path)
        try:
            what = object_kind(fd.raw)
            if what != "link":
                raise PinError(f"{path} pins a BPF {what}, not a link", path=path)
            facts = link_facts(fd.raw)
        except BaseException:
            fd.close()
            raise
        fd.kind = "link"
        link_cls = IterLink if facts.link_type == LinkType.ITER else Link
        return link_cls(fd, kind=facts.kind, description=facts.description, pinned=path)

    # --- internals (callers hold self._lock where it matters) ---------------------------------

    def _open_fd(self) -> int:
        if self._fd.closed:
            raise StateError(f"link {self.description} is detached")
        return self._fd.raw

    def _close(self) -> None:
        self._fd.close()

    def _notify(self, event: str, new_prog_fd: int | None) -> None:
        """Tell every listener; one failing listener does not keep the others from hearing."""
        with self._lock:
            listeners = list(self._listeners)
        failure: BaseException | None = None
        for listener in listeners:
            try:
                listener(self, event, new_prog_fd)
            except Exception as e:
                failure = failure or e
        if failure is not None:
            raise failure

    def _update_error(self, fd: int, new_fd: int, e: SyscallError) -> AttachError:
        try:
            link_type = commands.link_info(fd).type
        except SyscallError:
            link_type = -1
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP) and link_type not in UPDATABLE:
            name = type_name(LinkType, link_type)
            return AttachError(
                f"cannot update link {self.description}: the kernel cannot swap the program of a {name} link "
                f"(BPF_LINK_UPDATE answers {errno.errorcode[e.errno]} for it); detach it and attach the new "
                "program instead"
            )
        return AttachError(
            f"cannot update link {self.description} to program fd {new_fd}: {e}; the new program must have "
            "the same type, attach type and attach target as the one it replaces"
        )


class IterLink(Link):
    """An iterator link: each :meth:`read` runs the iterator program over its objects once."""

    def read(self) -> bytes:
        """One full pass of the iterator: everything the program printed, as bytes."""
        with self._lock:
            it = commands.iter_create(self._open_fd())
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    chunk = os.read(it.raw, _READ_CHUNK)
                except InterruptedError:
                    continue
                except OSError as e:
                    err = e.errno or errno.EIO
                    raise SyscallError("read", err, "the iterator program failed", self.description) from None
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            it.close()


class IoctlPerfLink(Link):
    """A program on a perf event through PERF_EVENT_IOC_SET_BPF, for kernels without perf links.

    There is no kernel link object: the attachment is the perf event fd
    itself, so it can be neither pinned nor updated, and it ends when that
    fd is closed.
    """

    def __init__(self, event: Fd, *, kind: str, description: str, why: str) -> None:
        super().__init__(event, kind=kind, description=description)
        self._why = why

    def pin(self, path: str) -> None:
        raise AttachError(
            f"cannot pin {self.description}: it is attached with PERF_EVENT_IOC_SET_BPF ({self._why}), "
            "so there is no link object to pin"
        )

    def update(self, new_program: SupportsIndex | HasFd) -> None:
        raise AttachError(
            f"cannot update {self.description}: it is attached with PERF_EVENT_IOC_SET_BPF, which sets a "
            "program once; detach it and attach the new program"
        )

    def facts(self) -> LinkFacts:
        raise StateError(f"{self.description} has no kernel link object (perf event ioctl attachment)")

    def _close(self) -> None:
        try:
            perf.ioctl(self._fd.raw, perf.PERF_EVENT_IOC_DISABLE)
        except SyscallError:
            pass  # closing detaches the program regardless
        finally:
            self._fd.close()


class LinkGroup(Link):
    """Several links made by one attach (a perf event per CPU), detached, pinned and updated together.

    ``fd`` is the first member's; :attr:`links` holds them all. Pinning
    creates a directory with one pin per member (``cpu0``, ``cpu1``...),
    which :meth:`Link.from_pin` reopens as a group.
    """

    def __init__(self, links: Sequence[tuple[str, Link]], *, kind: str, description: str) -> None:
        if not links:
            raise ValueError("a link group needs at least one link")
        super().__init__(links[0][1]._fd, kind=kind, description=description)
        self._members = tuple(links)

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(link for _, link in self._members)

    @property
    def closed(self) -> bool:
        return all(link.closed for link in self.links)

    def pin(self, path: str) -> None:
        with self._lock:
            if self.closed:
                raise StateError(f"link {self.description} is detached")
            if self._pinned is not None:
                raise StateError(f"link {self.description} is already pinned at {self._pinned}; unpin() it first")
            fs.make_pin_dirs(os.path.join(path, self._members[0][0]))
            done: list[Link] = []
            try:
                for name, link in self._members:
                    link.pin(fs.pin_path(path, name))
                    done.append(link)
            except BaseException:
                for link in done:
                    link.unpin()
                _rmdir(path)
                raise
            self._pinned = path

    def unpin(self) -> None:
        with self._lock:
            path, self._pinned = self._pinned, None
        if path is None:
            return
        for link in self.links:
            link.unpin()
        _rmdir(path)

    def update(self, new_program: SupportsIndex | HasFd) -> None:
        new_fd = program_fd(new_program)
        for link in self.links:
            link.update(new_fd)
        self._notify("update", new_fd)

    def facts(self) -> LinkFacts:
        return self.links[0].facts()

    def _open_fd(self) -> int:
        if self.closed:
            raise StateError(f"link {self.description} is detached")
        return self._fd.raw

    def _close(self) -> None:
        for link in self.links:
            link.detach()

    @classmethod
    def from_pin_dir(cls, path: str) -> LinkGroup:
        members: list[tuple[str, Link]] = []
        try:
            for name in sorted(os.listdir(path), key=_natural):
                members.append((name, Link.from_pin(os.path.join(path, name))))
        except BaseException:
            for _, link in members:
                link.detach()
            raise
        if not members:
            raise PinError(f"{path} is an empty bpffs directory, not a pinned link group", path=path)
        first = members[0][1]
        group = cls(members, kind=first.kind, description=f"{len(members)} {first.kind} links pinned under {path}")
        group._pinned = path
        return group


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # somebody else removed the pin: the goal is reached
    except OSError as e:
        raise SyscallError("unlink", e.errno or errno.EIO, "cannot remove the pin", path) from None


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SyscallError("rmdir", e.errno or errno.EIO, "cannot remove the pin directory", path) from None
