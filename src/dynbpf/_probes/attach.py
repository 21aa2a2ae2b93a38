"""Attach-kind probes: can a program of each kind actually be hooked up?

A program type loading says nothing about attaching it (kprobes need the
kprobe PMU, trampolines need the kernel to allow them, ...). These probes
create a real link and close it at once. Hooks with side effects get a
program with the neutral verdict (pass, accept, allow) and, for cgroups, a
private empty cgroup, so probing never changes what the system does.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dynbpf._asm.insn import return_imm
from dynbpf._btf import Kind, kernel, size_of
from dynbpf._probes.maps import local_storage_btf
from dynbpf._probes.result import Support, cached, outcome
from dynbpf._probes.trial import Trial, create_map, kernel_btf_id, load
from dynbpf._sys import commands, fs, perf
from dynbpf._sys.attrs import LinkCreateAttr, ProgAssocStructOpsAttr
from dynbpf._sys.constants import AttachType, Cmd, MapFlags, MapType, ProgType, type_name
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import bpf_raw
from dynbpf.errors import AttachError, DynbpfError, SyscallError

PROBE_KFUNC = "vfs_read"  # a kernel function present on every configuration
TCX_PASS = 0
XDP_PASS = 2
NF_ACCEPT = 1
NFPROTO_IPV4 = 2
NF_INET_LOCAL_IN = 1


def _link(name: str, prog: Trial, prog_desc: str, attach: Callable[[Fd], Fd], attach_desc: str) -> Support:
    """Load result + attach attempt → Support with both steps in ``how``."""
    with prog:
        if prog.fd is None:
            return Support(name, False, f"{prog_desc} -> {prog.result}")
        try:
            with attach(prog.fd):
                err = 0
        except SyscallError as e:
            err = e.errno
        except DynbpfError as e:
            return Support(name, False, f"{prog_desc} -> ok; {attach_desc}: {e}")
    if err in _BUSY:  # the kernel knows the link type; the hook is taken by someone else right now
        return Support(name, True, f"{prog_desc} -> ok; {attach_desc} -> {outcome(err)} (a known link type, busy now)")
    transient = err in (errno.EAGAIN, errno.EINTR, errno.ENOMEM)
    return Support(name, err == 0, f"{prog_desc} -> ok; {attach_desc} -> {outcome(err)}", transient=transient)


_BUSY = (errno.EBUSY, errno.EEXIST)


def _link_create(prog: Fd, target: int, attach_type: AttachType, **union: object) -> Fd:
    attr = LinkCreateAttr(prog_fd=prog.raw, target_fd=target, attach_type=attach_type)
    for path, value in union.items():
        sub, field = path.split("__")
        setattr(getattr(attr, sub), field, value)
    return commands.link_create(attr)


def _btf_link(name: str, prog_type: ProgType, eat: AttachType, target: str, kind: Kind) -> Support:
    """Load a program attached by BTF id to ``target`` and link it with ``LINK_CREATE(eat)``."""
    btf_id = kernel_btf_id(target, kind)
    if btf_id is None:
        return Support(name, False, f"no {target} in kernel BTF")
    prog = load(prog_type, return_imm(0), expected_attach_type=eat, attach_btf_id=btf_id)
    kind_name = type_name(AttachType, eat)
    return _link(
        name,
        prog,
        f"{type_name(ProgType, prog_type)} program ({kind_name} -> {target}) load",
        lambda fd: _link_create(fd, 0, eat),
        f"BPF_LINK_CREATE {kind_name}",
    )


@cached
def raw_tracepoint() -> Support:
    prog = load(ProgType.RAW_TRACEPOINT, return_imm(0))
    return _link(
        "raw tracepoint links",
        prog,
        "raw_tracepoint program load",
        lambda fd: commands.raw_tracepoint_open("sys_enter", fd.raw),
        "BPF_RAW_TRACEPOINT_OPEN sys_enter",
    )


@cached
def tracing() -> Support:
    """BTF-typed raw tracepoints (tp_btf) attached through a tracing link."""
    return _btf_link(
        "tracing links (tp_btf)", ProgType.TRACING, AttachType.TRACE_RAW_TP, "btf_trace_sched_switch", Kind.TYPEDEF
    )


@cached
def trampolines() -> Support:
    """fentry/fexit/fmod_ret: BPF trampolines."""
    return _btf_link(
        "BPF trampolines (fentry/fexit)", ProgType.TRACING, AttachType.TRACE_FENTRY, "bpf_fentry_test1", Kind.FUNC
    )


@cached
def modify_return() -> Support:
    """fmod_ret on the kernel's own test function: beyond trampolines, the kernel must list the target as
    modifiable (error injection, or the fmodret id set test_run registers; Debian's 6.1 has neither)."""
    return _btf_link(
        "fmod_ret on bpf_modify_return_test",
        ProgType.TRACING,
        AttachType.MODIFY_RETURN,
        "bpf_modify_return_test",
        Kind.FUNC,
    )


@cached
def lsm() -> Support:
    return _btf_link("BPF LSM", ProgType.LSM, AttachType.LSM_MAC, "bpf_lsm_file_open", Kind.FUNC)


@cached
def iterators() -> Support:
    return _btf_link("BPF iterators", ProgType.TRACING, AttachType.TRACE_ITER, "bpf_iter_task", Kind.FUNC)


@cached
def iterator_target(target: str) -> Support:
    """Whether an iterator program over ``target`` (``task``, ``bpf_map_elem``, ...) loads.

    Iterators working says little about one target: a kernel may refuse
    some (6.18 builds exist that load task iterators but answer EPERM,
    before verifying anything, for ``bpf_map_elem``). Only the load is
    tried: most targets need a target-specific parameter (a map, a cgroup)
    to link, which the attach itself checks.
    """
    name = f"BPF iterators over {target}"
    func = f"bpf_iter_{target}"
    btf_id = kernel_btf_id(func, Kind.FUNC)
    if btf_id is None:
        return Support(name, False, f"no {func} in kernel BTF")
    with load(ProgType.TRACING, return_imm(0), expected_attach_type=AttachType.TRACE_ITER, attach_btf_id=btf_id) as t:
        return Support(name, t.fd is not None, f"tracing program (trace_iter -> {func}) load -> {t.result}")


def _tracepoint_event() -> Fd:
    tp_id = fs.tracepoint_id("syscalls", "sys_enter_getpid")
    return perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=-1, cpu=0, what="tracepoint syscalls/sys_enter_getpid")


