"""libbpf's section-name conventions: what ``SEC("...")`` makes of a program.

clang leaves a program's type in nothing but its ELF section name. libbpf
defines how such a name maps to a program type, an expected attach type,
load flags and an attach target, and every BPF object in the wild is written
against that table; dynbpf reads names exactly the same way so that the same
object means the same thing under both loaders.

The table is data (``SECTION_RULES``), in libbpf's order, because the first
matching rule wins. Rule patterns follow libbpf: ``name+`` matches ``name``
itself or ``name/<target>``; a pattern ending in ``/`` matches any name it
prefixes; anything else must match exactly. A leading ``?`` only turns
autoload off.

Targets are parsed here, once. A malformed one (``tp/sched``,
``uprobe/func``) does not stop the object, as in libbpf: the program loads
and its kind says why it cannot be attached without an explicit target.
Parsing is stricter than libbpf's scanf formats, which silently drop
trailing junk; see docs/sections.md.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

from dynbpf._sys.constants import AttachType, ProgFlags, ProgType
from dynbpf.errors import ObjectFormatError


class UnknownSection(ObjectFormatError):  # noqa: N818 - reads as "section: unknown"
    """No convention matches the section name, so the program type is unknown."""


class Attacher(enum.Enum):
    """How a program of this kind is attached, as libbpf's auto-attach families.

    ``NONE`` means no auto-attach: the caller names the hook (a cgroup, an
    interface, a socket map...). ``STRUCT_OPS`` programs are attached through
    their struct_ops map rather than one by one.
    """

    NONE = "none"
    KPROBE = "kprobe"
    UPROBE = "uprobe"
    KSYSCALL = "ksyscall"
    USDT = "usdt"
    TRACEPOINT = "tracepoint"
    RAW_TP = "raw_tp"
    TRACING = "tracing"
    LSM = "lsm"
    ITER = "iter"
    KPROBE_MULTI = "kprobe_multi"
    KPROBE_SESSION = "kprobe_session"
    UPROBE_MULTI = "uprobe_multi"
    TRACING_MULTI = "tracing_multi"
    STRUCT_OPS = "struct_ops"


@dataclass(frozen=True, slots=True)
class KprobeTarget:
    """``kprobe/<function>[+<offset>]``, ``kretprobe/<function>``."""

    function: str
    offset: int
    retprobe: bool


@dataclass(frozen=True, slots=True)
class UprobeTarget:
    """``uprobe/<binary>:<function>[+<offset>]`` or ``uprobe/<binary>:<address>``.

    ``function`` is None when the section gives a bare file offset, which is
    then ``offset``. A binary without ``/`` is looked up on PATH (executables)
    or the library path (``*.so*``) at attach time, as libbpf does.
    """

    binary: str
    function: str | None
    offset: int
    retprobe: bool


@dataclass(frozen=True, slots=True)
class KsyscallTarget:
    """``ksyscall/<syscall>``: the attacher picks the architecture's syscall wrapper."""

    syscall: str
    retprobe: bool


@dataclass(frozen=True, slots=True)
class UsdtTarget:
    """``usdt/<binary>:<provider>:<name>``."""

    binary: str
    provider: str
    name: str


@dataclass(frozen=True, slots=True)
class TracepointTarget:
    """``tp/<category>/<name>``: the tracefs event ``events/<category>/<name>``."""

    category: str
    name: str


@dataclass(frozen=True, slots=True)
class RawTracepointTarget:
    """``raw_tp/<name>``."""

    name: str


@dataclass(frozen=True, slots=True)
class BtfTarget:
    """A target resolved against BTF at prepare: ``fentry/[<module>:]<name>``.

    ``name`` is as written: prepare adds the BTF prefix the kind implies
    (``bpf_lsm_`` for lsm, ``btf_trace_`` for tp_btf, ``bpf_iter_`` for iter).
    ``module`` None means vmlinux first, then every module; ``"vmlinux"``
    means vmlinux only; anything else, that module only. For freplace the
    name is a function of the target BPF program and never has a module.
    """

    name: str
    module: str | None = None


