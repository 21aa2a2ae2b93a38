"""dynbpf._attach on the real kernel: every kind this kernel runs fires, stops on detach, and fails clearly.

Each test attaches a program of tests/bpf/attach.bpf.c, triggers its hook from
this process (syscalls filtered by our pid, libc calls, a test binary, the
cpu-clock, an iterator read), sees the program's .bss counter move, detaches
and sees it stop.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import dynbpf
from dynbpf import ProgramState
from dynbpf._asm.insn import return_imm
from dynbpf._attach import IoctlPerfLink, IterLink, Link, LinkGroup, attach
from dynbpf._attach.linkinfo import FIELDS, UNION
from dynbpf._attach.perf_event import online_cpus
from dynbpf._attach.perf_link import link_perf_event
from dynbpf._attach.request import Request
from dynbpf._attach.symbols import function_offset
from dynbpf._elf.sections import program_kind
from dynbpf._maps import Variables
from dynbpf._probes import attach as attach_features
from dynbpf._probes import kernel as kernel_features
from dynbpf._probes.result import Support
from dynbpf._probes.trial import load as load_trial
from dynbpf._sys import attrs, commands, fs, perf
from dynbpf._sys.constants import ProgType
from dynbpf.errors import AttachError, DynbpfError, KernelUnsupported, StateError, VerifierError
from tests import kernel_state
from tests.bpfbuild import FIXTURES, build
from tests.helpers import (
    ctypes_offsets,
    kernel_lacks,
    kernel_offsets,
    kernel_type,
    perf_link_details,
    private_cgroup,
    reported_kind,
)

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

PIN_ROOT = "/sys/fs/bpf"
TARGET_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long sink;

__attribute__((noinline)) long dynbpf_target(long x)
{
	sink += x;
	return 2 * x + 1;
}

int main(int argc, char **argv)
{
	long n = atol(argv[1]), total = 0;
	char go;

	if (read(0, &go, 1) != 1) /* the test attaches first, then lets us run */
		return 1;
	for (long i = 1; i <= n; i++)
		total += dynbpf_target(i);
	printf("%ld\n", total);
	return 0;
}
"""


@contextmanager
def opened() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("attach"), constants={"target_tgid": os.getpid()}) as coll:
        yield coll


def loaded(coll: dynbpf.Collection, name: str) -> dynbpf.Program:
    prog = coll.programs[name]
    prog.load()
    return prog


def count(coll: dynbpf.Collection, counter: str, trigger: Callable[[], object], times: int = 5) -> int:
    """How much ``counter`` moves while ``trigger`` runs ``times`` times."""
    before = coll.bss[counter]
    for _ in range(times):
        trigger()
    return int(coll.bss[counter] - before)


def pin_path(name: str) -> str:
    return fs.pin_path(PIN_ROOT, f"dynbpf-attach-test-{os.getpid()}-{name}")


