"""The bpf(2) layer against the running kernel: maps, programs, links, pins, errors."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from ctypes import c_uint32 as u32_t

import pytest
from bench.gil_release import busy_program

from dynbpf._asm import decode, encode
from dynbpf._asm.insn import R1, ld_map_value, return_imm, st_mem
from dynbpf._asm.opcodes import Size
from dynbpf._btf import Kind, size_of
from dynbpf._btf import kernel as btf_kernel
from dynbpf._probes import attach as attach_probes
from dynbpf._probes.maps import local_storage_btf
from dynbpf._probes.trial import load
from dynbpf._sys import commands, fs
from dynbpf._sys.attrs import LinkCreateAttr, MapCreateAttr
from dynbpf._sys.constants import AttachType, Cmd, MapFlags, MapType, ProgType, UpdateFlags
from dynbpf._sys.syscall import bpf
from dynbpf.errors import StateError, SyscallError
from tests import bpfbuild
from tests.helpers import counter_prog, getppid_counter, load_ok, new_map, read_u64, u32, u64

pytestmark = pytest.mark.kernel


def test_program_writes_map_value_seen_from_user_space(no_fd_leak: None) -> None:
    with new_map() as m:
        assert m.raw > 2
        assert not os.get_inheritable(m.raw)  # kernel BPF fds are close-on-exec
        prog = [ld_map_value(R1, m.raw, 0), st_mem(Size.DW, R1, 0, 42), *return_imm(7)]
        with load_ok(ProgType.SOCKET_FILTER, prog) as p:
            assert read_u64(m) == 0
            result = commands.prog_test_run(p.raw, data_in=b"\0" * 64, repeat=3)
            assert result.retval == 7
            assert read_u64(m) == 42
            assert commands.prog_map_ids(p.raw) == [commands.map_info(m.raw).id]


def test_raw_tracepoint_fires_on_syscalls_and_stops_after_detach(no_fd_leak: None) -> None:
    with new_map() as m, load_ok(ProgType.RAW_TRACEPOINT, counter_prog(m)) as p:
        link = commands.raw_tracepoint_open("sys_enter", p.raw)
        for _ in range(20):
            os.getppid()
        assert read_u64(m) >= 20
        link.close()
        time.sleep(0.05)
        before = read_u64(m)
        for _ in range(20):
            os.getppid()
        assert read_u64(m) == before


def test_tracepoint_through_perf_event_link(no_fd_leak: None) -> None:
    with getppid_counter() as (m, p, pfd):
        attr = LinkCreateAttr(prog_fd=p.raw, target_fd=pfd.raw, attach_type=AttachType.PERF_EVENT)
        with commands.link_create(attr) as link:
            assert commands.link_info(link.raw).prog_id == commands.prog_info(p.raw).id
            for _ in range(10):
                os.getppid()
            assert read_u64(m) == 10


def test_hash_map_operations(no_fd_leak: None) -> None:
    with new_map(MapType.HASH, key=4, value=8, entries=16) as m:
        for k in range(5):
            commands.map_update_elem(m.raw, u32(k), u64(k * 10))
        value = ctypes.create_string_buffer(8)
        assert commands.map_lookup_elem(m.raw, u32(3), value)
        assert int.from_bytes(value.raw, "little") == 30
        assert not commands.map_lookup_elem(m.raw, u32(99), value)
        with pytest.raises(SyscallError) as exc:
            commands.map_update_elem(m.raw, u32(3), u64(1), UpdateFlags.NOEXIST)
        assert exc.value.errno == errno.EEXIST
        assert commands.map_delete_elem(m.raw, u32(4))
        assert not commands.map_delete_elem(m.raw, u32(4))

        keys = []
        key = ctypes.create_string_buffer(4)
        cur: bytes | None = None
        while commands.map_get_next_key(m.raw, cur, key):
            cur = key.raw
            keys.append(int.from_bytes(cur, "little"))
        assert sorted(keys) == [0, 1, 2, 3]

        n = 16
        kbuf = ctypes.create_string_buffer(4 * n)
        vbuf = ctypes.create_string_buffer(8 * n)
        out = ctypes.create_string_buffer(4)
        res = commands.map_batch(Cmd.MAP_LOOKUP_BATCH, m.raw, keys=kbuf, values=vbuf, count=n, out_batch=out)
        assert res.done
        assert res.count == 4
        got = {
            int.from_bytes(kbuf.raw[4 * i : 4 * i + 4], "little"): int.from_bytes(vbuf.raw[8 * i : 8 * i + 8], "little")
            for i in range(res.count)
        }
        assert got == {0: 0, 1: 10, 2: 20, 3: 30}

        ukeys = ctypes.create_string_buffer(u32(7) + u32(8), 8)
        uvals = ctypes.create_string_buffer(u64(70) + u64(80), 16)
        assert commands.map_batch(Cmd.MAP_UPDATE_BATCH, m.raw, keys=ukeys, values=uvals, count=2).count == 2
        assert commands.map_lookup_elem(m.raw, u32(8), value)
        assert int.from_bytes(value.raw, "little") == 80

        dkeys = ctypes.create_string_buffer(u32(0) + u32(1), 8)
        assert commands.map_batch(Cmd.MAP_DELETE_BATCH, m.raw, keys=dkeys, values=None, count=2).count == 2
        assert not commands.map_lookup_elem(m.raw, u32(0), value)


def test_frozen_map_rejects_user_writes(no_fd_leak: None) -> None:
    with new_map() as m:
        commands.map_update_elem(m.raw, u32(0), u64(5))
        commands.map_freeze(m.raw)
        with pytest.raises(SyscallError) as exc:
            commands.map_update_elem(m.raw, u32(0), u64(6))
        assert exc.value.errno == errno.EPERM
        assert read_u64(m) == 5


def test_pin_get_and_enumerate(no_fd_leak: None) -> None:
    root = fs.pin_path(fs.DEFAULT_BPFFS, f"dynbpf-test-{uuid.uuid4().hex[:8]}")
    path = fs.pin_path(root, "counter")
    fs.make_pin_dirs(path)
    try:
        with new_map() as m:
            commands.map_update_elem(m.raw, u32(0), u64(77))
            commands.obj_pin(m.raw, path)
            map_id = commands.map_info(m.raw).id
        # the pin keeps the map alive after our fd is gone
        assert map_id in commands.ids(commands.ObjKind.MAP)
        with commands.obj_get(path) as again:
            assert commands.map_info(again.raw).id == map_id
            assert read_u64(again) == 77
        with commands.fd_by_id(commands.ObjKind.MAP, map_id) as by_id:
            assert read_u64(by_id) == 77
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(root)
    time.sleep(0.1)  # map free is deferred to an RCU callback
    assert map_id not in commands.ids(commands.ObjKind.MAP)


def test_pin_names_cannot_escape_root() -> None:
    for bad in ("..", "a/b", "", "."):
        with pytest.raises(Exception, match="invalid pin name"):
            fs.pin_path("/sys/fs/bpf", bad)


class FutureMapCreateAttr(MapCreateAttr):
    """A request carrying a field past the end of the kernel's union bpf_attr (as from a newer dynbpf)."""

    _fields_ = [
        ("_pad_to_end", ctypes.c_uint8 * (256 - ctypes.sizeof(MapCreateAttr))),
        ("field_from_the_future", u32_t),
    ]