@dataclass(frozen=True, slots=True)
class MultiTarget:
    """``kprobe.multi/<pattern>`` or ``uprobe.multi/<binary>:<pattern>``.

    ``pattern`` is a glob (``*`` and ``?``) over kernel functions, or over
    the symbols of ``binary`` for uprobes.
    """

    pattern: str
    retprobe: bool = False
    session: bool = False
    binary: str | None = None


@dataclass(frozen=True, slots=True)
class TracingMultiTarget:
    """``fentry.multi/[<module>:]<pattern>``: one trampoline program on many functions."""

    pattern: str
    module: str | None = None


@dataclass(frozen=True, slots=True)
class StructOpsTarget:
    """``struct_ops/<member>``.

    Informational: libbpf binds a struct_ops program to its slot through the
    struct_ops map's relocations, not through this name.
    """

    member: str


AttachTarget = (
    KprobeTarget
    | UprobeTarget
    | KsyscallTarget
    | UsdtTarget
    | TracepointTarget
    | RawTracepointTarget
    | BtfTarget
    | MultiTarget
    | TracingMultiTarget
    | StructOpsTarget
)


class TargetSyntax(enum.Enum):
    """How the part after ``<kind>/`` of a ``+`` rule is read."""

    KPROBE = "kprobe"
    KRETPROBE = "kretprobe"
    UPROBE = "uprobe"
    URETPROBE = "uretprobe"
    KSYSCALL = "ksyscall"
    KRETSYSCALL = "kretsyscall"
    USDT = "usdt"
    TRACEPOINT = "tracepoint"
    RAW_TRACEPOINT = "raw_tracepoint"
    KERNEL_BTF = "kernel_btf"
    PROGRAM_BTF = "program_btf"
    KPROBE_MULTI = "kprobe_multi"
    KRETPROBE_MULTI = "kretprobe_multi"
    KPROBE_SESSION = "kprobe_session"
    UPROBE_MULTI = "uprobe_multi"
    URETPROBE_MULTI = "uretprobe_multi"
    UPROBE_SESSION = "uprobe_session"
    TRACING_MULTI = "tracing_multi"
    STRUCT_OPS = "struct_ops"


@dataclass(frozen=True, slots=True)
class SectionRule:
    """One row of the convention table: a name pattern and what it means."""

    pattern: str
    prog_type: ProgType
    expected_attach_type: AttachType | None = None
    attacher: Attacher = Attacher.NONE
    target: TargetSyntax | None = None
    attach_btf: bool = False
    sleepable: bool = False
    xdp_frags: bool = False

    def __post_init__(self) -> None:
        if self.target is not None and not self.pattern.endswith("+"):
            raise ValueError(f"section rule {self.pattern!r}: only 'name+' rules have a target")

    @property
    def base(self) -> str:
        """The pattern without its ``+``: what a bare section of this kind is called."""
        return self.pattern.removesuffix("+")

    def matches(self, name: str) -> bool:
        if self.pattern.endswith("+"):
            return name == self.base or name.startswith(self.base + "/")
        if self.pattern.endswith("/"):
            return name.startswith(self.pattern)
        return name == self.pattern


@dataclass(frozen=True, slots=True)
class ProgramKind:
    """What a section name says about its programs.

    ``expected_attach_type`` is None where libbpf passes 0 for "none"; test it
    with ``is None``, since ``AttachType.CGROUP_INET_INGRESS`` is also 0.
    ``target`` is None for kinds without one and for bare sections such as
    ``SEC("kprobe")``, whose target the caller supplies at attach time.

    ``error`` says why the section name cannot be used as it stands, yet
    does not stop the object from opening (libbpf's leniency): a target
    libbpf could not auto-attach (``SEC("uprobe/func")``: no binary), so the
    program loads and only an ``attach()`` without an explicit target
    fails; or, with ``prog_type`` UNSPEC, a section no convention knows, so
    that one program cannot load and the others are unaffected.
    """

    section: str
    prog_type: ProgType
    expected_attach_type: AttachType | None
    attach_btf: bool
    sleepable: bool
    xdp_frags: bool
    autoload: bool
    attacher: Attacher
    target: AttachTarget | None
    rule: str
    error: str | None = None

    @property
    def prog_flags(self) -> ProgFlags:
        """The ``prog_flags`` of BPF_PROG_LOAD this kind implies."""
        flags = ProgFlags(0)
        if self.sleepable:
            flags |= ProgFlags.SLEEPABLE
        if self.xdp_frags:
            flags |= ProgFlags.XDP_HAS_FRAGS
        return flags