@pytest.fixture(scope="module")
def target_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small user-space program whose dynbpf_target(i) is called argv[1] times once stdin says go."""
    d = tmp_path_factory.mktemp("uprobe-target")
    (d / "target.c").write_text(TARGET_C)
    subprocess.run(["clang", "-O1", "-o", str(d / "target"), str(d / "target.c")], check=True)
    return d / "target"


def run_target(binary: Path, calls: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(binary), str(calls)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> int:
    out, _ = proc.communicate(b"g", timeout=30)
    assert proc.returncode == 0
    return int(out)


# --- tracepoints ---------------------------------------------------------------------------


def test_tracepoint_fires_until_detached(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "tp_getppid")
        link = prog.attach()
        assert (link.kind, link.description) == ("tracepoint", "tracepoint syscalls/sys_enter_getppid")
        assert prog.state is ProgramState.ATTACHED
        assert prog.links == (link,)
        assert link.facts().kind == reported_kind("tracepoint")
        assert link.program_id == prog.id
        assert count(coll, "tp_hits", os.getppid) == 5
        link.detach()
        link.detach()  # idempotent
        assert link.closed
        assert prog.state is ProgramState.LOADED
        assert prog.links == ()
        assert count(coll, "tp_hits", os.getppid) == 0
        with pytest.raises(StateError, match="detached"):
            _ = link.fd


@pytest.mark.parametrize(
    "target",
    [{"category": "syscalls", "event": "sys_enter_getuid"}, {"tracepoint": "syscalls/sys_enter_getuid"}],
    ids=["category+event", "tracepoint"],
)
def test_tracepoint_target_and_cookie_from_keywords(target: dict[str, str], no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "tp_any")
        with prog.attach(**target, cookie=0xC0FFEE) as link:
            assert link.description == "tracepoint syscalls/sys_enter_getuid"
            assert count(coll, "tp_any_hits", os.getuid, 3) == 3
            assert coll.bss.tp_cookie == 0xC0FFEE
        assert count(coll, "tp_any_hits", os.getuid, 3) == 0


def test_missing_tracepoint_names_program_kind_and_path(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "tp_any")
        root = fs.tracefs_root()
        with pytest.raises(AttachError) as exc:
            prog.attach(category="syscalls", event="sys_enter_nope")
        assert str(exc.value) == (
            "cannot attach program 'tp_any' (tracepoint syscalls/sys_enter_nope): no tracepoint "
            f"syscalls/sys_enter_nope on this kernel ({root}/events/syscalls/sys_enter_nope/id does not exist)"
        )
        with pytest.raises(AttachError, match="no tracepoint given"):
            prog.attach()
        with pytest.raises(TypeError, match=r"unexpected target arguments nmae \(accepted: tracepoint, category"):
            prog.attach(nmae="sys_enter_getuid")
        assert prog.state is ProgramState.LOADED


def test_failed_link_closes_its_perf_event(no_fd_leak: None) -> None:
    """The perf event is opened before the link: when the kernel refuses the link, nothing stays open."""
    with load_trial(ProgType.SOCKET_FILTER, return_imm(0)) as wrong:
        assert wrong.fd is not None
        with pytest.raises(AttachError, match=r"\(tracepoint syscalls/sys_enter_getppid\): BPF_LINK_CREATE failed"):
            attach(program_kind("tp/syscalls/sys_enter_getppid"), wrong.fd.raw, name="socket_prog")


def test_perf_links_are_used_where_the_probe_finds_them(no_fd_leak: None) -> None:
    """A perf link where the kernel has them (5.15 on), else the perf event's ioctl: the probe says which."""
    with opened() as coll:
        link = loaded(coll, "tp_getppid").attach()
        if kernel_features.perf_link():
            assert type(link) is Link
            assert commands.link_info(link.fd).type == 7  # BPF_LINK_TYPE_PERF_EVENT
        else:
            assert type(link) is IoctlPerfLink
        assert count(coll, "tp_hits", os.getppid) == 5
        link.detach()


def test_ioctl_attachment_for_kernels_without_perf_links(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "tp_getppid")
        tp_id = fs.tracepoint_id("syscalls", "sys_enter_getppid")
        event = perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=-1, cpu=0)
        request = Request("tp_getppid", "tracepoint", "syscalls/sys_enter_getppid")
        link = link_perf_event(request, prog.fd, event, use_link=False)
        assert isinstance(link, IoctlPerfLink)
        assert link.fd == event.raw
        assert count(coll, "tp_hits", os.getppid) == 5
        with pytest.raises(AttachError, match="PERF_EVENT_IOC_SET_BPF"):
            link.pin(pin_path("ioctl"))
        with pytest.raises(AttachError, match="sets a program once"):
            link.update(prog)
        with pytest.raises(AttachError, match="a cookie needs a perf link"):
            link_perf_event(
                request,
                prog.fd,
                perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=-1, cpu=0),
                cookie=1,
                use_link=False,
            )
        link.detach()
        assert count(coll, "tp_hits", os.getppid) == 0


# --- raw tracepoints and tp_btf ----------------------------------------------------------------


def test_raw_tracepoint(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "raw_getpgid")
        link = prog.attach()
        assert (link.kind, link.description, link.facts().kind) == ("raw_tp", "raw_tp sys_enter", "raw_tp")
        assert count(coll, "raw_hits", lambda: os.getpgid(0)) == 5
        link.detach()
        assert count(coll, "raw_hits", lambda: os.getpgid(0)) == 0
        with pytest.raises(AttachError, match="no raw tracepoint 'sys_enter_nope' in the kernel or its modules"):
            prog.attach(tracepoint="sys_enter_nope")
        again = prog.attach()
        assert prog.state == ProgramState.ATTACHED
        again.close()  # close() is detach(), as for the link's fd
        assert again.closed
        assert prog.state == ProgramState.LOADED
        assert count(coll, "raw_hits", lambda: os.getpgid(0)) == 0


