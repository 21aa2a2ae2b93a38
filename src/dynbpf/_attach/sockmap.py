"""Programs attached to a socket map: sk_msg and sk_skb (stream_parser, stream_verdict, verdict).

Target keyword: ``map=``, the sockmap or sockhash (a dynbpf ``Map``, or an
fd of one). The program then runs for every socket in that map: sk_msg on
each ``sendmsg``, sk_skb on what each socket receives.

Kernels with sockmap links (6.10, the ``sockmap_link`` probe) get a BPF
link: pinnable, updatable, ended by its fd. Older kernels only have
BPF_PROG_ATTACH, where the map itself holds the program:
:class:`SockmapAttachment` stands for that attachment (detach = BPF_PROG_DETACH).

Both ways would silently replace a program that BPF_PROG_ATTACH put on the
hook (the kernel answers EBUSY only when a *link* holds it), so both first
ask the kernel (BPF_PROG_QUERY) and refuse, naming the program found. A
kernel that cannot answer (before 6.0) is refused too, unless the caller
passes ``replace=True``. The kernel has no atomic form (a sockmap refuses
BPF_F_REPLACE and ``replace_bpf_fd``), so a program attached by someone
else between the query and the attach is still replaced.
"""

from __future__ import annotations

import errno
import operator
import os
from contextlib import ExitStack, closing
from typing import Any, SupportsIndex

from dynbpf._attach.link import HasFd, Link, program_fd
from dynbpf._attach.linkinfo import SOCKMAP_HOOKS, LinkFacts, sockmap_description
from dynbpf._attach.request import Request, take
from dynbpf._elf.sections import ProgramKind
from dynbpf._probes import net_attach
from dynbpf._sys import commands
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import MapType
from dynbpf._sys.fd import Fd
from dynbpf.errors import AttachError, StateError, SyscallError

ACCEPTED = ("map", "replace")
SOCK_MAPS = (MapType.SOCKMAP, MapType.SOCKHASH)


def attach_sockmap(request: Request, kind: ProgramKind, prog_fd: int, target: dict[str, Any]) -> Link:
    eat = kind.expected_attach_type
    if eat not in SOCKMAP_HOOKS:
        raise request.at(kind.section).error(
            "the section names no hook: use sk_skb/stream_parser, sk_skb/stream_verdict or sk_skb/verdict"
        )
    assert eat is not None
    options = take(request, target, ACCEPTED)
    given = options.get("map")
    if given is None:
        raise request.error("no map given: pass map= (the sockmap or sockhash, a Map or an fd) to attach()")
    try:
        map_fd = program_fd(given)  # anything with an fd, or an fd number
    except (TypeError, StateError) as e:
        raise request.error(f"map={given!r} is neither a map nor a file descriptor ({e})") from None
    try:
        info = commands.map_info(map_fd)
    except SyscallError as e:
        raise request.error(f"map={given!r} is not a BPF map ({e})") from e
    label, description = sockmap_description(eat, int(info.id))
    request = Request(request.program, label).at(description.removeprefix(f"{label} "))
    if info.type not in SOCK_MAPS:
        raise request.error(f"map id {info.id} is a {MapType(info.type).name.lower()} map, not a sockmap or sockhash")
    replace = options.get("replace", False)
    if not isinstance(replace, bool):
        raise request.error(f"replace={replace!r} is not True or False")
    if net_attach.sockmap_link():
        if not replace:
            refuse_occupied(request, map_fd, eat)
        attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=map_fd, attach_type=eat)
        reasons = {errno.EBUSY: "a link already runs a program on this hook of the map; detach it first"}
        fd = request.call(lambda: commands.link_create(attr, request.what), reasons=reasons)
        return Link(fd, kind=label, description=request.what)
    request.require(net_attach.sockmap_attach())
    return SockmapAttachment.make(request, map_fd, prog_fd, eat, replace=replace)


