"""struct_ops end to end on the real kernel: a BPF TCP congestion control registered, used, re-registered, gone.

Registration is global kernel state: each test registers under a name of its
own (``tcp_congestion_ops.name``), so tests running at once never collide, and
checks in /proc/sys/net/ipv4/tcp_available_congestion_control that the name
comes and goes.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import dynbpf
from dynbpf import ProgramState
from dynbpf._probes import attach as attach_probes
from dynbpf._sys import commands
from dynbpf._sys.constants import LinkType, MapType
from dynbpf.errors import AttachError, KernelUnsupported, NotFound, StateError
from tests import bpfbuild
from tests.bpfbuild import build
from tests.helpers import kernel_lacks

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

AVAILABLE = "/proc/sys/net/ipv4/tcp_available_congestion_control"


@pytest.fixture(autouse=True)
def struct_ops_supported() -> None:
    """Every kernel of the matrix (6.1 on) has struct_ops and tcp_congestion_ops; a kernel without must say so."""
    support = attach_probes.struct_ops()
    assert support.supported, support  # not a skip: the suite's kernels all have it


def available() -> list[str]:
    with open(AVAILABLE) as f:
        return f.read().split()


def unique_name() -> str:
    return f"dyn_{uuid.uuid4().hex[:10]}"  # TCP_CA_NAME_MAX is 16 with the NUL


def send_over(cc: str, size: int = 4 << 20) -> None:
    """A loopback TCP connection using congestion control ``cc``, carrying ``size`` bytes."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.socket()
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
            client.connect(server.getsockname())
            peer, _ = server.accept()
            received = 0

            def drain() -> None:
                nonlocal received
                with peer:
                    while chunk := peer.recv(1 << 16):
                        received += len(chunk)

            reader = threading.Thread(target=drain)
            reader.start()
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0") == cc.encode()
            client.sendall(bytes(size))
            client.shutdown(socket.SHUT_WR)
            reader.join(timeout=60)
            assert received == size
        finally:
            client.close()


@contextmanager
def opened() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("struct_ops")) as coll:
        yield coll


# --- registration by map update (.struct_ops) ------------------------------------------------


def test_congestion_control_registers_runs_on_a_connection_and_unregisters(no_fd_leak: None) -> None:
    name = unique_name()
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        assert ops.name == "dynbpf_reno"
        assert ops.struct == "tcp_congestion_ops"
        assert not ops.uses_link
        assert ops.map_id is None  # not created at open
        ops.name = name
        link = ops.attach()  # loads the four member programs
        assert isinstance(link, dynbpf.StructOpsLink)
        assert ops.attached
        assert link.struct_ops is ops
        assert name in available()
        assert {m: p.name for m, p in ops.programs.items()} == {
            "init": "dyn_init",
            "ssthresh": "dyn_ssthresh",
            "cong_avoid": "dyn_cong_avoid",
            "undo_cwnd": "dyn_undo_cwnd",
        }
        assert all(p.state == ProgramState.ATTACHED for p in ops.programs.values())
        assert ops.map_id is not None
        with commands.fd_by_id(commands.ObjKind.MAP, ops.map_id) as map_fd:
            info = commands.map_info(map_fd.raw)
        assert info.btf_vmlinux_value_type_id != 0
        assert info.type == MapType.STRUCT_OPS
        send_over(name)
        assert coll.bss.inits >= 1
        assert coll.bss.acks >= 1
        link.detach()
        assert name not in available()
        assert not ops.attached
        assert all(p.state == ProgramState.LOADED for p in ops.programs.values())
        again = ops.attach()  # a map takes one value: a fresh one registers again
        assert name in available()
        again.detach()
    assert name not in available()


def test_close_unregisters(no_fd_leak: None) -> None:
    name = unique_name()
    with opened() as coll:
        coll.struct_ops["dynbpf_reno"].name = name
        coll.struct_ops["dynbpf_reno"].attach()
        assert name in available()
    assert name not in available()