def test_tp_btf(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "btf_getgid")
        link = prog.attach()
        assert link.kind == "tp_btf"
        assert link.description.startswith("tp_btf sys_enter (BTF id ")
        assert link.facts().kind == "tp_btf"  # a raw tracepoint link in the kernel, told apart by the program
        assert count(coll, "btf_hits", os.getgid) == 5
        link.detach()
        assert count(coll, "btf_hits", os.getgid) == 0
        with pytest.raises(TypeError, match=r"accepted: cookie"):
            prog.attach(tracepoint="sys_exit")


def test_update_is_refused_where_the_kernel_cannot_swap_programs(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "raw_getpgid")
        with prog.attach() as link, pytest.raises(AttachError, match="cannot swap the program of a raw_tracepoint"):
            link.update(prog)
        refusal = "perf_event link" if kernel_features.perf_link() else "sets a program once"
        with loaded(coll, "tp_getppid").attach() as link, pytest.raises(AttachError, match=refusal):
            link.update(coll.programs["tp_getppid"])


# --- uprobes -------------------------------------------------------------------------------------


def test_uprobe_on_libc_from_the_section(no_fd_leak: None) -> None:
    """SEC("uprobe/libc.so.6:getpid"): the library is found like the dynamic linker would, the symbol in .dynsym."""
    libc = ctypes.CDLL("libc.so.6")
    with opened() as coll:
        prog = loaded(coll, "libc_getpid")
        link = prog.attach()
        assert link.kind == "uprobe"
        assert link.description.startswith("uprobe libc.so.6:getpid (/")
        assert count(coll, "libc_hits", os.getpid) == 5
        assert count(coll, "libc_hits", libc.getpid, 3) == 3
        link.detach()
        assert count(coll, "libc_hits", libc.getpid) == 0


def test_uretprobe_sees_the_return_value(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "uret_any")
        link = prog.attach(path="libc.so.6", symbol="getpid", pid=os.getpid())
        assert link.kind == "uretprobe"
        assert f"pid {os.getpid()}" in link.description
        assert link.facts().kind == reported_kind("uretprobe")
        assert count(coll, "uret_hits", os.getpid, 4) == 4
        assert coll.bss.uret_last == os.getpid()
        link.detach()
        assert count(coll, "uret_hits", os.getpid) == 0


def test_uprobe_on_a_test_binary_only_fires_for_its_pid(target_binary: Path, no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "up_any")
        traced, other = run_target(target_binary, 5), run_target(target_binary, 7)
        try:
            link = prog.attach(path=str(target_binary), symbol="dynbpf_target", pid=traced.pid)
            assert finish(other) == 7 * 8 + 7
            assert finish(traced) == 5 * 6 + 5
        finally:
            for proc in (traced, other):
                proc.kill()
                proc.wait()
        assert coll.bss.up_hits == 5  # the other process's 7 calls were not traced
        assert coll.bss.up_last_arg == 5
        link.detach()
        assert finish(run_target(target_binary, 3)) == 15
        assert coll.bss.up_hits == 5


def test_uprobe_every_process_by_file_offset(target_binary: Path, no_fd_leak: None) -> None:
    offset = function_offset(str(target_binary), "dynbpf_target").offset
    with opened() as coll:
        prog = loaded(coll, "uret_any")
        with prog.attach(path=str(target_binary), offset=offset) as link:
            assert link.description == f"uretprobe {target_binary}:{offset:#x}"
            assert finish(run_target(target_binary, 2)) + finish(run_target(target_binary, 3)) == 8 + 15
            assert coll.bss.uret_hits == 5
            assert coll.bss.uret_last == 2 * 3 + 1
        assert finish(run_target(target_binary, 1)) == 3
        assert coll.bss.uret_hits == 5


def test_uprobe_failures_name_the_target(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "up_any")
        with pytest.raises(AttachError, match=r"\(uprobe libc.so.6:no_such_function\): no function 'no_such_function'"):
            prog.attach(path="libc.so.6", symbol="no_such_function")
        with pytest.raises(AttachError, match=r"no libdynbpf-nope.so.1 built for this machine in .*ld.so.cache"):
            prog.attach(path="libdynbpf-nope.so.1", symbol="f")
        with pytest.raises(AttachError, match=r"/nope/bin does not exist"):
            prog.attach(path="/nope/bin", symbol="f")
        with pytest.raises(AttachError, match="no target given"):
            prog.attach()
        with pytest.raises(AttachError, match=r"pid=0 is not a process id"):
            prog.attach(path="libc.so.6", symbol="getpid", pid=0)
        assert prog.state is ProgramState.LOADED