def refuse_occupied(request: Request, map_fd: int, attach_type: int) -> None:
    """Refuse to attach where a program already runs: the kernel would replace one that BPF_PROG_ATTACH
    put there without a word, whether the new one comes by BPF_PROG_ATTACH or by a sockmap link.

    A kernel that cannot say (BPF_PROG_QUERY on a socket map needs 6.0) is refused as well: attaching
    blind could drop someone else's program; ``replace=True`` is the caller's explicit consent. This is
    check-then-act (the kernel has no atomic compare-and-attach for socket maps: it refuses BPF_F_REPLACE),
    so a program attached between the query and the attach is still replaced.
    """
    try:
        present = commands.prog_query(map_fd, attach_type)
    except SyscallError as e:
        raise request.error(
            f"cannot tell whether the map already runs a program for this hook (BPF_PROG_QUERY: {e}; socket "
            "maps answer it from kernel 6.0), and attaching would replace one silently; pass replace=True "
            "to attach anyway"
        ) from e
    if present:
        raise request.error(
            f"the map already runs program id {present[0]} for this hook (attaching would replace it "
            "silently); detach it first, or pass replace=True"
        )


class SockmapAttachment(Link):
    """A program on a socket map through BPF_PROG_ATTACH (kernels before sockmap links).

    The map holds the program, so this object keeps its own copies of the
    map's and the program's fds and detaches with BPF_PROG_DETACH. It cannot
    be pinned (there is no link object); :meth:`update` swaps the program
    with another BPF_PROG_ATTACH, which the kernel does atomically. If the
    map is freed first, the attachment ends with it.
    """

    def __init__(self, prog: Fd, map_fd: Fd, attach_type: int, *, kind: str, description: str) -> None:
        super().__init__(prog, kind=kind, description=description)
        self._map = map_fd
        self._attach_type = attach_type

    @classmethod
    def make(
        cls, request: Request, map_fd: int, prog_fd: int, attach_type: int, *, replace: bool = False
    ) -> SockmapAttachment:
        """Attach with BPF_PROG_ATTACH, refusing (see :func:`refuse_occupied`) unless ``replace``."""
        if not replace:
            refuse_occupied(request, map_fd, attach_type)
        with ExitStack() as undo:  # closes the copies unless the attach succeeded
            mine = undo.enter_context(closing(dup(request, map_fd, "map")))
            prog = undo.enter_context(closing(dup(request, prog_fd, "prog")))
            request.call(lambda: commands.prog_attach(mine.raw, prog.raw, attach_type, detail=request.what))
            undo.pop_all()
        return cls(prog, mine, attach_type, kind=request.kind, description=request.what)

    def pin(self, path: str) -> None:
        raise AttachError(
            f"cannot pin {self.description}: it is attached with BPF_PROG_ATTACH (this kernel has no sockmap "
            "links), so there is no link object to pin; the map holds the program while the map lives"
        )

    def facts(self) -> LinkFacts:
        raise StateError(f"{self.description} has no kernel link object (BPF_PROG_ATTACH on the map)")

    @property
    def program_id(self) -> int:
        """Id of the program the map runs for this hook: this object holds its fd, no link does."""
        with self._lock:
            prog_id: int = commands.prog_info(self._open_fd()).id
            return prog_id

    def update(self, new_program: SupportsIndex | HasFd) -> None:
        new_fd = program_fd(new_program)
        with self._lock:
            self._open_fd()
            try:  # the copy first: once the map runs the new program, detach needs its fd
                copy = Fd(os.dup(operator.index(new_fd)), "prog")
            except OSError as e:
                raise AttachError(f"cannot update {self.description} to program fd {new_fd}: {e}") from e
            try:
                commands.prog_attach(self._map.raw, copy.raw, self._attach_type, detail=self.description)
            except SyscallError as e:
                copy.close()
                raise AttachError(f"cannot update {self.description} to program fd {new_fd}: {e}") from e
            old, self._fd = self._fd, copy
            old.close()  # BPF_PROG_DETACH must name the program the map runs now
        self._notify("update", new_fd)

    def _close(self) -> None:
        try:
            commands.prog_detach(self._map.raw, self._fd.raw, self._attach_type, detail=self.description)
        except SyscallError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the map no longer runs it; the goal is reached
                raise
        finally:
            self._fd.close()
            self._map.close()


def dup(request: Request, fd: int, what: str) -> Fd:
    """A copy of ``fd`` this attachment owns; running out of descriptors is an error naming the attach."""
    try:
        return Fd(os.dup(fd), what)
    except OSError as e:
        raise SyscallError("dup", e.errno or errno.EIO, f"copying the {what} fd {fd}", detail=request.what) from e
