"""Which programs their section alone attaches (libbpf's auto-attach), and what one call of that made.

libbpf's skeleton attaches every program whose section names its hook
(``tp/syscalls/sys_enter_openat``, ``uprobe/libc.so.6:malloc``,
``fentry/do_unlinkat``) and passes over the rest, which only the caller
can attach: a bare section (``SEC("uprobe")``), a section whose target
does not parse, a kind whose hook is an object of the caller's (an
interface, a cgroup, a perf event, a socket map, a network namespace), an
iterator over one map, a struct_ops program (its map registers it).
``Collection.attach()`` follows the same rule; the BTF-id kinds (tp_btf,
fentry, freplace, lsm...) count as named, since loading fixed their hook.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dynbpf._attach import kind_label
from dynbpf._attach.iter import MAP_ITERATORS
from dynbpf._attach.link import Link
from dynbpf._elf.sections import Attacher, BtfTarget, ProgramKind

#: kinds attached to an object the caller names, and the keywords that name it
_CALLERS_HOOK = {
    "xdp": "interface=",
    "tcx": "interface=",
    "netkit": "interface=",
    "cgroup": "cgroup=",
    "perf_event": "a perf event (perf_event_fd=, or type= and config=)",
    "netfilter": "pf= and hook=",
    "sk_lookup": "netns=",
    "flow_dissector": "netns=",
    "sk_msg": "map=",
    "sk_skb": "map=",
}
#: attachers whose hook is a target written in the section (a bare section names none)
_SECTION_TARGETS = frozenset(
    {
        Attacher.KPROBE,
        Attacher.UPROBE,
        Attacher.KSYSCALL,
        Attacher.USDT,
        Attacher.TRACEPOINT,
        Attacher.RAW_TP,
        Attacher.KPROBE_MULTI,
        Attacher.KPROBE_SESSION,
        Attacher.UPROBE_MULTI,
    }
)


def needs_target(kind: ProgramKind) -> str | None:
    """Why a program of ``kind`` cannot be attached from its section name alone; None when it can."""
    attacher = kind.attacher
    if kind.error is not None:
        return kind.error
    if attacher is Attacher.STRUCT_OPS:
        return "a struct_ops program is registered with its struct_ops map: coll.struct_ops[name].attach()"
    if attacher is Attacher.TRACING_MULTI:
        return "fentry.multi links are not implemented by dynbpf yet"
    if attacher is Attacher.NONE:
        label = kind_label(kind)
        needed = _CALLERS_HOOK.get(label, "its target (docs/attach.md)")
        return f"a {label} program attaches where the caller says: pass {needed} to attach()"
    if attacher in _SECTION_TARGETS and kind.target is None:
        return f"section {kind.section!r} names no target: pass it to attach() (docs/attach.md)"
    if attacher is Attacher.ITER and isinstance(kind.target, BtfTarget) and kind.target.name in MAP_ITERATORS:
        return f"a {kind.target.name} iterator walks one map: pass map_fd= to attach()"
    return None


class Attached(Mapping[str, Link]):
    """The links one ``Collection.attach()`` made, by program, and the programs it passed over.

    ``skipped`` maps each loaded program it did not attach to the reason:
    the target only the caller can give, or that it is attached already.
    """

    def __init__(self, links: Mapping[str, Link], skipped: Mapping[str, str]) -> None:
        self._links = dict(links)
        self.skipped: Mapping[str, str] = dict(skipped)

    def __getitem__(self, name: str) -> Link:
        return self._links[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._links)

    def __len__(self) -> int:
        return len(self._links)

    def detach(self) -> None:
        """Detach every link of this call (links made otherwise stay)."""
        for link in self._links.values():
            link.detach()

    def __repr__(self) -> str:
        skipped = f"; skipped {', '.join(self.skipped)}" if self.skipped else ""
        return f"<Attached {', '.join(self._links) or 'nothing'}{skipped}>"


__all__ = ["Attached", "needs_target"]