# --- perf_event ----------------------------------------------------------------------------------


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_perf_event_cpu_clock_on_every_cpu(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "on_clock")
        group = prog.attach()
        assert isinstance(group, LinkGroup)
        assert len(group.links) == len(online_cpus(Request("on_clock", "perf_event")))
        assert group.description == f"perf_event cpu-clock (period 1000000) on {len(group.links)} CPUs"
        spin(0.05)
        assert coll.bss.clock_hits > 0
        group.detach()
        assert all(link.closed for link in group.links)
        time.sleep(0.01)
        settled = coll.bss.clock_hits
        spin(0.05)
        assert coll.bss.clock_hits == settled


def test_perf_event_on_a_given_event(no_fd_leak: None) -> None:
    attr = perf.PerfEventAttr(type=perf.PERF_TYPE_SOFTWARE, config=perf.PERF_COUNT_SW_CPU_CLOCK, sample_period=100_000)
    with opened() as coll, perf.perf_event_open(attr, pid=0, cpu=-1) as event:
        prog = loaded(coll, "on_clock")
        link = prog.attach(perf_event_fd=event)
        assert type(link) is Link
        assert link.facts().kind == "perf_event"
        spin(0.05)
        assert coll.bss.clock_hits > 0
        link.detach()
        assert not event.closed  # the caller's fd was duplicated, not taken
        settled = coll.bss.clock_hits
        spin(0.05)
        assert coll.bss.clock_hits == settled
        with pytest.raises(AttachError, match="perf_event_fd= names an open event; cpu would describe another"):
            prog.attach(perf_event_fd=event, cpu=0)


def test_perf_event_on_one_cpu_and_by_frequency(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "on_clock")
        with prog.attach(cpu=0, sample_freq=1000) as link:
            assert type(link) is Link
            assert link.description == "perf_event cpu-clock (1000 Hz) on cpu 0"
        with pytest.raises(AttachError, match="not both"):
            prog.attach(sample_freq=10, sample_period=10)


# --- iterators -----------------------------------------------------------------------------------