def _perf_attach(event: Callable[[], Fd]) -> Callable[[Fd], Fd]:
    def attach(prog: Fd) -> Fd:
        pfd = event()
        try:
            return _link_create(prog, pfd.raw, AttachType.PERF_EVENT)
        finally:
            pfd.close()  # the link holds its own reference to the perf event

    return attach


@cached
def tracepoints() -> Support:
    prog = load(ProgType.TRACEPOINT, return_imm(0))
    return _link(
        "tracepoints (perf_event link)",
        prog,
        "tracepoint program load",
        _perf_attach(_tracepoint_event),
        "perf_event_open syscalls/sys_enter_getpid + BPF_LINK_CREATE perf_event",
    )


def _kprobe_event() -> Fd:
    pmu = perf.pmu_type("kprobe")
    if pmu is None:
        raise AttachError(f"no kprobe PMU ({perf.PMU_ROOT}/kprobe absent: kernel built without kprobe events)")
    attr, _keep = perf.probe_attr(pmu, target=PROBE_KFUNC.encode(), offset=0, retprobe_bit=None)
    return perf.perf_event_open(attr, pid=-1, cpu=0, what=f"kprobe {PROBE_KFUNC}")


@cached
def kprobes() -> Support:
    prog = load(ProgType.KPROBE, return_imm(0))
    return _link(
        "kprobes",
        prog,
        "kprobe program load",
        _perf_attach(_kprobe_event),
        f"perf_event_open kprobe PMU {PROBE_KFUNC} + BPF_LINK_CREATE perf_event",
    )


