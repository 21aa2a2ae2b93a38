"""What kprobe.multi and uprobe.multi requests share: the section's default target, the
session/return choice, and one way of naming the functions.

Both kinds take their functions from a glob in the section or from exactly one of
``pattern=`` or a list keyword, and a session program already runs on entry and
return. Reading that once keeps the two kinds' errors identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynbpf._attach.request import Request, take, text
from dynbpf._elf.sections import MultiTarget, ProgramKind
from dynbpf._sys.constants import AttachType


@dataclass(frozen=True)
class MultiRequest:
    #: "kprobe" or "uprobe"
    family: str
    options: dict[str, Any]
    section: MultiTarget | None
    session: bool
    retprobe: bool
    #: the list keyword given (``symbols``, ``addrs``, ``offsets``), or None
    chosen: str | None
    #: the glob to match, from ``pattern=`` or (when no list keyword is given) the section
    pattern: str | None

    @property
    def label(self) -> str:
        """The kind as errors and links name it: kprobe.multi, kretprobe.multi, kprobe.session, ..."""
        if self.retprobe:
            return f"{self.family.replace('probe', 'retprobe')}.multi"
        return f"{self.family}.session" if self.session else f"{self.family}.multi"


def read_multi(
    request: Request,
    kind: ProgramKind,
    target: dict[str, Any],
    accepted: tuple[str, ...],
    *,
    kernel: bool,
) -> MultiRequest:
    """Read the options a kprobe.multi (``kernel``) or uprobe.multi request shares."""
    family = "kprobe" if kernel else "uprobe"
    listed = ("symbols", "addrs") if kernel else ("symbols", "offsets")
    session_type = AttachType.TRACE_KPROBE_SESSION if kernel else AttachType.TRACE_UPROBE_SESSION
    options = take(request, target, accepted)
    section = kind.target if isinstance(kind.target, MultiTarget) else None
    session = kind.expected_attach_type == session_type
    default_retprobe = section.retprobe if section else kind.rule.startswith(family.replace("probe", "retprobe"))
    retprobe = bool(options.get("retprobe", default_retprobe))
    if retprobe and session:
        raise request.error(f"a {family}.session program runs on entry and return already; retprobe= does not apply")
    given = [k for k in ("pattern", *listed) if k in options]
    if len(given) > 1:
        raise request.error(f"give one of pattern=, {listed[0]}= or {listed[1]}=, not {' and '.join(given)}")
    pattern = text(request, options, "pattern") or (section.pattern if section and not given else None)
    chosen = next((k for k in listed if k in options), None)
    return MultiRequest(family, options, section, session, retprobe, chosen, pattern)