def test_iter_reads_a_full_pass_each_time(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = loaded(coll, "task_lines")
        link = prog.attach()
        assert isinstance(link, IterLink)
        assert link.kind == "iter"
        text = link.read().decode()
        me = f"{os.getpid()} "
        assert any(line.startswith(me) for line in text.splitlines()), text[:500]
        first = coll.bss.iter_hits
        assert first > 0
        link.read()
        assert coll.bss.iter_hits >= 2 * first - 5  # a second pass runs the program again (tasks come and go)
        link.detach()
        with pytest.raises(StateError, match="detached"):
            link.read()


def test_iter_narrowed_to_one_task(no_fd_leak: None) -> None:
    with opened() as coll, loaded(coll, "task_pids").attach(tid=os.getpid()) as link:
        assert link.description.endswith(f"(tid {os.getpid()})")
        assert link.read() == f"pid={os.getpid()}\n".encode()


def test_iter_over_map_elements(no_fd_leak: None) -> None:
    """Where the kernel refuses this iterator target (a probe says so), the load says why; else it walks the map."""
    probe = attach_features.iterator_target("bpf_map_elem")
    with opened() as coll:
        if not probe.supported:
            with pytest.raises(dynbpf.VerifierError, match="refuses iterator programs over bpf_map_elem") as e:
                coll.programs["number_lines"].load()
            assert probe.how in str(e.value)
            assert coll.programs["number_lines"].state == ProgramState.PREPARED
            assert attach_features.iterator_target("task").supported  # the target, not iterators, is refused
            return
        numbers = coll.maps["numbers"]
        for key in range(1, 4):
            numbers[key] = key * 10
        prog = loaded(coll, "number_lines")
        with pytest.raises(AttachError, match="a bpf_map_elem iterator walks one map: pass map_fd="):
            prog.attach()
        with prog.attach(map_fd=coll.map_fd_number("numbers")) as link:
            assert sorted(link.read().decode().splitlines()) == ["1=10", "2=20", "3=30"]
            assert "(map id " in link.facts().description


def test_iter_update_swaps_the_program_and_moves_the_link(no_fd_leak: None) -> None:
    with opened() as coll:
        lines, pids = loaded(coll, "task_lines"), loaded(coll, "task_pids")
        link = lines.attach()
        events: list[tuple[str, int | None]] = []
        link.add_listener(lambda _link, event, fd: events.append((event, fd)))
        assert not link.read().startswith(b"pid=")
        link.update(pids)
        assert link.read().startswith(b"pid=")
        assert link.program_id == pids.id
        assert events == [("update", pids.fd)]
        assert lines.links == ()
        assert pids.links == (link,)
        assert (lines.state, pids.state) == (ProgramState.LOADED, ProgramState.ATTACHED)
        pids.detach()
        assert events[-1] == ("detach", None)
        assert link.closed


# --- pins ------------------------------------------------------------------------------------------


def test_pin_keeps_the_link_after_detach_until_unpin(tmp_path: Path, no_fd_leak: None) -> None:
    path = pin_path("tp")
    with opened() as coll:
        link = loaded(coll, "tp_getppid").attach()
        with pytest.raises(DynbpfError, match="is not on a BPF filesystem"):
            link.pin(str(tmp_path / "link"))
        assert link.pinned is None
        link.pin(path)
        assert link.pinned == path
        with pytest.raises(StateError, match="already pinned"):
            link.pin(path + "-again")

        reopened = Link.from_pin(path)
        assert reopened.id == link.id
        assert reopened.kind == reported_kind("tracepoint")
        assert reopened.pinned == path
        link.detach()
        assert count(coll, "tp_hits", os.getppid) == 5  # the pin and the reopened fd keep it attached
        reopened.unpin()
        assert not os.path.exists(path)
        assert count(coll, "tp_hits", os.getppid) == 5  # the reopened fd still holds it
        reopened.detach()
        assert count(coll, "tp_hits", os.getppid) == 0
        link.unpin()  # already gone: a no-op


def test_from_pin_refuses_what_is_not_a_link(no_fd_leak: None) -> None:
    path = pin_path("map")
    with opened() as coll:
        commands.obj_pin(coll.map_fd_number("numbers"), path)
        try:
            with pytest.raises(DynbpfError, match="pins a BPF map, not a link"):
                Link.from_pin(path)
        finally:
            os.unlink(path)


def test_link_group_pins_as_a_directory(no_fd_leak: None) -> None:
    path = pin_path("clock")
    with opened() as coll:
        group = loaded(coll, "on_clock").attach()
        assert isinstance(group, LinkGroup)
        group.pin(path)
        names = sorted(os.listdir(path))
        assert names == sorted(f"cpu{n}" for n in map(int, (p.removeprefix("cpu") for p in names)))
        assert len(names) == len(group.links)
        group.detach()
        reopened = Link.from_pin(path)
        assert isinstance(reopened, LinkGroup)
        assert len(reopened.links) == len(names)
        assert reopened.kind == "perf_event"
        reopened.unpin()
        assert not os.path.exists(path)
        reopened.detach()
        settled = coll.bss.clock_hits
        spin(0.05)
        assert coll.bss.clock_hits == settled


CHILD = textwrap.dedent(
    """
    import sys
    import dynbpf
    obj, pin, parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with dynbpf.open(obj, constants={"target_tgid": parent}) as coll:
        prog = coll.programs["tp_getppid"]
        prog.load()
        link = prog.attach()
        link.pin(pin)
        print(link.id, prog.id)
    """
)


def bss_of(prog_id: int, obj: Path) -> tuple[Variables, Callable[[], None]]:
    """The .bss variables of a kernel program nobody in this process loaded, and how to let go of them."""
    spec = dynbpf.read(obj)
    assert spec.btf is not None
    with commands.fd_by_id(commands.ObjKind.PROG, prog_id) as prog:
        map_ids = commands.prog_map_ids(prog.raw)
    for map_id in map_ids:
        fd = commands.fd_by_id(commands.ObjKind.MAP, map_id)
        if commands.map_info(fd.raw).name.endswith(b".bss"):
            own = [v for v in spec.variables.values() if v.section == ".bss"]
            return Variables.of_map(fd, spec.btf, own), fd.close
        fd.close()
    raise AssertionError(f"program {prog_id} has no .bss map")


def test_pinned_link_outlives_the_process_that_made_it(no_fd_leak: None) -> None:
    obj, path = build("attach"), pin_path("child")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(obj), path, str(os.getpid())],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    link_id, prog_id = map(int, out.split())
    link = Link.from_pin(path)
    try:
        assert (link.id, link.program_id, link.kind) == (link_id, prog_id, reported_kind("tracepoint"))
        if perf_link_details():
            assert link.description == "tracepoint sys_enter_getppid"
        bss, release = bss_of(prog_id, obj)
        try:
            before = bss.tp_hits
            for _ in range(3):
                os.getppid()
            assert bss.tp_hits == before + 3
            link.unpin()
            link.detach()
            assert not os.path.exists(path)
            os.getppid()
            assert bss.tp_hits == before + 3
        finally:
            release()
    finally:
        link.unpin()
        link.detach()
    # the kernel frees a link from a work queue
    assert kernel_state.eventually(lambda: link_id not in commands.ids(commands.ObjKind.LINK))