def test_reload_of_a_member_re_registers_under_the_same_link(no_fd_leak: None) -> None:
    name = unique_name()
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        ops.name = name
        link = ops.attach()
        before, prog_before = ops.map_id, coll.programs["dyn_cong_avoid"].id
        coll.programs["dyn_cong_avoid"].reload()
        assert coll.programs["dyn_cong_avoid"].id != prog_before
        assert ops.attached
        assert ops.link is link
        assert not link.closed
        assert ops.map_id != before
        assert name in available()
        acks = coll.bss.acks
        send_over(name)
        assert coll.bss.acks > acks  # the new program runs
        link.detach()
        assert name not in available()


def test_unloading_a_member_unregisters(no_fd_leak: None) -> None:
    name = unique_name()
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        ops.name = name
        link = ops.attach()
        coll.programs["dyn_ssthresh"].unload()
        assert link.closed
        assert not ops.attached
        assert name not in available()
        ops.attach()  # loads it again
        assert coll.programs["dyn_ssthresh"].loaded
        assert name in available()
        coll.programs["dyn_init"].detach()  # detaching a member program unregisters its struct_ops
        assert not ops.attached
        assert name not in available()


# --- the shadow: data members set from Python before registration --------------------------------


def test_members_read_and_set_before_registration(no_fd_leak: None) -> None:
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        assert ops.flags == 0
        assert ops.name == "dynbpf_reno"
        assert ops["name"] == "dynbpf_reno"
        assert ops.init is coll.programs["dyn_init"]
        assert ops.release is None
        assert "flags" in dir(ops)
        assert "cong_avoid" in ops.members
        with pytest.raises(AttributeError, match="no member 'nmae'"):
            ops.nmae = "x"
        with pytest.raises(NotFound, match="did you mean 'name'"):
            _ = ops["nmae"]
        with pytest.raises(AttributeError, match="cannot be set"):
            ops.map_name = "x"  # type: ignore[misc]
        with pytest.raises(NotFound):
            coll.struct_ops["dynbpf_rneo"]
        assert list(coll.struct_ops) == ["dynbpf_reno", "dynbpf_reno_link"]
        with pytest.raises(StateError, match=r"coll\.struct_ops"):
            coll.maps["dynbpf_reno"]


def test_values_the_kernel_refuses_name_the_member(no_fd_leak: None) -> None:
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        name = unique_name()
        ops.name = name
        ops.flags = 0x100  # not a TCP_CONG_* flag: the kernel refuses it
        # trial maps find the member where struct_ops links exist (6.4); before, the kernel only says EINVAL
        named = "refused member 'flags'" if attach_probes.struct_ops_link() else "refused the struct as a whole"
        with pytest.raises(AttachError, match=named) as refused:
            ops.attach()
        assert "dynbpf_reno" in str(refused.value)
        assert not any(p.loaded for p in coll.programs.values())  # what the refused attach loaded went again
        assert not ops.attached
        ops.flags = 0
        ops.ssthresh = None  # the kernel requires it
        with pytest.raises(AttachError, match=r"may be unset \(unset: [^)]*\bssthresh\b"):
            ops.attach()
        with pytest.raises(TypeError, match="takes a Program of this collection or None"):
            ops.ssthresh = 3
        with pytest.raises(NotFound, match="dyn_ssthreshh"):
            ops.ssthresh = "dyn_ssthreshh"  # a program's name works too; an unknown one is NotFound
        ops.ssthresh = coll.programs["dyn_undo_cwnd"]  # a program made for another member
        with pytest.raises(AttachError, match="made for another member than 'ssthresh'"):
            ops.attach()
        ops.ssthresh = coll.programs["dyn_ssthresh"]
        ops.name = "reno"  # the kernel's own
        with pytest.raises(AttachError, match=r"same identity already.*'reno'"):
            ops.attach()
        assert "reno" in available()  # untouched
        ops.name = name
        link = ops.attach()
        assert name in available()
        with pytest.raises(StateError, match="detach"):
            ops.flags = 1
        with pytest.raises(AttachError, match="map update"):
            link.pin("/sys/fs/bpf/dynbpf_never")
        with pytest.raises(AttachError, match="map update"):
            link.update(coll.struct_ops["dynbpf_reno_link"])
        ops.detach()
        assert name not in available()