@cached
def kprobe_multi() -> Support:
    return _kprobe_multi_link("kprobe.multi links", AttachType.TRACE_KPROBE_MULTI, "kprobe_multi")


@cached
def kprobe_session() -> Support:
    """kprobe.session links (6.10): a kprobe.multi link whose program runs on entry and on return."""
    return _kprobe_multi_link("kprobe.session links", AttachType.TRACE_KPROBE_SESSION, "kprobe_session")


def _kprobe_multi_link(name: str, attach_type: AttachType, label: str) -> Support:
    """A kprobe program of ``attach_type`` loaded and linked on one function by name."""
    prog = load(ProgType.KPROBE, return_imm(0), expected_attach_type=attach_type)
    sym = ctypes.create_string_buffer(PROBE_KFUNC.encode())
    syms = (ctypes.c_uint64 * 1)(ctypes.addressof(sym))

    def attach(fd: Fd) -> Fd:
        return _link_create(fd, 0, attach_type, kprobe_multi__cnt=1, kprobe_multi__syms=ctypes.addressof(syms))

    return _link(name, prog, f"kprobe program (trace_{label}) load", attach, f"BPF_LINK_CREATE {label} {PROBE_KFUNC}")


@contextmanager
def _probe_file() -> Iterator[str]:
    """A private regular file for uprobes: nothing ever executes it, so probing has no effect."""
    with tempfile.NamedTemporaryFile(prefix="dynbpf-uprobe-probe-") as f:
        f.write(b"\0" * 4096)
        f.flush()
        yield f.name


@cached
def uprobes() -> Support:
    pmu = perf.pmu_type("uprobe")
    if pmu is None:
        return Support("uprobes", False, f"no uprobe PMU ({perf.PMU_ROOT}/uprobe absent)")
    with _probe_file() as path:

        def event() -> Fd:
            attr, _keep = perf.probe_attr(pmu, target=path.encode(), offset=0, retprobe_bit=None)
            return perf.perf_event_open(attr, pid=-1, cpu=0, what=f"uprobe {path}")

        prog = load(ProgType.KPROBE, return_imm(0))
        return _link(
            "uprobes",
            prog,
            "kprobe program load",
            _perf_attach(event),
            "perf_event_open uprobe PMU on a private file + BPF_LINK_CREATE perf_event",
        )


@cached
def uprobe_multi() -> Support:
    prog = load(ProgType.KPROBE, return_imm(0), expected_attach_type=AttachType.TRACE_UPROBE_MULTI)
    with _probe_file() as path:
        cpath = ctypes.create_string_buffer(path.encode())
        offsets = (ctypes.c_uint64 * 1)(0)

        def attach(fd: Fd) -> Fd:
            return _link_create(
                fd,
                0,
                AttachType.TRACE_UPROBE_MULTI,
                uprobe_multi__path=ctypes.addressof(cpath),
                uprobe_multi__offsets=ctypes.addressof(offsets),
                uprobe_multi__cnt=1,
            )

        return _link(
            "uprobe.multi links",
            prog,
            "kprobe program (trace_uprobe_multi) load",
            attach,
            "BPF_LINK_CREATE uprobe_multi on a private file",
        )


def _loopback_link(name: str, prog_type: ProgType, eat: AttachType, verdict: int, verdict_name: str) -> Support:
    """Attach a program returning the neutral ``verdict`` to lo and detach it at once."""
    prog = load(prog_type, return_imm(verdict), expected_attach_type=eat)
    return _link(
        name,
        prog,
        f"{type_name(ProgType, prog_type)} program ({type_name(AttachType, eat)}, returns {verdict_name}) load",
        lambda fd: _link_create(fd, socket.if_nametoindex("lo"), eat),
        f"BPF_LINK_CREATE {type_name(AttachType, eat)} on lo",
    )


@cached
def tcx() -> Support:
    return _loopback_link("tcx links", ProgType.SCHED_CLS, AttachType.TCX_INGRESS, TCX_PASS, "TCX_PASS")


@cached
def xdp() -> Support:
    return _loopback_link("xdp links", ProgType.XDP, AttachType.XDP, XDP_PASS, "XDP_PASS")