# --- kinds a kernel may lack ----------------------------------------------------------------------


TRAMPOLINES = "BPF trampolines (fentry/fexit)"


@pytest.mark.parametrize(
    ("program", "stand_in", "probe", "capability"),
    [
        ("kprobe_openat2", ProgType.KPROBE, attach_features.kprobes, "kprobes"),
        ("kretprobe_openat2", ProgType.KPROBE, attach_features.kprobes, "kprobes"),
        ("ksyscall_openat", ProgType.KPROBE, attach_features.kprobes, "kprobes"),
        ("kprobe_multi_vfs", ProgType.KPROBE, attach_features.kprobe_multi, "kprobe.multi links"),
        ("fentry_openat2", ProgType.SOCKET_FILTER, attach_features.trampolines, TRAMPOLINES),
        ("fexit_openat2", ProgType.SOCKET_FILTER, attach_features.trampolines, TRAMPOLINES),
        ("fmod_ret_test", ProgType.SOCKET_FILTER, attach_features.trampolines, TRAMPOLINES),
        ("lsm_file_open", ProgType.SOCKET_FILTER, attach_features.lsm, "BPF LSM"),
    ],
    ids=lambda v: v if isinstance(v, str) and "_" in v else "",
)
def test_kinds_attach_where_their_probe_says_so_and_else_raise_kernel_unsupported(
    program: str, stand_in: ProgType, probe: Callable[[], Support], capability: str, no_fd_leak: None
) -> None:
    """The probe decides. A kernel with the capability attaches the kinds fixture's program; one without
    it (the test machine: no kprobe PMU, trampolines refused) raises KernelUnsupported with the probe's
    evidence. A program of such a kind may not even load there, so a stand-in fd of ``stand_in`` type is
    passed: the refusal must come before the fd is used.
    """
    support = probe()
    if support and program == "fmod_ret_test" and not attach_features.modify_return():
        # trampolines run, but this kernel does not list the target as modifiable: the verifier says so
        refusal = r"bpf_modify_return_test\(\) is not modifiable"
        with opened_kinds() as coll, pytest.raises(VerifierError, match=refusal):
            coll.programs[program].load()
        return
    with opened_kinds() as coll:
        if support:
            prog = loaded(coll, program)
            with prog.attach() as link:
                assert prog.state is ProgramState.ATTACHED
                assert link.program_id == prog.id
            return
        kind = coll.spec.programs[program].kind
    with load_trial(stand_in, return_imm(0)) as trial:
        assert trial.fd is not None
        with pytest.raises(KernelUnsupported) as exc:
            attach(kind, trial.fd.raw, name="refused")
    assert exc.value.capability.startswith(f"{capability} (needed to attach program 'refused'")
    assert exc.value.how == support.how


def test_kinds_without_an_attacher_say_so() -> None:
    with pytest.raises(AttachError, match="'lirc_mode2' programs are attached to an object the caller names"):
        attach(program_kind("lirc_mode2"), 0, name="x")
    with pytest.raises(AttachError, match="__bpf_usdt_specs map, which only its collection can fill"):
        attach(program_kind("usdt/libc.so.6:libc:setjmp"), 0, name="u")
    with pytest.raises(AttachError, match="registering their struct_ops map"):
        attach(program_kind("struct_ops/init"), 0, name="s")


# --- ABI ---------------------------------------------------------------------------------------------


@pytest.mark.needs_bpftool
def test_link_info_fields_and_iter_info_match_kernel_btf() -> None:
    """Every field dynbpf reads is where this kernel's BTF puts it. A link kind whose details the kernel's
    bpf_link_info does not have yet (perf_event, tcx, netfilter, uprobe_multi before 6.6 / 6.4) is
    left out: such links report their kind without details there, which is what dynbpf shows."""
    kernel = kernel_offsets(kernel_type("STRUCT", "bpf_link_info"))
    checked = 0
    for field, offset in FIELDS.items():
        if field.split(".")[0] not in kernel:
            continue
        assert kernel[field] == UNION + offset, field
        checked += 1
    assert checked >= 10  # raw_tracepoint, tracing, iter, cgroup and xdp are older than any kernel we run on
    iter_info = kernel_offsets(kernel_type("UNION", "bpf_iter_link_info"))
    assert ctypes_offsets(attrs.IterLinkInfo) == {k: v for k, v in iter_info.items() if "." in k}
    assert ctypes.sizeof(attrs.IterLinkInfo) == kernel_type("UNION", "bpf_iter_link_info")["size"]