OTHER_LAYOUT = r"""
#define tcp_congestion_ops tcp_congestion_ops___vmlinux /* vmlinux.h's, out of the way of ours */
#include "vmlinux.h"
#undef tcp_congestion_ops
#include <bpf/bpf_helpers.h>
/* The kernel's struct as another build may see it: fewer members, in another order, and one the running
 * kernel does not have. Members are matched by name. */
struct tcp_congestion_ops {
	char name[16];
	u32 (*undo_cwnd)(struct sock *sk);
	void (*cong_avoid)(struct sock *sk, u32 ack, u32 acked);
	u32 (*ssthresh)(struct sock *sk);
	u32 dynbpf_extra;
};
unsigned long long calls;
SEC("struct_ops/o_ssthresh") u32 o_ssthresh(unsigned long long *ctx) { return 2; }
SEC("struct_ops/o_cong_avoid") void o_cong_avoid(unsigned long long *ctx) { __sync_fetch_and_add(&calls, 1); }
SEC("struct_ops/o_undo_cwnd") u32 o_undo_cwnd(unsigned long long *ctx) { return 10; }
SEC(".struct_ops") struct tcp_congestion_ops dynbpf_other = {
	.name = "dynbpf_other",
	.undo_cwnd = (void *)o_undo_cwnd,
	.cong_avoid = (void *)o_cong_avoid,
	.ssthresh = (void *)o_ssthresh,
	.dynbpf_extra = 1,
};
char LICENSE[] SEC("license") = "GPL";
"""


def test_members_are_matched_by_name_and_one_the_kernel_lacks_is_named(no_fd_leak: None) -> None:
    with dynbpf.open(bpfbuild.compile_source(OTHER_LAYOUT, "struct_ops_layout")) as coll:
        ops = coll.struct_ops["dynbpf_other"]
        assert ops.members == ("name", "undo_cwnd", "cong_avoid", "ssthresh", "dynbpf_extra")
        with pytest.raises(KernelUnsupported, match="member 'dynbpf_extra' of struct tcp_congestion_ops"):
            ops.attach()
        assert not any(p.loaded for p in coll.programs.values())  # refused before anything was loaded
        assert not ops.attached
        ops.dynbpf_extra = 0  # left zero, it is skipped, as libbpf does
        name = ops.name = unique_name()
        with ops.attach():
            assert name in available()
            send_over(name)
            assert coll.bss.calls >= 1
        assert name not in available()


# --- registration through a link (.struct_ops.link) ------------------------------------------------