@cached
def netfilter() -> Support:
    prog = load(ProgType.NETFILTER, return_imm(NF_ACCEPT), expected_attach_type=AttachType.NETFILTER)
    return _link(
        "netfilter links",
        prog,
        "netfilter program (returns NF_ACCEPT) load",
        lambda fd: _link_create(
            fd,
            0,
            AttachType.NETFILTER,
            netfilter__pf=NFPROTO_IPV4,
            netfilter__hooknum=NF_INET_LOCAL_IN,
            netfilter__priority=1000,
        ),
        "BPF_LINK_CREATE netfilter ipv4 local_in",
    )


def cgroup2_root() -> str | None:
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


@contextmanager
def _private_cgroup() -> Iterator[int]:
    root = cgroup2_root()
    if root is None:
        raise AttachError("no cgroup2 filesystem is mounted, so there is no cgroup to attach to")
    path = os.path.join(root, f"dynbpf-probe-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)
        os.rmdir(path)


@cached
def cgroup() -> Support:
    prog = load(ProgType.CGROUP_SKB, return_imm(1), expected_attach_type=AttachType.CGROUP_INET_INGRESS)

    def attach(fd: Fd) -> Fd:
        with _private_cgroup() as cg:
            return _link_create(fd, cg, AttachType.CGROUP_INET_INGRESS)

    return _link(
        "cgroup links",
        prog,
        "cgroup_skb program (returns allow) load",
        attach,
        "BPF_LINK_CREATE cgroup_inet_ingress on a private empty cgroup",
    )


def _struct_ops_map(flags: int) -> tuple[Fd | None, str]:
    """Create (not register) a tcp_congestion_ops struct_ops map, as libbpf does at load.

    The kernel insists on a valid ``btf_fd`` (the object's own BTF) even though
    the value type comes from vmlinux, so a minimal BTF blob is loaded for it.
    """
    value_type = kernel_btf_id("bpf_struct_ops_tcp_congestion_ops", Kind.STRUCT)
    spec = kernel.vmlinux()
    if value_type is None or spec is None:
        return None, "no bpf_struct_ops_tcp_congestion_ops in kernel BTF"
    size = size_of(spec, value_type)
    try:
        btf = commands.btf_load(local_storage_btf())
    except SyscallError as e:
        return None, f"loading a minimal BTF for btf_fd failed: {e}"
    with btf:
        trial = create_map(
            MapType.STRUCT_OPS, 4, size, 1, btf_vmlinux_value_type_id=value_type, map_flags=flags, btf_fd=btf.raw
        )
    return trial.fd, f"BPF_MAP_CREATE struct_ops tcp_congestion_ops (btf_fd set) flags {flags:#x} -> {trial.result}"


@cached
def struct_ops() -> Support:
    fd, how = _struct_ops_map(0)
    if fd is not None:
        fd.close()
    return Support("struct_ops", fd is not None, how)


@cached
def struct_ops_link() -> Support:
    """struct_ops maps attached through a link (BPF_F_LINK, 6.4): the flag is refused before that."""
    fd, how = _struct_ops_map(MapFlags.LINK)
    if fd is not None:
        fd.close()
    return Support("struct_ops links", fd is not None, how)


@cached
def struct_ops_assoc() -> Support:
    """BPF_PROG_ASSOC_STRUCT_OPS (command 38).

    With invalid fds a kernel that knows the command fails the fd lookup
    (EBADF); one that does not know it rejects the command itself (EINVAL).
    """
    attr = ProgAssocStructOpsAttr(map_fd=0xFFFFFFFF, prog_fd=0xFFFFFFFF)
    _, err = bpf_raw(Cmd.PROG_ASSOC_STRUCT_OPS, attr)
    return Support(
        "struct_ops program association (BPF_PROG_ASSOC_STRUCT_OPS)",
        err == errno.EBADF,
        f"BPF_PROG_ASSOC_STRUCT_OPS with fds -1 -> {outcome(err)} (EBADF: command known; EINVAL: kernel predates it)",
    )