P = ProgType
A = AttachType
At = Attacher
T = TargetSyntax

SECTION_RULES: tuple[SectionRule, ...] = (
    SectionRule("socket", P.SOCKET_FILTER),
    SectionRule("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE),
    SectionRule("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT),
    SectionRule("kprobe+", P.KPROBE, None, At.KPROBE, T.KPROBE),
    SectionRule("uprobe+", P.KPROBE, None, At.UPROBE, T.UPROBE),
    SectionRule("uprobe.s+", P.KPROBE, None, At.UPROBE, T.UPROBE, sleepable=True),
    SectionRule("kretprobe+", P.KPROBE, None, At.KPROBE, T.KRETPROBE),
    SectionRule("uretprobe+", P.KPROBE, None, At.UPROBE, T.URETPROBE),
    SectionRule("uretprobe.s+", P.KPROBE, None, At.UPROBE, T.URETPROBE, sleepable=True),
    SectionRule("kprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI, At.KPROBE_MULTI, T.KPROBE_MULTI),
    SectionRule("kretprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI, At.KPROBE_MULTI, T.KRETPROBE_MULTI),
    SectionRule("kprobe.session+", P.KPROBE, A.TRACE_KPROBE_SESSION, At.KPROBE_SESSION, T.KPROBE_SESSION),
    SectionRule("uprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI, At.UPROBE_MULTI, T.UPROBE_MULTI),
    SectionRule("uretprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI, At.UPROBE_MULTI, T.URETPROBE_MULTI),
    SectionRule("uprobe.session+", P.KPROBE, A.TRACE_UPROBE_SESSION, At.UPROBE_MULTI, T.UPROBE_SESSION),
    SectionRule("uprobe.multi.s+", P.KPROBE, A.TRACE_UPROBE_MULTI, At.UPROBE_MULTI, T.UPROBE_MULTI, sleepable=True),
    SectionRule(
        "uretprobe.multi.s+", P.KPROBE, A.TRACE_UPROBE_MULTI, At.UPROBE_MULTI, T.URETPROBE_MULTI, sleepable=True
    ),
    SectionRule(
        "uprobe.session.s+", P.KPROBE, A.TRACE_UPROBE_SESSION, At.UPROBE_MULTI, T.UPROBE_SESSION, sleepable=True
    ),
    SectionRule("ksyscall+", P.KPROBE, None, At.KSYSCALL, T.KSYSCALL),
    SectionRule("kretsyscall+", P.KPROBE, None, At.KSYSCALL, T.KRETSYSCALL),
    # The expected attach type of usdt becomes TRACE_UPROBE_MULTI at prepare on kernels with uprobe_multi links.
    SectionRule("usdt+", P.KPROBE, None, At.USDT, T.USDT),
    SectionRule("usdt.s+", P.KPROBE, None, At.USDT, T.USDT, sleepable=True),
    SectionRule("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    SectionRule("tc/egress", P.SCHED_CLS, A.TCX_EGRESS),
    SectionRule("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    SectionRule("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS),
    SectionRule("tc", P.SCHED_CLS),
    SectionRule("classifier", P.SCHED_CLS),
    SectionRule("action", P.SCHED_ACT),
    SectionRule("netkit/primary", P.SCHED_CLS, A.NETKIT_PRIMARY),
    SectionRule("netkit/peer", P.SCHED_CLS, A.NETKIT_PEER),
    SectionRule("tracepoint+", P.TRACEPOINT, None, At.TRACEPOINT, T.TRACEPOINT),
    SectionRule("tp+", P.TRACEPOINT, None, At.TRACEPOINT, T.TRACEPOINT),
    SectionRule("tracepoint.s+", P.TRACEPOINT, None, At.TRACEPOINT, T.TRACEPOINT, sleepable=True),
    SectionRule("tp.s+", P.TRACEPOINT, None, At.TRACEPOINT, T.TRACEPOINT, sleepable=True),
    SectionRule("raw_tracepoint+", P.RAW_TRACEPOINT, None, At.RAW_TP, T.RAW_TRACEPOINT),
    SectionRule("raw_tp+", P.RAW_TRACEPOINT, None, At.RAW_TP, T.RAW_TRACEPOINT),
    SectionRule("raw_tracepoint.s+", P.RAW_TRACEPOINT, None, At.RAW_TP, T.RAW_TRACEPOINT, sleepable=True),
    SectionRule("raw_tp.s+", P.RAW_TRACEPOINT, None, At.RAW_TP, T.RAW_TRACEPOINT, sleepable=True),
    SectionRule("raw_tracepoint.w+", P.RAW_TRACEPOINT_WRITABLE, None, At.RAW_TP, T.RAW_TRACEPOINT),
    SectionRule("raw_tp.w+", P.RAW_TRACEPOINT_WRITABLE, None, At.RAW_TP, T.RAW_TRACEPOINT),
    SectionRule("tp_btf+", P.TRACING, A.TRACE_RAW_TP, At.TRACING, T.KERNEL_BTF, attach_btf=True),
    SectionRule("tp_btf.s+", P.TRACING, A.TRACE_RAW_TP, At.TRACING, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("fentry+", P.TRACING, A.TRACE_FENTRY, At.TRACING, T.KERNEL_BTF, attach_btf=True),
    SectionRule("fmod_ret+", P.TRACING, A.MODIFY_RETURN, At.TRACING, T.KERNEL_BTF, attach_btf=True),
    SectionRule("fexit+", P.TRACING, A.TRACE_FEXIT, At.TRACING, T.KERNEL_BTF, attach_btf=True),
    SectionRule("fentry.s+", P.TRACING, A.TRACE_FENTRY, At.TRACING, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("fmod_ret.s+", P.TRACING, A.MODIFY_RETURN, At.TRACING, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("fexit.s+", P.TRACING, A.TRACE_FEXIT, At.TRACING, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("fsession+", P.TRACING, A.TRACE_FSESSION, At.TRACING, T.KERNEL_BTF, attach_btf=True),
    SectionRule("fsession.s+", P.TRACING, A.TRACE_FSESSION, At.TRACING, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("fsession.multi+", P.TRACING, A.TRACE_FSESSION_MULTI, At.TRACING_MULTI, T.TRACING_MULTI),
    SectionRule(
        "fsession.multi.s+", P.TRACING, A.TRACE_FSESSION_MULTI, At.TRACING_MULTI, T.TRACING_MULTI, sleepable=True
    ),
    SectionRule("fentry.multi+", P.TRACING, A.TRACE_FENTRY_MULTI, At.TRACING_MULTI, T.TRACING_MULTI),
    SectionRule("fexit.multi+", P.TRACING, A.TRACE_FEXIT_MULTI, At.TRACING_MULTI, T.TRACING_MULTI),
    SectionRule("fentry.multi.s+", P.TRACING, A.TRACE_FENTRY_MULTI, At.TRACING_MULTI, T.TRACING_MULTI, sleepable=True),
    SectionRule("fexit.multi.s+", P.TRACING, A.TRACE_FEXIT_MULTI, At.TRACING_MULTI, T.TRACING_MULTI, sleepable=True),
    SectionRule("freplace+", P.EXT, None, At.TRACING, T.PROGRAM_BTF, attach_btf=True),
    SectionRule("lsm+", P.LSM, A.LSM_MAC, At.LSM, T.KERNEL_BTF, attach_btf=True),
    SectionRule("lsm.s+", P.LSM, A.LSM_MAC, At.LSM, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("lsm_cgroup+", P.LSM, A.LSM_CGROUP, At.NONE, T.KERNEL_BTF, attach_btf=True),
    SectionRule("iter+", P.TRACING, A.TRACE_ITER, At.ITER, T.KERNEL_BTF, attach_btf=True),
    SectionRule("iter.s+", P.TRACING, A.TRACE_ITER, At.ITER, T.KERNEL_BTF, attach_btf=True, sleepable=True),
    SectionRule("syscall", P.SYSCALL, sleepable=True),
    SectionRule("xdp.frags/devmap", P.XDP, A.XDP_DEVMAP, xdp_frags=True),
    SectionRule("xdp/devmap", P.XDP, A.XDP_DEVMAP),
    SectionRule("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, xdp_frags=True),
    SectionRule("xdp/cpumap", P.XDP, A.XDP_CPUMAP),
    SectionRule("xdp.frags", P.XDP, A.XDP, xdp_frags=True),
    SectionRule("xdp", P.XDP, A.XDP),
    SectionRule("perf_event", P.PERF_EVENT),
    SectionRule("lwt_in", P.LWT_IN),
    SectionRule("lwt_out", P.LWT_OUT),
    SectionRule("lwt_xmit", P.LWT_XMIT),
    SectionRule("lwt_seg6local", P.LWT_SEG6LOCAL),
    SectionRule("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS),
    SectionRule("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER),
    SectionRule("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT),
    SectionRule("sk_skb/verdict", P.SK_SKB, A.SK_SKB_VERDICT),
    SectionRule("sk_skb", P.SK_SKB),
    SectionRule("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT),
    SectionRule("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2),
    SectionRule("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR),
    SectionRule("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS),
    SectionRule("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS),
    SectionRule("cgroup/skb", P.CGROUP_SKB),
    SectionRule("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    SectionRule("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE),
    SectionRule("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    SectionRule("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND),
    SectionRule("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND),
    SectionRule("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND),
    SectionRule("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND),
    SectionRule("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT),
    SectionRule("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT),
    SectionRule("cgroup/connect_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT),
    SectionRule("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG),
    SectionRule("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG),
    SectionRule("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG),
    SectionRule("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG),
    SectionRule("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG),
    SectionRule("cgroup/recvmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_RECVMSG),
    SectionRule("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME),
    SectionRule("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME),
    SectionRule("cgroup/getpeername_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETPEERNAME),
    SectionRule("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME),
    SectionRule("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME),
    SectionRule("cgroup/getsockname_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETSOCKNAME),
    SectionRule("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL),
    SectionRule("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT),
    SectionRule("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT),
    SectionRule("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE),
    SectionRule("struct_ops+", P.STRUCT_OPS, None, At.STRUCT_OPS, T.STRUCT_OPS),
    SectionRule("struct_ops.s+", P.STRUCT_OPS, None, At.STRUCT_OPS, T.STRUCT_OPS, sleepable=True),
    SectionRule("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP),
    SectionRule("netfilter", P.NETFILTER, A.NETFILTER),
)

del P, A, At, T


@lru_cache(maxsize=1024)  # a linked agent has 150 programs in one section: match its name once
def program_kind(section: str) -> ProgramKind:
    """Read an ELF section name the way libbpf does.

    Raises ``UnknownSection`` when no convention matches. A known kind
    whose target is malformed is returned without a target and with
    ``error`` saying what is wrong, as libbpf loads such programs and only
    fails to auto-attach them.
    """
    name = section.removeprefix("?")
    for rule in SECTION_RULES:
        if rule.matches(name):
            break
    else:
        raise UnknownSection(f"no program type is known for this section name{_suggest(name)}", section=section)
    target, error = None, None
    if rule.target is not None and name != rule.base:
        rest = name[len(rule.base) + 1 :]
        parse, forms = _SYNTAX[rule.target]
        try:
            target = parse(rest)
        except _TargetError as e:
            expected = " or ".join(f"{rule.base}/{form}" for form in forms)
            error = f"section {section!r}: malformed {rule.base} target {_clip(rest)!r}: {e}; expected {expected}"
    return ProgramKind(
        section=name,
        prog_type=rule.prog_type,
        expected_attach_type=rule.expected_attach_type,
        attach_btf=rule.attach_btf,
        sleepable=rule.sleepable,
        xdp_frags=rule.xdp_frags,
        autoload=not section.startswith("?"),
        attacher=rule.attacher,
        target=target,
        rule=rule.pattern,
        error=error,
    )


def lenient_kind(section: str) -> ProgramKind:
    """``program_kind``, except that a section no convention knows gives a kind that cannot load.

    libbpf opens such an object and fails only that program's load
    ("missing BPF prog type"); the kind carries the reason for that moment.
    """
    try:
        return program_kind(section)
    except UnknownSection as e:
        return ProgramKind(
            section=section.removeprefix("?"),
            prog_type=ProgType.UNSPEC,
            expected_attach_type=None,
            attach_btf=False,
            sleepable=False,
            xdp_frags=False,
            autoload=not section.startswith("?"),
            attacher=Attacher.NONE,
            target=None,
            rule="",
            error=str(e),
        )


class _TargetError(ValueError):
    """Why a target does not parse; program_kind adds the section and the expected form."""


_KERNEL_SYMBOL = re.compile(r"[A-Za-z0-9_.]+")
_KERNEL_GLOB = re.compile(r"[A-Za-z0-9_.*?]+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]+")
_C_INTEGER = re.compile(r"0[xX][0-9a-fA-F]+|[1-9][0-9]*|0[0-7]*")
_U64_MAX = (1 << 64) - 1


def _integer(text: str, what: str) -> int:
    """A non-negative C integer literal, as scanf's ``%li`` reads it: 0x hex, 0 octal, else decimal."""
    if len(text) > 24 or not _C_INTEGER.fullmatch(text):
        raise _TargetError(f"{what} {_clip(text)!r} is not a number (decimal, 0x hex or 0 octal)")
    if text[:2] in ("0x", "0X"):
        value = int(text[2:], 16)
    elif text.startswith("0"):
        value = int(text, 8)
    else:
        value = int(text)
    if value > _U64_MAX:
        raise _TargetError(f"{what} {text} does not fit in 64 bits")
    return value


def _nonempty(text: str, what: str) -> str:
    if not text:
        raise _TargetError(f"the {what} is empty")
    return text


def _split(text: str, sep: str, first: str, second: str) -> tuple[str, str]:
    head, found, tail = text.partition(sep)
    if not found:
        raise _TargetError(f"no {sep!r} between {first} and {second}")
    return _nonempty(head, first), _nonempty(tail, second)


def _kprobe(rest: str, *, retprobe: bool) -> KprobeTarget:
    function, plus, offset_text = rest.partition("+")
    if not _KERNEL_SYMBOL.fullmatch(function):
        raise _TargetError("a kernel function name has only letters, digits, '_' and '.'")
    offset = _integer(offset_text, "offset") if plus else 0
    if retprobe and offset:
        raise _TargetError("a kretprobe fires on return and takes no offset")
    return KprobeTarget(function, offset, retprobe)


def _uprobe(rest: str, *, retprobe: bool) -> UprobeTarget | None:
    if not rest:
        return None  # SEC("uprobe/"): libbpf accepts it as a bare uprobe
    binary, function = _split(rest, ":", "binary", "function")
    offset = 0
    head, plus, tail = function.rpartition("+")
    if plus:
        function, offset = _nonempty(head, "function"), _integer(tail, "offset")
    if _C_INTEGER.fullmatch(function):
        if plus:
            raise _TargetError("give either an address or function+offset, not both")
        return UprobeTarget(binary, None, _integer(function, "address"), retprobe)
    if retprobe and offset:
        raise _TargetError("a uretprobe fires on return and takes no offset")
    return UprobeTarget(binary, function, offset, retprobe)


def _ksyscall(rest: str, *, retprobe: bool) -> KsyscallTarget:
    if not _IDENTIFIER.fullmatch(rest):
        raise _TargetError("a syscall name has only letters, digits and '_'")
    return KsyscallTarget(rest, retprobe)


def _usdt(rest: str) -> UsdtTarget:
    parts = rest.split(":")
    if len(parts) != 3:
        raise _TargetError(f"{len(parts)} ':'-separated parts instead of 3")
    binary, provider, name = (_nonempty(p, w) for p, w in zip(parts, ("binary", "provider", "name"), strict=True))
    return UsdtTarget(binary, provider, name)


def _tracepoint(rest: str) -> TracepointTarget:
    category, name = _split(rest, "/", "category", "name")
    if "/" in name:
        raise _TargetError("a tracepoint is exactly <category>/<name>")
    return TracepointTarget(category, name)


def _raw_tracepoint(rest: str) -> RawTracepointTarget:
    return RawTracepointTarget(_nonempty(rest, "tracepoint name"))


def _kernel_btf(rest: str) -> BtfTarget:
    if ":" in rest:
        module, name = _split(rest, ":", "module", "name")
        return BtfTarget(name, module)
    return BtfTarget(_nonempty(rest, "name"))


def _program_btf(rest: str) -> BtfTarget:
    return BtfTarget(_nonempty(rest, "function name"))


def _kprobe_multi(rest: str, *, retprobe: bool, session: bool) -> MultiTarget:
    if not _KERNEL_GLOB.fullmatch(rest):
        raise _TargetError("a kernel function pattern has only letters, digits, '_', '.', '*' and '?'")
    return MultiTarget(rest, retprobe=retprobe, session=session)


def _uprobe_multi(rest: str, *, retprobe: bool, session: bool) -> MultiTarget | None:
    if not rest:
        return None
    binary, pattern = _split(rest, ":", "binary", "pattern")
    return MultiTarget(pattern, retprobe=retprobe, session=session, binary=binary)


def _tracing_multi(rest: str) -> TracingMultiTarget:
    if ":" in rest:
        module, pattern = _split(rest, ":", "module", "pattern")
        return TracingMultiTarget(pattern, module)
    return TracingMultiTarget(_nonempty(rest, "pattern"))


def _struct_ops(rest: str) -> StructOpsTarget:
    return StructOpsTarget(_nonempty(rest, "member name"))


_SYNTAX: dict[TargetSyntax, tuple[Callable[[str], AttachTarget | None], tuple[str, ...]]] = {
    TargetSyntax.KPROBE: (partial(_kprobe, retprobe=False), ("<function>[+<offset>]",)),
    TargetSyntax.KRETPROBE: (partial(_kprobe, retprobe=True), ("<function>",)),
    TargetSyntax.UPROBE: (partial(_uprobe, retprobe=False), ("<binary>:<function>[+<offset>]", "<binary>:<address>")),
    TargetSyntax.URETPROBE: (partial(_uprobe, retprobe=True), ("<binary>:<function>", "<binary>:<address>")),
    TargetSyntax.KSYSCALL: (partial(_ksyscall, retprobe=False), ("<syscall>",)),
    TargetSyntax.KRETSYSCALL: (partial(_ksyscall, retprobe=True), ("<syscall>",)),
    TargetSyntax.USDT: (_usdt, ("<binary>:<provider>:<name>",)),
    TargetSyntax.TRACEPOINT: (_tracepoint, ("<category>/<name>",)),
    TargetSyntax.RAW_TRACEPOINT: (_raw_tracepoint, ("<name>",)),
    TargetSyntax.KERNEL_BTF: (_kernel_btf, ("[<module>:]<name>",)),
    TargetSyntax.PROGRAM_BTF: (_program_btf, ("<function>",)),
    TargetSyntax.KPROBE_MULTI: (partial(_kprobe_multi, retprobe=False, session=False), ("<pattern>",)),
    TargetSyntax.KRETPROBE_MULTI: (partial(_kprobe_multi, retprobe=True, session=False), ("<pattern>",)),
    TargetSyntax.KPROBE_SESSION: (partial(_kprobe_multi, retprobe=False, session=True), ("<pattern>",)),
    TargetSyntax.UPROBE_MULTI: (partial(_uprobe_multi, retprobe=False, session=False), ("<binary>:<pattern>",)),
    TargetSyntax.URETPROBE_MULTI: (partial(_uprobe_multi, retprobe=True, session=False), ("<binary>:<pattern>",)),
    TargetSyntax.UPROBE_SESSION: (partial(_uprobe_multi, retprobe=False, session=True), ("<binary>:<pattern>",)),
    TargetSyntax.TRACING_MULTI: (_tracing_multi, ("[<module>:]<pattern>",)),
    TargetSyntax.STRUCT_OPS: (_struct_ops, ("<member>",)),
}

_KNOWN_NAMES = tuple(dict.fromkeys(r.base for r in SECTION_RULES))
_TAKE_TARGETS = frozenset(r.base for r in SECTION_RULES if r.target is not None)


def _suggest(name: str) -> str:
    """Up to four rule names close to the whole name or to its kind (the part before '/')."""
    import difflib  # only an unknown section pays for it

    probes = (name[:64], name.partition("/")[0][:64])
    close = dict.fromkeys(m for p in probes for m in difflib.get_close_matches(p, _KNOWN_NAMES, n=4, cutoff=0.7))
    if not close:
        return "; docs/sections.md lists the supported names"
    hints = ", ".join(f"'{c}[/...]'" if c in _TAKE_TARGETS else f"'{c}'" for c in list(close)[:4])
    return f"; did you mean {hints}?"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