def test_link_registration_detach_and_update(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_link()
    name = unique_name()
    with opened() as coll, opened() as other:
        ops = coll.struct_ops["dynbpf_reno_link"]
        if kernel_lacks(support, ops.attach):  # 6.4+
            assert not any(p.loaded for p in coll.programs.values())  # refused before anything loaded
            return
        assert ops.uses_link
        assert ops.name == "dynbpf_reno_lnk"
        ops.name = name
        link = ops.attach()
        assert link.facts().link_type == LinkType.STRUCT_OPS
        assert name in available()
        first_map = ops.map_id
        link.detach()
        assert name not in available()
        link = ops.attach()  # the written map is registered again through a new link
        assert ops.map_id == first_map
        assert name in available()

        replacement = other.struct_ops["dynbpf_reno_link"]
        replacement.name = name  # tcp_congestion_ops keeps its name across an update
        link.update(replacement)
        assert link.struct_ops is replacement
        assert replacement.attached
        assert not ops.attached
        assert name in available()
        send_over(name)
        assert other.bss.link_acks >= 1  # the replacement's programs run
        acks = coll.bss.link_acks
        send_over(name)
        assert coll.bss.link_acks == acks  # the replaced ones no longer do

        stranger = coll.struct_ops["dynbpf_reno_link"]  # not registered now; its name differs from the link's
        stranger.name = unique_name()
        with pytest.raises(AttachError, match="same identity"):
            link.update(stranger)
        assert link.struct_ops is replacement
        assert name in available()

        other.programs["dyn_link_cong_avoid"].reload()  # re-registers: the link is updated in place
        assert replacement.attached
        assert name in available()
        acks = other.bss.link_acks
        send_over(name)
        assert other.bss.link_acks > acks
        link.detach()
        assert name not in available()
        assert not replacement.attached


# --- concurrency -------------------------------------------------------------------------------


def test_a_second_attach_losing_the_race_leaves_the_winner_registered(no_fd_leak: None) -> None:
    """The loser of two attaches loaded a member program itself; its rollback must not unregister the winner."""
    name = unique_name()
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        ops.name = name
        init = coll.programs["dyn_init"]
        real_load = init.load
        loaded_by_loser = threading.Event()
        winner_done = threading.Event()

        def load_then_wait(**options: int) -> bool:  # the hook: the loser pauses after its own load
            got = real_load(**options)
            if threading.current_thread().name == "loser":
                loaded_by_loser.set()
                assert winner_done.wait(timeout=60)
            return got

        init.load = load_then_wait  # type: ignore[method-assign]
        refused: list[BaseException] = []

        def lose() -> None:
            try:
                ops.attach()
            except StateError as e:
                refused.append(e)

        loser = threading.Thread(target=lose, name="loser")
        loser.start()
        assert loaded_by_loser.wait(timeout=60)
        link = ops.attach()  # the winner: dyn_init is loaded (by the loser), it loads the rest and registers
        winner_done.set()
        loser.join(timeout=60)
        assert len(refused) == 1
        assert "registered already" in str(refused[0])
        assert ops.link is link
        assert not link.closed
        assert name in available()  # the loser's rollback did not unregister the winner
        assert init.loaded
        send_over(name)
    assert name not in available()


DETACH_WHILE_REFRESHING = r"""
import sys, threading
import dynbpf
from dynbpf._runtime.struct_ops import StructOps

with dynbpf.open(sys.argv[1]) as coll:
    ops = coll.struct_ops["dynbpf_reno"]
    ops.name = sys.argv[2]
    link = ops.attach()
    detaching, refreshing = threading.Event(), threading.Event()
    real_close, real_value = link._close, StructOps._value

    def close_slowly():  # the hook: detach holds the link's lock here until the refresh has begun
        detaching.set()
        refreshing.wait(timeout=3)
        real_close()

    def value_signalling(self):
        refreshing.set()
        return real_value(self)

    link._close = close_slowly
    ops.__dict__["_value"] = lambda: value_signalling(ops)
    detacher = threading.Thread(target=link.detach)
    detacher.start()
    assert detaching.wait(timeout=30)
    coll.programs["dyn_cong_avoid"].reload()  # refreshes the registration: the struct_ops lock, then the link's
    detacher.join()
    assert link.closed and not ops.attached
print("done")
"""


def test_detaching_while_a_reload_re_registers_does_not_deadlock(tmp_path: object) -> None:
    """Legacy .struct_ops: a reload re-registering and a detach at once take the two locks in one order."""
    import os
    import subprocess
    import sys

    src = os.path.dirname(os.path.dirname(dynbpf.__file__))
    env = {**os.environ, "PYTHONPATH": src}
    name = unique_name()
    try:
        run = subprocess.run(
            [sys.executable, "-c", DETACH_WHILE_REFRESHING, str(build("struct_ops")), name],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: a reload re-registering and a detach of the registration hung each other")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "done"
    assert name not in available()


def test_attaching_while_a_member_program_reloads_registers(no_fd_leak: None) -> None:
    """A reload switching a member program never shows it unloaded to a registration made meanwhile."""
    name = unique_name()
    with opened() as coll:
        ops = coll.struct_ops["dynbpf_reno"]
        ops.name = name
        member = coll.programs["dyn_cong_avoid"]
        member.load()
        real_install = member._install
        switching, attached = threading.Event(), threading.Event()

        def install_slowly(loaded: object) -> None:  # the hook: the switch pauses in the middle
            switching.set()
            attached.wait(timeout=3)
            real_install(loaded)  # type: ignore[arg-type]

        member._install = install_slowly  # type: ignore[method-assign]
        failures: list[BaseException] = []

        def reload() -> None:
            try:
                member.reload()
            except BaseException as e:  # reported below
                failures.append(e)

        thread = threading.Thread(target=reload)
        real_value = ops._value

        def value_once_reloading() -> object:  # the hook: attach has loaded its programs; a reload starts now
            del ops.__dict__["_value"]
            thread.start()
            assert switching.wait(timeout=60)
            return real_value()

        ops.__dict__["_value"] = value_once_reloading
        try:
            link = ops.attach()  # with the program there is; the reload then registers its new one
        finally:
            attached.set()
            thread.join(timeout=60)
        assert not failures
        assert ops.link is link
        assert name in available()
        acks = coll.bss.acks
        send_over(name)
        assert coll.bss.acks > acks


def test_close_finishes_the_clean_up_when_an_unregistration_fails(no_fd_leak: None) -> None:
    """One struct_ops failing to unregister does not keep close() from the rest; the error comes after."""
    import errno

    from dynbpf.errors import SyscallError

    legacy_name, link_name = unique_name(), unique_name()
    with opened() as coll:
        if kernel_lacks(attach_probes.struct_ops_link(), coll.struct_ops["dynbpf_reno_link"].attach):
            return  # a kernel without struct_ops links (before 6.4) registers only one struct_ops of the fixture
    coll = dynbpf.open(build("struct_ops"))
    try:
        legacy, linked = coll.struct_ops["dynbpf_reno"], coll.struct_ops["dynbpf_reno_link"]
        legacy.name, linked.name = legacy_name, link_name
        failing = legacy.attach()
        linked.attach()
        real_close = failing._close

        def close_then_fail() -> None:  # the hook: the fd closes (as after a refused map delete), the call fails
            real_close()
            raise SyscallError("BPF_MAP_DELETE_ELEM", errno.EIO)

        failing._close = close_then_fail  # type: ignore[method-assign]
        assert next(iter(coll._struct_ops.values())) is legacy  # the failing one is closed first
    except BaseException:
        coll.close()
        raise
    with pytest.raises(SyscallError, match="EIO"):
        coll.close()
    assert coll.closed
    assert not linked.attached
    assert link_name not in available()  # the struct_ops after the failing one were unregistered too
    assert legacy_name not in available()
    assert not any(p.loaded for p in coll.programs.values())
    assert legacy.map_id is None
    assert linked.map_id is None
    coll.close()  # idempotent


def test_a_refused_link_update_leaves_no_member_program_held_by_trial_maps(no_fd_leak: None) -> None:
    """Trial maps (naming the refused member) mark member programs ambiguous where the kernel has
    BPF_PROG_ASSOC_STRUCT_OPS: whichever step wrote the value, they are loaded anew after."""
    name = unique_name()
    with opened() as coll, opened() as other:
        ops = coll.struct_ops["dynbpf_reno_link"]
        if kernel_lacks(attach_probes.struct_ops_link(), ops.attach):
            return
        ops.name = name
        link = ops.attach()
        replacement = other.struct_ops["dynbpf_reno_link"]
        replacement.name = name
        replacement.flags = 0x100  # not a TCP_CONG_* flag: the kernel refuses it
        for program in replacement.programs.values():
            program.load()
        before = {n: p.id for n, p in replacement.programs.items()}
        with pytest.raises(AttachError, match="refused member 'flags'"):
            link.update(replacement)
        after = {n: p.id for n, p in replacement.programs.items()}
        if attach_probes.struct_ops_assoc():
            assert all(after[n] != before[n] for n in before)  # loaded anew: no trial map held these
        else:
            assert after == before  # trial maps mark nothing on this kernel: nothing reloaded
        assert link.struct_ops is ops
        assert name in available()
        link.detach()
