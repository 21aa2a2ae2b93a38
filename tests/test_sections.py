"""Section names read the way libbpf reads them.

The expected table below is transcribed from libbpf's ``section_defs[]`` (via
the project's reference notes), independently of dynbpf's own table, in
libbpf's order. libbpf 1.1.2 itself, loaded with ctypes, is the oracle for
every row it knows.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynbpf._elf.sections import (
    SECTION_RULES,
    Attacher,
    BtfTarget,
    KprobeTarget,
    KsyscallTarget,
    MultiTarget,
    ProgramKind,
    RawTracepointTarget,
    SectionRule,
    StructOpsTarget,
    TargetSyntax,
    TracepointTarget,
    TracingMultiTarget,
    UnknownSection,
    UprobeTarget,
    UsdtTarget,
    lenient_kind,
    program_kind,
)
from dynbpf._sys.constants import AttachType, ProgFlags, ProgType
from dynbpf.errors import ObjectFormatError
from tests.libbpf_oracle import LIBBPF_PATH, libbpf

# pattern, prog type, expected attach type, flags, auto-attach family
EXPECTED = """
    socket                 SOCKET_FILTER            -                               -                     NONE
    sk_reuseport/migrate   SK_REUSEPORT             SK_REUSEPORT_SELECT_OR_MIGRATE  -                     NONE
    sk_reuseport           SK_REUSEPORT             SK_REUSEPORT_SELECT             -                     NONE
    kprobe+                KPROBE                   -                               -                     KPROBE
    uprobe+                KPROBE                   -                               -                     UPROBE
    uprobe.s+              KPROBE                   -                               SLEEPABLE             UPROBE
    kretprobe+             KPROBE                   -                               -                     KPROBE
    uretprobe+             KPROBE                   -                               -                     UPROBE
    uretprobe.s+           KPROBE                   -                               SLEEPABLE             UPROBE
    kprobe.multi+          KPROBE                   TRACE_KPROBE_MULTI              -                     KPROBE_MULTI
    kretprobe.multi+       KPROBE                   TRACE_KPROBE_MULTI              -                     KPROBE_MULTI
    kprobe.session+        KPROBE                   TRACE_KPROBE_SESSION            -                     KPROBE_SESSION
    uprobe.multi+          KPROBE                   TRACE_UPROBE_MULTI              -                     UPROBE_MULTI
    uretprobe.multi+       KPROBE                   TRACE_UPROBE_MULTI              -                     UPROBE_MULTI
    uprobe.session+        KPROBE                   TRACE_UPROBE_SESSION            -                     UPROBE_MULTI
    uprobe.multi.s+        KPROBE                   TRACE_UPROBE_MULTI              SLEEPABLE             UPROBE_MULTI
    uretprobe.multi.s+     KPROBE                   TRACE_UPROBE_MULTI              SLEEPABLE             UPROBE_MULTI
    uprobe.session.s+      KPROBE                   TRACE_UPROBE_SESSION            SLEEPABLE             UPROBE_MULTI
    ksyscall+              KPROBE                   -                               -                     KSYSCALL
    kretsyscall+           KPROBE                   -                               -                     KSYSCALL
    usdt+                  KPROBE                   -                               -                     USDT
    usdt.s+                KPROBE                   -                               SLEEPABLE             USDT
    tc/ingress             SCHED_CLS                TCX_INGRESS                     -                     NONE
    tc/egress              SCHED_CLS                TCX_EGRESS                      -                     NONE
    tcx/ingress            SCHED_CLS                TCX_INGRESS                     -                     NONE
    tcx/egress             SCHED_CLS                TCX_EGRESS                      -                     NONE
    tc                     SCHED_CLS                -                               -                     NONE
    classifier             SCHED_CLS                -                               -                     NONE
    action                 SCHED_ACT                -                               -                     NONE
    netkit/primary         SCHED_CLS                NETKIT_PRIMARY                  -                     NONE
    netkit/peer            SCHED_CLS                NETKIT_PEER                     -                     NONE
    tracepoint+            TRACEPOINT               -                               -                     TRACEPOINT
    tp+                    TRACEPOINT               -                               -                     TRACEPOINT
    tracepoint.s+          TRACEPOINT               -                               SLEEPABLE             TRACEPOINT
    tp.s+                  TRACEPOINT               -                               SLEEPABLE             TRACEPOINT
    raw_tracepoint+        RAW_TRACEPOINT           -                               -                     RAW_TP
    raw_tp+                RAW_TRACEPOINT           -                               -                     RAW_TP
    raw_tracepoint.s+      RAW_TRACEPOINT           -                               SLEEPABLE             RAW_TP
    raw_tp.s+              RAW_TRACEPOINT           -                               SLEEPABLE             RAW_TP
    raw_tracepoint.w+      RAW_TRACEPOINT_WRITABLE  -                               -                     RAW_TP
    raw_tp.w+              RAW_TRACEPOINT_WRITABLE  -                               -                     RAW_TP
    tp_btf+                TRACING                  TRACE_RAW_TP                    ATTACH_BTF            TRACING
    tp_btf.s+              TRACING                  TRACE_RAW_TP                    ATTACH_BTF,SLEEPABLE  TRACING
    fentry+                TRACING                  TRACE_FENTRY                    ATTACH_BTF            TRACING
    fmod_ret+              TRACING                  MODIFY_RETURN                   ATTACH_BTF            TRACING
    fexit+                 TRACING                  TRACE_FEXIT                     ATTACH_BTF            TRACING
    fentry.s+              TRACING                  TRACE_FENTRY                    ATTACH_BTF,SLEEPABLE  TRACING
    fmod_ret.s+            TRACING                  MODIFY_RETURN                   ATTACH_BTF,SLEEPABLE  TRACING
    fexit.s+               TRACING                  TRACE_FEXIT                     ATTACH_BTF,SLEEPABLE  TRACING
    fsession+              TRACING                  TRACE_FSESSION                  ATTACH_BTF            TRACING
    fsession.s+            TRACING                  TRACE_FSESSION                  ATTACH_BTF,SLEEPABLE  TRACING
    fsession.multi+        TRACING                  TRACE_FSESSION_MULTI            -                     TRACING_MULTI
    fsession.multi.s+      TRACING                  TRACE_FSESSION_MULTI            SLEEPABLE             TRACING_MULTI
    fentry.multi+          TRACING                  TRACE_FENTRY_MULTI              -                     TRACING_MULTI
    fexit.multi+           TRACING                  TRACE_FEXIT_MULTI               -                     TRACING_MULTI
    fentry.multi.s+        TRACING                  TRACE_FENTRY_MULTI              SLEEPABLE             TRACING_MULTI
    fexit.multi.s+         TRACING                  TRACE_FEXIT_MULTI               SLEEPABLE             TRACING_MULTI
    freplace+              EXT                      -                               ATTACH_BTF            TRACING
    lsm+                   LSM                      LSM_MAC                         ATTACH_BTF            LSM
    lsm.s+                 LSM                      LSM_MAC                         ATTACH_BTF,SLEEPABLE  LSM
    lsm_cgroup+            LSM                      LSM_CGROUP                      ATTACH_BTF            NONE
    iter+                  TRACING                  TRACE_ITER                      ATTACH_BTF            ITER
    iter.s+                TRACING                  TRACE_ITER                      ATTACH_BTF,SLEEPABLE  ITER
    syscall                SYSCALL                  -                               SLEEPABLE             NONE
    xdp.frags/devmap       XDP                      XDP_DEVMAP                      XDP_FRAGS             NONE
    xdp/devmap             XDP                      XDP_DEVMAP                      -                     NONE
    xdp.frags/cpumap       XDP                      XDP_CPUMAP                      XDP_FRAGS             NONE
    xdp/cpumap             XDP                      XDP_CPUMAP                      -                     NONE
    xdp.frags              XDP                      XDP                             XDP_FRAGS             NONE
    xdp                    XDP                      XDP                             -                     NONE
    perf_event             PERF_EVENT               -                               -                     NONE
    lwt_in                 LWT_IN                   -                               -                     NONE
    lwt_out                LWT_OUT                  -                               -                     NONE
    lwt_xmit               LWT_XMIT                 -                               -                     NONE
    lwt_seg6local          LWT_SEG6LOCAL            -                               -                     NONE
    sockops                SOCK_OPS                 CGROUP_SOCK_OPS                 -                     NONE
    sk_skb/stream_parser   SK_SKB                   SK_SKB_STREAM_PARSER            -                     NONE
    sk_skb/stream_verdict  SK_SKB                   SK_SKB_STREAM_VERDICT           -                     NONE
    sk_skb/verdict         SK_SKB                   SK_SKB_VERDICT                  -                     NONE
    sk_skb                 SK_SKB                   -                               -                     NONE
    sk_msg                 SK_MSG                   SK_MSG_VERDICT                  -                     NONE
    lirc_mode2             LIRC_MODE2               LIRC_MODE2                      -                     NONE
    flow_dissector         FLOW_DISSECTOR           FLOW_DISSECTOR                  -                     NONE
    cgroup_skb/ingress     CGROUP_SKB               CGROUP_INET_INGRESS             -                     NONE
    cgroup_skb/egress      CGROUP_SKB               CGROUP_INET_EGRESS              -                     NONE
    cgroup/skb             CGROUP_SKB               -                               -                     NONE
    cgroup/sock_create     CGROUP_SOCK              CGROUP_INET_SOCK_CREATE         -                     NONE
    cgroup/sock_release    CGROUP_SOCK              CGROUP_INET_SOCK_RELEASE        -                     NONE
    cgroup/sock            CGROUP_SOCK              CGROUP_INET_SOCK_CREATE         -                     NONE
    cgroup/post_bind4      CGROUP_SOCK              CGROUP_INET4_POST_BIND          -                     NONE
    cgroup/post_bind6      CGROUP_SOCK              CGROUP_INET6_POST_BIND          -                     NONE
    cgroup/bind4           CGROUP_SOCK_ADDR         CGROUP_INET4_BIND               -                     NONE
    cgroup/bind6           CGROUP_SOCK_ADDR         CGROUP_INET6_BIND               -                     NONE
    cgroup/connect4        CGROUP_SOCK_ADDR         CGROUP_INET4_CONNECT            -                     NONE
    cgroup/connect6        CGROUP_SOCK_ADDR         CGROUP_INET6_CONNECT            -                     NONE
    cgroup/connect_unix    CGROUP_SOCK_ADDR         CGROUP_UNIX_CONNECT             -                     NONE
    cgroup/sendmsg4        CGROUP_SOCK_ADDR         CGROUP_UDP4_SENDMSG             -                     NONE
    cgroup/sendmsg6        CGROUP_SOCK_ADDR         CGROUP_UDP6_SENDMSG             -                     NONE
    cgroup/sendmsg_unix    CGROUP_SOCK_ADDR         CGROUP_UNIX_SENDMSG             -                     NONE
    cgroup/recvmsg4        CGROUP_SOCK_ADDR         CGROUP_UDP4_RECVMSG             -                     NONE
    cgroup/recvmsg6        CGROUP_SOCK_ADDR         CGROUP_UDP6_RECVMSG             -                     NONE
    cgroup/recvmsg_unix    CGROUP_SOCK_ADDR         CGROUP_UNIX_RECVMSG             -                     NONE
    cgroup/getpeername4    CGROUP_SOCK_ADDR         CGROUP_INET4_GETPEERNAME        -                     NONE
    cgroup/getpeername6    CGROUP_SOCK_ADDR         CGROUP_INET6_GETPEERNAME        -                     NONE
    cgroup/getpeername_unix CGROUP_SOCK_ADDR         CGROUP_UNIX_GETPEERNAME         -                     NONE
    cgroup/getsockname4    CGROUP_SOCK_ADDR         CGROUP_INET4_GETSOCKNAME        -                     NONE
    cgroup/getsockname6    CGROUP_SOCK_ADDR         CGROUP_INET6_GETSOCKNAME        -                     NONE
    cgroup/getsockname_unix CGROUP_SOCK_ADDR         CGROUP_UNIX_GETSOCKNAME         -                     NONE
    cgroup/sysctl          CGROUP_SYSCTL            CGROUP_SYSCTL                   -                     NONE
    cgroup/getsockopt      CGROUP_SOCKOPT           CGROUP_GETSOCKOPT               -                     NONE
    cgroup/setsockopt      CGROUP_SOCKOPT           CGROUP_SETSOCKOPT               -                     NONE
    cgroup/dev             CGROUP_DEVICE            CGROUP_DEVICE                   -                     NONE
    struct_ops+            STRUCT_OPS               -                               -                     STRUCT_OPS
    struct_ops.s+          STRUCT_OPS               -                               SLEEPABLE             STRUCT_OPS
    sk_lookup              SK_LOOKUP                SK_LOOKUP                       -                     NONE
    netfilter              NETFILTER                NETFILTER                       -                     NONE