# --- interfaces, cgroups, netfilter, uprobe.multi (programs of the kinds fixture) --------------------


def kinds_slot(name: str) -> int:
    """Index of ``S_<name>`` in kinds.bpf.c's ``enum kinds_slot`` (each program bumps ``ran[slot]``)."""
    source = (FIXTURES / "kinds.bpf.c").read_text()
    body = source[source.index("enum kinds_slot {") : source.index("NR_SLOTS")]
    names = [n.strip() for n in body.removeprefix("enum kinds_slot {").split(",") if n.strip()]
    return names.index(f"S_{name}")


@contextmanager
def opened_kinds() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("kinds")) as coll:
        yield coll


def ran(coll: dynbpf.Collection, slot: str) -> int:
    return int(coll.bss.ran[kinds_slot(slot)])


def last(coll: dynbpf.Collection, slot: str) -> int:
    """What the slot's program last saw (its ``hit`` value)."""
    return int(coll.bss.last_value[kinds_slot(slot)])


def udp_round_trip() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"dynbpf", rx.getsockname())
        assert rx.recv(16) == b"dynbpf"


def load_and_attach(prog: dynbpf.Program, **target: object) -> object:
    prog.load()
    return prog.attach(**target)


#: the probe that says whether a kernel has the hook of each loopback program
LOOPBACK_PROBES: dict[str, Callable[[], Support]] = {
    "xdp_pass": attach_features.xdp,
    "tcx_ingress": attach_features.tcx,
    "tcx_egress": attach_features.tcx,
    "netfilter_accept": attach_features.netfilter,
}


@pytest.mark.parametrize(
    ("program", "slot", "target", "description"),
    [
        ("xdp_pass", "XDP", {"interface": "lo"}, "xdp lo (ifindex 1)"),
        ("tcx_ingress", "TCX_IN", {"interface": "lo"}, "tcx ingress lo (ifindex 1)"),
        ("tcx_egress", "TCX_OUT", {"ifindex": 1}, "tcx egress lo (ifindex 1)"),
        ("netfilter_accept", "NETFILTER", {"pf": "ipv4", "hook": "local_in", "priority": 1000}, None),
    ],
    ids=["xdp", "tcx-ingress", "tcx-egress", "netfilter"],
)
def test_loopback_hooks_see_a_packet(
    program: str, slot: str, target: dict[str, object], description: str | None, no_fd_leak: None
) -> None:
    """Each passes the packet on (XDP_PASS, TCX_NEXT, NF_ACCEPT), so the round trip works and is counted.

    tcx (6.6) and netfilter (6.4) links are newer than some kernels the suite runs on: there, the
    probe says no and loading or attaching must say so.
    """
    with opened_kinds() as coll:
        prog = coll.programs[program]
        if kernel_lacks(LOOPBACK_PROBES[program](), lambda: load_and_attach(prog, **target)):
            return
        prog.load()
        link = prog.attach(**target)
        if description is not None:
            assert link.description == description
            assert link.facts().description == description
        else:
            assert link.facts().description == "netfilter pf 2 hook 1 priority 1000"
        before = ran(coll, slot)
        udp_round_trip()
        assert ran(coll, slot) > before  # our datagram; other loopback traffic may add more
        link.detach()
        before = ran(coll, slot)
        udp_round_trip()
        assert ran(coll, slot) == before


def test_interface_and_netfilter_targets_are_checked(no_fd_leak: None) -> None:
    with opened_kinds() as coll:
        if kernel_lacks(attach_features.xdp(), lambda: load_and_attach(coll.programs["xdp_pass"], interface="lo")):
            return
        xdp = loaded(coll, "xdp_pass")
        with pytest.raises(AttachError, match="no interface given"):
            xdp.attach()
        with pytest.raises(AttachError, match="no network interface 'dynbpf-nope0'"):
            xdp.attach(interface="dynbpf-nope0")
        with pytest.raises(AttachError, match=r"mode='turbo' is not one of skb"):
            xdp.attach(interface="lo", mode="turbo")
        with pytest.raises(AttachError, match=r"clsact qdisc .* SEC\(\"tcx/ingress\"\)"):
            attach(program_kind("tc"), 0, name="classic", interface="lo")
        with xdp.attach(interface="lo") as link:
            link.update(xdp)  # xdp links take a new program (here: the same one again)
            assert link.program_id == xdp.id
        nf = coll.programs["netfilter_accept"]
        local_in = {"pf": "ipv4", "hook": "local_in", "priority": 7}
        if kernel_lacks(attach_features.netfilter(), lambda: load_and_attach(nf, **local_in)):
            return
        nf.load()
        with (
            nf.attach(**local_in) as link,
            pytest.raises(AttachError, match=r"cannot swap the program of a netfilter link .*ENOTSUP"),
        ):
            link.update(nf)
        with pytest.raises(AttachError, match="no hook= given"):
            nf.attach(pf="ipv4")
        with pytest.raises(AttachError, match="priority=2147483647 is not an int strictly between"):
            nf.attach(pf="ipv4", hook="local_in", priority=2**31 - 1)