def test_errors_name_command_errno_and_hint(no_fd_leak: None) -> None:
    with pytest.raises(SyscallError) as exc:
        new_map(map_type=4242)  # type: ignore[arg-type]
    err = exc.value
    assert err.errno == errno.EINVAL
    assert "BPF_MAP_CREATE" in str(err)
    assert "EINVAL" in str(err)
    assert "older than the feature" in str(err)
    with pytest.raises(SyscallError) as exc:
        bpf(
            Cmd.MAP_CREATE,
            FutureMapCreateAttr(
                map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, field_from_the_future=1
            ),
        )
    assert exc.value.errno == errno.E2BIG
    assert "field this kernel does not know" in str(exc.value)
    with pytest.raises(SyscallError) as exc:
        commands.prog_test_run(10_000)
    assert exc.value.errno == errno.EBADF
    assert "BPF_PROG_TEST_RUN" in str(exc.value)


def test_struct_ops_association_command_matches_probe(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_assoc()
    with load_ok(ProgType.SOCKET_FILTER, return_imm(0)) as p, new_map() as m, pytest.raises(SyscallError) as exc:
        commands.prog_assoc_struct_ops(p.raw, m.raw)
    # a kernel with command 38 refuses an array map (not struct_ops) with EINVAL too, so the
    # probe's evidence is the fd-validation order; here we check the error is well-formed
    assert "BPF_PROG_ASSOC_STRUCT_OPS" in str(exc.value)
    if not support:
        assert exc.value.errno == errno.EINVAL


def test_struct_ops_maps_need_a_btf_fd_and_the_probe_supplies_one(no_fd_leak: None) -> None:
    """The kernel wants the object's BTF fd even for a vmlinux value type (EINVAL without it)."""
    vmlinux = btf_kernel.vmlinux()
    assert vmlinux is not None
    (value_type,) = vmlinux.find("bpf_struct_ops_tcp_congestion_ops", Kind.STRUCT)
    size = size_of(vmlinux, value_type)
    attr = {"map_type": MapType.STRUCT_OPS, "key_size": 4, "value_size": size, "max_entries": 1}
    with pytest.raises(SyscallError) as exc:
        commands.map_create(MapCreateAttr(**attr, btf_vmlinux_value_type_id=value_type))
    assert exc.value.errno == errno.EINVAL
    with commands.btf_load(local_storage_btf()) as btf:
        ops = {**attr, "btf_vmlinux_value_type_id": value_type, "btf_fd": btf.raw}
        commands.map_create(MapCreateAttr(**ops)).close()
        if attach_probes.struct_ops_link():  # BPF_F_LINK (6.4): the map is registered through a link
            commands.map_create(MapCreateAttr(**ops, map_flags=MapFlags.LINK)).close()
        else:  # a kernel before it refuses the flag
            with pytest.raises(SyscallError) as refused:
                commands.map_create(MapCreateAttr(**ops, map_flags=MapFlags.LINK))
            assert refused.value.errno == errno.EINVAL
    assert attach_probes.struct_ops().supported  # what was just done


def test_closed_fd_cannot_be_used() -> None:
    with new_map() as m:
        pass
    with pytest.raises(StateError):
        _ = m.raw


def _steps_per_second_while(work: Callable[[], None]) -> float:
    """How fast this thread counts while another thread runs ``work``."""
    started, done = threading.Event(), threading.Event()

    def run() -> None:
        started.set()
        try:
            work()
        finally:
            done.set()

    worker = threading.Thread(target=run)
    t0 = time.perf_counter()  # from before the start: time the other thread keeps the GIL counts too
    worker.start()
    started.wait()
    steps = 0
    while not done.is_set():
        steps += 1
    elapsed = time.perf_counter() - t0
    worker.join()
    return steps / elapsed


def test_python_keeps_running_while_a_thread_verifies() -> None:
    """bpf(2) drops the GIL: while one thread is inside a long BPF_PROG_LOAD, another runs Python.

    A functional check, not a speed-up ratio (docs/benchmarks.md has that): the
    counting rate during verification is compared with the rate while the other
    thread sleeps (which surely releases the GIL). A call holding the GIL would
    leave the counter almost still (measured with a GIL-holding call: about 2%).
    """
    prog = busy_program(400_000)

    def verify() -> None:
        trial = load(ProgType.SOCKET_FILTER, prog)
        assert trial.ok, trial.result
        trial.close()

    sleeping = _steps_per_second_while(lambda: time.sleep(0.3))
    verifying = _steps_per_second_while(verify)
    assert verifying > 0.2 * sleeping, f"{verifying:.0f} steps/s while verifying vs {sleeping:.0f} while sleeping"


@pytest.mark.needs_clang
@pytest.mark.needs_llvm_objcopy
@pytest.mark.needs_bpftool
def test_clang_fixture_runs_and_matches_libbpf_tag(no_fd_leak: None) -> None:
    obj = bpfbuild.build("arith")
    code = bpfbuild.section_bytes(obj, "xdp")
    assert encode(decode(code, section="xdp")) == code
    assert len(code) % 8 == 0
    assert code
    buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    from dynbpf._sys.attrs import ProgLoadAttr

    attr = ProgLoadAttr(
        prog_type=ProgType.XDP,
        insn_cnt=len(code) // 8,
        insns=ctypes.addressof(buf),
        license=ctypes.addressof(lic),
        expected_attach_type=AttachType.XDP,
        prog_name=b"xdp_len_mod",
    )
    with commands.prog_load(attr) as p:
        assert commands.prog_test_run(p.raw, data_in=b"\0" * 14).retval == 2  # 0b1110: three bits -> PASS
        assert commands.prog_test_run(p.raw, data_in=b"\0" * 16).retval == 1  # 0b10000: one bit -> DROP
        ours = bytes(commands.prog_info(p.raw).tag).hex()

    pin = f"/sys/fs/bpf/dynbpf-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["bpftool", "prog", "load", str(obj), pin], check=True, capture_output=True)
    try:
        shown = json.loads(
            subprocess.run(
                ["bpftool", "prog", "show", "pinned", pin, "-j"], check=True, capture_output=True, text=True
            ).stdout
        )
    finally:
        os.unlink(pin)
    assert shown["tag"] == ours