"""


def _rows() -> list[tuple[str, ProgType, AttachType | None, frozenset[str], Attacher]]:
    rows = []
    for line in EXPECTED.strip().splitlines():
        pattern, prog_type, attach, flags, attacher = line.split()
        rows.append(
            (
                pattern,
                ProgType[prog_type],
                None if attach == "-" else AttachType[attach],
                frozenset() if flags == "-" else frozenset(flags.split(",")),
                Attacher[attacher],
            )
        )
    return rows


ROWS = _rows()
ROW_IDS = [r[0] for r in ROWS]

#: Rows libbpf 1.1.2 (the system library) predates; it must reject exactly these.
NEWER_THAN_LIBBPF_1_1 = frozenset(
    {
        "kprobe.session+",
        "uprobe.multi+",
        "uretprobe.multi+",
        "uprobe.session+",
        "uprobe.multi.s+",
        "uretprobe.multi.s+",
        "uprobe.session.s+",
        "usdt.s+",
        "tc/ingress",
        "tc/egress",
        "tcx/ingress",
        "tcx/egress",
        "netkit/primary",
        "netkit/peer",
        "tracepoint.s+",
        "tp.s+",
        "raw_tracepoint.s+",
        "raw_tp.s+",
        "tp_btf.s+",
        "fsession+",
        "fsession.s+",
        "fsession.multi+",
        "fsession.multi.s+",
        "fentry.multi+",
        "fexit.multi+",
        "fentry.multi.s+",
        "fexit.multi.s+",
        "sk_skb/verdict",
        "cgroup/connect_unix",
        "cgroup/sendmsg_unix",
        "cgroup/recvmsg_unix",
        "cgroup/getpeername_unix",
        "cgroup/getsockname_unix",
        "struct_ops.s+",
        "netfilter",
    }
)


def test_table_has_libbpfs_rows_in_libbpfs_order() -> None:
    assert len(ROWS) == 116
    assert [r.pattern for r in SECTION_RULES] == ROW_IDS


@pytest.mark.parametrize(("pattern", "prog_type", "attach", "flags", "attacher"), ROWS, ids=ROW_IDS)
def test_row(
    pattern: str, prog_type: ProgType, attach: AttachType | None, flags: frozenset[str], attacher: Attacher
) -> None:
    name = pattern.removesuffix("+")
    kind = program_kind(name)
    assert kind.rule == pattern
    assert kind.section == name
    assert kind.prog_type is prog_type
    assert kind.expected_attach_type is attach
    assert kind.attach_btf == ("ATTACH_BTF" in flags)
    assert kind.sleepable == ("SLEEPABLE" in flags)
    assert kind.xdp_frags == ("XDP_FRAGS" in flags)
    assert kind.attacher is attacher
    assert kind.autoload
    assert kind.target is None  # bare names carry no target: attach is manual


@pytest.mark.parametrize("pattern", [p for p in ROW_IDS if p.endswith("+")])
def test_plus_rule_needs_exact_name_or_slash(pattern: str) -> None:
    base = pattern.removesuffix("+")
    assert program_kind(base).rule == pattern
    # a glued suffix is another kind or none at all, never this one
    with contextlib.suppress(UnknownSection):
        assert program_kind(base + "x").rule != pattern


@pytest.mark.parametrize("pattern", [p for p in ROW_IDS if not p.endswith("+")])
def test_exact_rule_takes_no_target(pattern: str) -> None:
    with pytest.raises(UnknownSection):
        program_kind(pattern + "/extra")
    with pytest.raises(UnknownSection):
        program_kind(pattern + "x")


@pytest.mark.parametrize(
    ("section", "rule"),
    [
        ("kprobe", "kprobe+"),
        ("kprobe/do_unlinkat", "kprobe+"),
        ("kprobe.multi/x", "kprobe.multi+"),
        ("kretprobe.multi", "kretprobe.multi+"),
        ("xdp.frags/devmap", "xdp.frags/devmap"),
        ("xdp.frags/cpumap", "xdp.frags/cpumap"),
        ("xdp.frags", "xdp.frags"),
        ("xdp/devmap", "xdp/devmap"),
        ("xdp", "xdp"),
        ("uprobe.multi.s", "uprobe.multi.s+"),
        ("uprobe.multi.s/bin:f", "uprobe.multi.s+"),
        ("uprobe.multi/bin:f", "uprobe.multi+"),
        ("uprobe.s/bin:f", "uprobe.s+"),
        ("cgroup/sock_create", "cgroup/sock_create"),
        ("cgroup/sock_release", "cgroup/sock_release"),
        ("cgroup/sock", "cgroup/sock"),
        ("sk_reuseport/migrate", "sk_reuseport/migrate"),
        ("sk_reuseport", "sk_reuseport"),
        ("sk_skb/verdict", "sk_skb/verdict"),
        ("sk_skb", "sk_skb"),
        ("tc/ingress", "tc/ingress"),
        ("tc", "tc"),
        ("fentry.s/f", "fentry.s+"),
        ("fentry.multi.s/f*", "fentry.multi.s+"),
        ("lsm_cgroup/socket_bind", "lsm_cgroup+"),
        ("raw_tp.w/x", "raw_tp.w+"),
    ],
)
def test_first_match(section: str, rule: str) -> None:
    assert program_kind(section).rule == rule


@pytest.mark.parametrize(
    ("section", "prog_type", "attach"),
    [
        ("sk_reuseport/migrate", ProgType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE),
        ("sk_reuseport", ProgType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT),
        ("cgroup/sock_create", ProgType.CGROUP_SOCK, AttachType.CGROUP_INET_SOCK_CREATE),
        ("cgroup/sock_release", ProgType.CGROUP_SOCK, AttachType.CGROUP_INET_SOCK_RELEASE),
        ("tc/ingress", ProgType.SCHED_CLS, AttachType.TCX_INGRESS),
    ],
)
def test_ordering_changes_meaning(section: str, prog_type: ProgType, attach: AttachType) -> None:
    kind = program_kind(section)
    assert (kind.prog_type, kind.expected_attach_type) == (prog_type, attach)


def test_cgroup_inet_ingress_is_not_mistaken_for_none() -> None:
    kind = program_kind("cgroup_skb/ingress")
    assert kind.expected_attach_type is AttachType.CGROUP_INET_INGRESS
    assert int(kind.expected_attach_type) == 0


def test_question_mark_turns_autoload_off() -> None:
    kind = program_kind("?fentry/do_unlinkat")
    assert not kind.autoload
    assert kind.section == "fentry/do_unlinkat"
    assert kind.target == BtfTarget("do_unlinkat")
    assert program_kind("?xdp").autoload is False
    assert program_kind("xdp").autoload is True
    with pytest.raises(UnknownSection):
        program_kind("??xdp")  # libbpf strips one '?'


def test_prog_flags() -> None:
    assert program_kind("xdp").prog_flags == ProgFlags(0)
    assert program_kind("xdp.frags").prog_flags == ProgFlags.XDP_HAS_FRAGS
    assert program_kind("lsm.s/file_open").prog_flags == ProgFlags.SLEEPABLE
    assert program_kind("syscall").prog_flags == ProgFlags.SLEEPABLE


@pytest.mark.parametrize(
    ("section", "target"),
    [
        ("kprobe/do_unlinkat", KprobeTarget("do_unlinkat", 0, retprobe=False)),
        ("kprobe/do_unlinkat+0x10", KprobeTarget("do_unlinkat", 16, retprobe=False)),
        ("kprobe/do_unlinkat+16", KprobeTarget("do_unlinkat", 16, retprobe=False)),
        ("kprobe/do_unlinkat+020", KprobeTarget("do_unlinkat", 16, retprobe=False)),
        ("kprobe/do_unlinkat+0", KprobeTarget("do_unlinkat", 0, retprobe=False)),
        ("kprobe/__x64_sys_read.cold", KprobeTarget("__x64_sys_read.cold", 0, retprobe=False)),
        ("kretprobe/do_unlinkat", KprobeTarget("do_unlinkat", 0, retprobe=True)),
        ("kretprobe/do_unlinkat+0", KprobeTarget("do_unlinkat", 0, retprobe=True)),
        ("uprobe/libc.so.6:malloc", UprobeTarget("libc.so.6", "malloc", 0, retprobe=False)),
        ("uprobe//usr/bin/bash:readline+0x8", UprobeTarget("/usr/bin/bash", "readline", 8, retprobe=False)),
        ("uprobe//usr/bin/bash:readline+8", UprobeTarget("/usr/bin/bash", "readline", 8, retprobe=False)),
        ("uprobe//abs/path:0x1234", UprobeTarget("/abs/path", None, 0x1234, retprobe=False)),
        ("uprobe//abs/path:4660", UprobeTarget("/abs/path", None, 0x1234, retprobe=False)),
        ("uprobe.s/./rel/bin:f", UprobeTarget("./rel/bin", "f", 0, retprobe=False)),
        ("uprobe/lib.so:malloc@@GLIBC_2.2.5", UprobeTarget("lib.so", "malloc@@GLIBC_2.2.5", 0, retprobe=False)),
        ("uprobe/app.apk!/lib/x.so:f", UprobeTarget("app.apk!/lib/x.so", "f", 0, retprobe=False)),
        ("uretprobe/libc.so.6:malloc", UprobeTarget("libc.so.6", "malloc", 0, retprobe=True)),
        ("uretprobe.s//bin/x:0x40", UprobeTarget("/bin/x", None, 0x40, retprobe=True)),
        ("uprobe/", None),
        ("ksyscall/openat", KsyscallTarget("openat", retprobe=False)),
        ("kretsyscall/openat", KsyscallTarget("openat", retprobe=True)),
        ("usdt//usr/lib/libc.so.6:libc:setjmp", UsdtTarget("/usr/lib/libc.so.6", "libc", "setjmp")),
        ("usdt.s/python3:python:function__entry", UsdtTarget("python3", "python", "function__entry")),
        ("tp/sched/sched_switch", TracepointTarget("sched", "sched_switch")),
        ("tracepoint/syscalls/sys_enter_openat", TracepointTarget("syscalls", "sys_enter_openat")),
        ("tp.s/syscalls/sys_enter_openat", TracepointTarget("syscalls", "sys_enter_openat")),
        ("raw_tp/sched_switch", RawTracepointTarget("sched_switch")),
        ("raw_tracepoint.w/bpf_test_finish", RawTracepointTarget("bpf_test_finish")),
        ("fentry/do_unlinkat", BtfTarget("do_unlinkat")),
        ("fexit/nf_conntrack:nf_confirm", BtfTarget("nf_confirm", "nf_conntrack")),
        ("fmod_ret/vmlinux:security_file_open", BtfTarget("security_file_open", "vmlinux")),
        ("fsession/do_unlinkat", BtfTarget("do_unlinkat")),
        ("lsm/file_open", BtfTarget("file_open")),
        ("lsm.s/bprm_committed_creds", BtfTarget("bprm_committed_creds")),
        ("lsm_cgroup/socket_bind", BtfTarget("socket_bind")),
        ("tp_btf/sched_switch", BtfTarget("sched_switch")),
        ("iter/task", BtfTarget("task")),
        ("iter.s/task_vma", BtfTarget("task_vma")),
        ("freplace/handler", BtfTarget("handler")),
        ("freplace/a:b", BtfTarget("a:b")),  # a BPF function name, never a module
        ("kprobe.multi/ksys_*", MultiTarget("ksys_*")),
        ("kretprobe.multi/vfs_?ead", MultiTarget("vfs_?ead", retprobe=True)),
        ("kprobe.session/bpf_fentry_test*", MultiTarget("bpf_fentry_test*", session=True)),
        ("uprobe.multi//bin/x:uprobe_*", MultiTarget("uprobe_*", binary="/bin/x")),
        ("uretprobe.multi.s/libc.so.6:mall*", MultiTarget("mall*", retprobe=True, binary="libc.so.6")),
        ("uprobe.session//bin/x:f", MultiTarget("f", session=True, binary="/bin/x")),
        ("uprobe.multi/", None),
        ("fentry.multi/bpf_fentry_test*", TracingMultiTarget("bpf_fentry_test*")),
        ("fexit.multi/bpf_testmod:bpf_testmod_*", TracingMultiTarget("bpf_testmod_*", "bpf_testmod")),
        ("fsession.multi.s/x", TracingMultiTarget("x")),
        ("struct_ops/init", StructOpsTarget("init")),
        ("struct_ops.s/dispatch", StructOpsTarget("dispatch")),
    ],
)
def test_target(section: str, target: object) -> None:
    assert program_kind(section).target == target


@pytest.mark.parametrize(
    ("section", "why"),
    [
        ("kprobe/", "kernel function name"),
        ("kprobe/+8", "kernel function name"),
        ("kprobe/f+", "is not a number"),
        ("kprobe/f+x", "is not a number"),
        ("kprobe/f+0x", "is not a number"),
        ("kprobe/f+08", "is not a number"),
        ("kprobe/f+-8", "is not a number"),
        ("kprobe/f+8 ", "is not a number"),
        ("kprobe/f g", "kernel function name"),
        ("kprobe/f+0x10000000000000000", "64 bits"),
        ("kretprobe/f+8", "takes no offset"),
        ("uprobe/path", "no ':'"),
        ("uprobe/:func", "binary is empty"),
        ("uprobe/path:", "function is empty"),
        ("uprobe/path:func+notanumber", "is not a number"),
        ("uprobe/path:+8", "function is empty"),
        ("uprobe/path:0x10+8", "either an address"),
        ("uretprobe/path:func+8", "takes no offset"),
        ("ksyscall/", "syscall name"),
        ("kretsyscall/open at", "syscall name"),
        ("usdt/", "1 ':'-separated parts instead of 3"),
        ("usdt/bin:prov", "2 ':'-separated parts"),
        ("usdt/bin:prov:name:extra", "4 ':'-separated parts"),
        ("usdt/bin::name", "provider is empty"),
        ("tp/onlycategory", "no '/'"),
        ("tracepoint/", "no '/'"),
        ("tp//name", "category is empty"),
        ("tp/cat/", "name is empty"),
        ("tp/cat/name/more", "exactly"),
        ("raw_tp/", "tracepoint name is empty"),
        ("fentry/", "name is empty"),
        ("fentry/:func", "module is empty"),
        ("fexit/mod:", "name is empty"),
        ("freplace/", "function name is empty"),
        ("kprobe.multi/", "pattern"),
        ("kprobe.multi/a b", "pattern"),
        ("kprobe.session/x:y", "pattern"),
        ("uprobe.multi/bin", "no ':'"),
        ("uprobe.multi/bin:", "pattern is empty"),
        ("fentry.multi/", "pattern is empty"),
        ("fentry.multi/mod:", "pattern is empty"),
        ("struct_ops/", "member name is empty"),
    ],
)
def test_malformed_target(section: str, why: str) -> None:
    """Like libbpf, the kind is known and the program loads; only auto-attach is impossible, and says why."""
    kind = program_kind(section)
    assert kind.target is None
    assert kind.error is not None
    assert kind.error.startswith(f"section {section!r}: ")
    assert why in kind.error
    assert "expected " + section.split("/", maxsplit=1)[0] + "/" in kind.error


def test_malformed_target_names_every_accepted_form() -> None:
    error = program_kind("uretprobe.s/bin:f+8").error
    assert error is not None
    assert "expected uretprobe.s/<binary>:<function> or uretprobe.s/<binary>:<address>" in error


def test_malformed_target_keeps_question_mark_in_section() -> None:
    kind = program_kind("?tp/sched")
    assert kind.error is not None
    assert kind.error.startswith("section '?tp/sched': ")
    assert not kind.autoload


def test_well_formed_and_bare_sections_have_no_error() -> None:
    assert program_kind("tp/sched/sched_switch").error is None
    assert program_kind("kprobe").error is None


def test_lenient_kind_makes_unknown_sections_unloadable_kinds() -> None:
    kind = lenient_kind("?nonsense/foo")
    assert kind.prog_type == ProgType.UNSPEC
    assert not kind.autoload
    assert kind.section == "nonsense/foo"
    assert kind.error is not None
    assert "no program type is known" in kind.error
    assert lenient_kind("xdp") == program_kind("xdp")


@pytest.mark.parametrize(
    ("section", "suggested"),
    [
        ("kprob/do_unlinkat", "'kprobe[/...]'"),
        ("kprobex", "'kprobe[/...]'"),
        ("fentri/f", "'fentry[/...]'"),
        ("cgroup/sok", "'cgroup/sock'"),
        ("xdp_frags", "'xdp.frags'"),
        ("tracepoints/a/b", "'tracepoint[/...]'"),
    ],
)
def test_unknown_section_suggests(section: str, suggested: str) -> None:
    with pytest.raises(UnknownSection) as info:
        program_kind(section)
    assert isinstance(info.value, ObjectFormatError)
    assert info.value.section == section
    assert "no program type is known" in str(info.value)
    assert suggested in str(info.value)


@pytest.mark.parametrize("section", ["", "?", ".text", "license", "maps", ".BTF", "SEC", "/kprobe/x"])
def test_non_program_sections_are_unknown(section: str) -> None:
    with pytest.raises(UnknownSection, match="no program type"):
        program_kind(section)


def test_huge_names_are_cheap() -> None:
    """A section name is attacker-controlled; a long one must not make suggestions quadratic."""
    start = time.perf_counter()
    with pytest.raises(UnknownSection):
        program_kind("y" * 1_000_000)
    assert program_kind("kprobe/f+" + "9" * 100_000).error
    assert program_kind("uprobe/b:f+0x" + "f" * 100_000).error
    assert program_kind("raw_tp/" + "z" * 1_000_000).target == RawTracepointTarget("z" * 1_000_000)
    assert time.perf_counter() - start < 2


def test_rules_with_targets_must_be_plus_rules() -> None:
    with pytest.raises(ValueError, match="only 'name\\+' rules"):
        SectionRule("tc/ingress", ProgType.SCHED_CLS, target=TargetSyntax.KPROBE)


def test_every_plus_rule_with_an_attacher_parses_targets() -> None:
    for rule in SECTION_RULES:
        if rule.attacher not in (Attacher.NONE,):
            assert rule.target is not None, rule.pattern
        if rule.target is not None:
            assert rule.pattern.endswith("+"), rule.pattern


def _check(section: str) -> None:
    try:
        kind = program_kind(section)
    except ObjectFormatError as e:
        error = e
    else:
        error = None
    if error is not None:
        assert error.section == section
        return
    assert isinstance(kind, ProgramKind)
    assert kind.section == section.removeprefix("?")
    assert kind.autoload == (not section.startswith("?"))
    assert next(r for r in SECTION_RULES if r.matches(kind.section)).pattern == kind.rule


@settings(max_examples=500)
@given(st.text())
def test_arbitrary_names_raise_only_object_format_error(section: str) -> None:
    _check(section)


_TAIL = st.text(alphabet=st.sampled_from("ab_.:/+*?0x19 -@!\n\x00é"), max_size=30)


@settings(max_examples=2000)
@given(
    st.booleans(),
    st.sampled_from(sorted({r.pattern.removesuffix("+") for r in SECTION_RULES})),
    st.sampled_from(["", "/", "x", "."]),
    _TAIL,
)
def test_near_miss_names_raise_only_object_format_error(q: bool, base: str, glue: str, tail: str) -> None:
    _check(("?" if q else "") + base + glue + tail)


# libbpf as the oracle -------------------------------------------------------


@pytest.fixture(scope="module")
def libbpf_prog_type_by_name() -> ctypes._CFunctionType:
    if not os.path.exists(LIBBPF_PATH):
        pytest.fail(f"{LIBBPF_PATH} is missing: install libbpf1 (the oracle for section names)", pytrace=False)
    fn: ctypes._CFunctionType = libbpf().libbpf_prog_type_by_name
    return fn


def _libbpf(fn: ctypes._CFunctionType, name: str) -> tuple[int, int, int]:
    prog_type, attach = ctypes.c_int(-1), ctypes.c_int(-1)
    rc = fn(name.encode(), ctypes.byref(prog_type), ctypes.byref(attach))
    return rc, prog_type.value, attach.value


def test_newer_rows_are_real_rows() -> None:
    assert set(ROW_IDS) >= NEWER_THAN_LIBBPF_1_1


@pytest.mark.parametrize("pattern", ROW_IDS)
def test_libbpf_agrees(libbpf_prog_type_by_name: ctypes._CFunctionType, pattern: str) -> None:
    base = pattern.removesuffix("+")
    names = [base, base + "/some_target"] if pattern.endswith("+") else [base]
    for name in names:
        rc, prog_type, attach = _libbpf(libbpf_prog_type_by_name, name)
        if pattern in NEWER_THAN_LIBBPF_1_1:
            assert rc == -errno.ESRCH, f"libbpf 1.1 knows {name!r}: drop it from NEWER_THAN_LIBBPF_1_1"
            continue
        assert rc == 0, f"libbpf 1.1 rejects {name!r} ({rc}): it belongs in NEWER_THAN_LIBBPF_1_1"
        rule = next(r for r in SECTION_RULES if r.matches(name))
        ours = (int(rule.prog_type), 0 if rule.expected_attach_type is None else int(rule.expected_attach_type))
        assert ours == (prog_type, attach), name


@pytest.mark.parametrize("name", ["kprobex", "tc/foo", "xdp/foo", "cgroup/sok", "kprobe.multix", "", "sk_msgs"])
def test_libbpf_also_rejects(libbpf_prog_type_by_name: ctypes._CFunctionType, name: str) -> None:
    """Names both loaders refuse, so 'unknown' means the same thing to both."""
    assert _libbpf(libbpf_prog_type_by_name, name)[0] == -errno.ESRCH
    with pytest.raises(UnknownSection):
        program_kind(name)