CGROUP_CHILD = (
    "import socket, sys\n"
    "sys.stdin.read(1)\n"
    "rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(('127.0.0.1', 0))\n"
    "tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.connect(rx.getsockname())\n"
    "tx.send(b'x'); rx.recv(8)\n"
)


def test_cgroup_hooks_apply_to_processes_in_the_cgroup(no_fd_leak: None) -> None:
    with opened_kinds() as coll, private_cgroup() as cgroup:
        connect = coll.programs["cgroup_connect4"]
        if kernel_lacks(attach_features.cgroup(), lambda: load_and_attach(connect, cgroup=cgroup)):
            return
        names = {"cgroup_sock_create": "SOCK_CREATE", "cgroup_connect4": "CONNECT4", "cgroup_skb_ingress": "CGROUP_SKB"}
        links = [loaded(coll, name).attach(cgroup=cgroup) for name in names]
        assert [link.description.split()[:2] for link in links] == [
            ["cgroup", "sock_create"],
            ["cgroup", "connect4"],
            ["cgroup", "cgroup_skb_ingress"],
        ]
        assert links[1].facts().description.startswith("cgroup inet4_connect (cgroup id ")
        before = {slot: ran(coll, slot) for slot in names.values()}
        udp_round_trip()  # this process is not in the cgroup: nothing counts
        assert {slot: ran(coll, slot) for slot in names.values()} == before
        child = subprocess.Popen([sys.executable, "-c", CGROUP_CHILD], stdin=subprocess.PIPE)
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(child.pid))
        child.communicate(b"g", timeout=30)
        assert child.returncode == 0
        moved = {slot: ran(coll, slot) - before[slot] for slot in names.values()}
        assert moved == {"SOCK_CREATE": 2, "CONNECT4": 1, "CGROUP_SKB": moved["CGROUP_SKB"]}
        assert moved["CGROUP_SKB"] >= 1
        for link in links:
            link.detach()
        with pytest.raises(AttachError, match="cannot open the cgroup directory"):
            coll.programs["cgroup_connect4"].attach(cgroup="/nonexistent-cgroup")


def test_uprobe_multi_on_libc(no_fd_leak: None) -> None:
    """uprobe.multi links are 6.6's: an older kernel's probe says no, and loading or attaching must say so."""
    with opened_kinds() as coll:
        prog = coll.programs["uprobe_multi_getpp"]
        if kernel_lacks(attach_features.uprobe_multi(), lambda: load_and_attach(prog, pid=os.getpid())):
            return
        prog.load()
        link = prog.attach(pid=os.getpid())  # the section says libc.so.6:getpp*
        assert link.kind == "uprobe.multi"
        assert link.description.startswith(f"uprobe.multi libc.so.6:getpp* pid {os.getpid()} (1 functions in /")
        assert link.facts().description.endswith(f"(1 functions) pid {os.getpid()}")
        before = ran(coll, "UPROBE_MULTI")
        os.getppid()
        os.getppid()
        assert (ran(coll, "UPROBE_MULTI"), last(coll, "UPROBE_MULTI")) == (before + 2, 0)  # no cookies given
        link.detach()
        with prog.attach(path="libc.so.6", symbols=["getppid", "getpid"], pid=os.getpid(), cookies=[0xC1, 0xC2]):
            os.getpid()
            assert (ran(coll, "UPROBE_MULTI"), last(coll, "UPROBE_MULTI")) == (before + 3, 0xC2)
            os.getppid()
            assert (ran(coll, "UPROBE_MULTI"), last(coll, "UPROBE_MULTI")) == (before + 4, 0xC1)
        os.getppid()
        assert ran(coll, "UPROBE_MULTI") == before + 4
        with pytest.raises(AttachError, match=r"no function of .*libc.so.6 matches 'dynbpf_nope\*'"):
            prog.attach(pattern="dynbpf_nope*")
