"""More bpf(2) commands end to end: links, iterators, BTF objects, fd-by-id, binding, bpffs, memlock."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from dynbpf import DynbpfError, PinError
from dynbpf._asm.insn import return_imm
from dynbpf._btf import Kind, vmlinux
from dynbpf._probes import kernel as kernel_probes
from dynbpf._probes.maps import local_storage_btf
from dynbpf._probes.result import Support
from dynbpf._sys import commands, fs, perf
from dynbpf._sys.attrs import LinkCreateAttr
from dynbpf._sys.constants import AttachType, LinkType, MapType, ProgType
from tests.helpers import XDP_PASS, getppid_counter, load_ok, new_map, read_u64

pytestmark = pytest.mark.kernel


def test_xdp_link_update_swaps_program_then_detach(no_fd_leak: None) -> None:
    lo = socket.if_nametoindex("lo")
    with (
        load_ok(ProgType.XDP, return_imm(XDP_PASS), expected_attach_type=AttachType.XDP) as first,
        load_ok(ProgType.XDP, return_imm(XDP_PASS), expected_attach_type=AttachType.XDP) as second,
    ):
        attr = LinkCreateAttr(prog_fd=first.raw, target_fd=lo, attach_type=AttachType.XDP)
        with commands.link_create(attr) as link:
            info = commands.link_info(link.raw)
            assert info.type == LinkType.XDP
            assert info.prog_id == commands.prog_info(first.raw).id
            commands.link_update(link.raw, second.raw)
            assert commands.link_info(link.raw).prog_id == commands.prog_info(second.raw).id
            with commands.fd_by_id(commands.ObjKind.LINK, info.id) as again:
                assert commands.link_info(again.raw).id == info.id
            commands.link_detach(link.raw)
            # a detached link stays a valid fd but no longer hooks the device: a new link may attach
            attr = LinkCreateAttr(prog_fd=first.raw, target_fd=lo, attach_type=AttachType.XDP)
            commands.link_create(attr).close()


def test_task_iterator_reads_to_end(no_fd_leak: None) -> None:
    table = vmlinux()
    assert table is not None
    (target,) = table.find("bpf_iter_task", Kind.FUNC)
    iter_prog = load_ok(
        ProgType.TRACING, return_imm(0), expected_attach_type=AttachType.TRACE_ITER, attach_btf_id=target
    )
    with iter_prog as p:
        attr = LinkCreateAttr(prog_fd=p.raw, attach_type=AttachType.TRACE_ITER)
        with commands.link_create(attr) as link, commands.iter_create(link.raw) as it:
            assert os.read(it.raw, 4096) == b""  # the program prints nothing; the walk must still end


def test_btf_object_load_info_and_by_id(no_fd_leak: None) -> None:
    blob = local_storage_btf()
    with commands.btf_load(blob) as btf:
        info = commands.btf_info(btf.raw)
        assert info.btf_size == len(blob)
        assert info.id > 0
        assert not info.kernel_btf
        assert info.id in commands.ids(commands.ObjKind.BTF)
        with commands.fd_by_id(commands.ObjKind.BTF, info.id) as again:
            assert commands.btf_info(again.raw).id == info.id


def test_prog_by_id_and_bind_map(no_fd_leak: None) -> None:
    with load_ok(ProgType.SOCKET_FILTER, return_imm(0)) as p, new_map(MapType.HASH) as m:
        prog_id = commands.prog_info(p.raw).id
        assert prog_id in commands.ids(commands.ObjKind.PROG)
        with commands.fd_by_id(commands.ObjKind.PROG, prog_id) as again:
            assert commands.prog_info(again.raw).id == prog_id
        assert commands.prog_map_ids(p.raw) == []
        commands.prog_bind_map(p.raw, m.raw)
        assert commands.prog_map_ids(p.raw) == [commands.map_info(m.raw).id]


def test_bpffs_detection() -> None:
    assert fs.is_bpffs(fs.DEFAULT_BPFFS)
    assert not fs.is_bpffs("/tmp")
    assert fs.DEFAULT_BPFFS in fs.bpffs_mounts()
    with pytest.raises(PinError, match=r"/tmp is not on a BPF filesystem.*mount -t bpf"):
        fs.ensure_bpffs("/tmp")
    with pytest.raises(DynbpfError, match="no tracepoint nosuch/event"):
        fs.tracepoint_id("nosuch", "event")


def test_memlock_raised_only_without_memcg_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    original = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, original[1]))
        accounting = kernel_probes.memcg_accounting()  # what this kernel does, by its probe
        assert kernel_probes.prepare_memlock() == accounting
        if accounting.supported:  # 5.11 on: BPF memory is charged to the memory cgroup, the limit is left alone
            assert resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] == 64 * 1024
        else:  # before 5.11 the limit is what runs out: it is raised
            assert resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] in (resource.RLIM_INFINITY, original[1])

        monkeypatch.setattr(kernel_probes, "memcg_accounting", lambda: Support("memcg", False, "pretend < 5.11"))
        kernel_probes.prepare_memlock()
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        assert soft == hard
        assert soft == resource.RLIM_INFINITY or soft >= original[1]
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, original)


def test_legacy_perf_ioctl_attach_and_pmu_metadata(no_fd_leak: None) -> None:
    """Kernels without perf links attach with PERF_EVENT_IOC_SET_BPF; the path must work too."""
    with getppid_counter() as (m, p, pfd):
        perf.ioctl(pfd.raw, perf.PERF_EVENT_IOC_SET_BPF, p.raw)
        perf.ioctl(pfd.raw, perf.PERF_EVENT_IOC_ENABLE)
        for _ in range(5):
            os.getppid()
        assert read_u64(m) == 5
    uprobe = perf.pmu_type("uprobe")
    assert uprobe is not None
    assert uprobe > 0
    assert perf.pmu_retprobe_bit("uprobe") == 0
    assert perf.pmu_type("no-such-pmu") is None
