"""dynbpf.open end to end: programs load, run in the kernel, and what they wrote is read back by name."""

from __future__ import annotations

import os

import pytest

import dynbpf
from dynbpf._sys import commands
from dynbpf._sys.constants import MapType
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, StateError
from tests.bpfbuild import build
from tests.helpers import XDP_PASS, on_tracepoint, run_on_packet

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def test_globals_written_by_a_tracepoint_program_read_back_by_name(no_fd_leak: None) -> None:
    pid = os.getpid()
    with dynbpf.open(build("globals"), constants={"target_tgid": pid, "sample_every": 1}) as coll:
        assert coll.rodata.target_tgid == pid
        assert coll.rodata.sample_every == 1
        assert coll.rodata.cfg.port == 8080  # untouched constants keep the object's values
        assert coll.data.seq == 1
        assert coll.bss.hits == 0
        coll.programs["count_writes"].load()
        writes = 25
        with (
            open(os.devnull, "wb", buffering=0) as null,
            on_tracepoint(coll.programs["count_writes"].fd, "syscalls", "sys_enter_write"),
        ):
            for _ in range(writes):
                null.write(b"x")
        assert coll.bss.hits == writes
        assert coll.bss.stats.total == writes
        assert coll.bss.stats.dropped == 0
        assert sum(coll.bss.per_cpu_slots) == writes
        assert coll.data.seq == (1 + writes * (1 + coll.data.bias)) % 2**64  # bias is -7: seq wraps below zero
        assert coll.variables(".data.custom").custom_tally.total == 7 + writes


def test_rodata_is_frozen_and_constants_are_checked(no_fd_leak: None) -> None:
    with dynbpf.open(build("globals")) as coll:
        with pytest.raises(StateError, match=r"globals:\.rodata' is frozen .*constants="):
            coll.rodata.target_tgid = 5
        assert coll.rodata.target_tgid == 0
    with pytest.raises(DynbpfError, match=r"no read-only global 'hits'.*target_tgid"):
        dynbpf.open(build("globals"), constants={"hits": 1})


def test_constants_change_what_the_verifier_sees(no_fd_leak: None) -> None:
    tag = b"ab"
    for constants, bytes_after in (
        ({}, [1, 2, 3, 5, 5, 6]),  # ports[3] == cfg.port (8080)
        ({"cfg": {"max_events": 1, "port": 443, "enabled": 1, "level": 0, "window_ns": 0}}, [1, 2, 4, 4, 5, 6]),
    ):
        with dynbpf.open(build("globals"), constants={**constants, "tag": tag}) as coll:
            prog = coll.programs["xdp_port_gate"]
            prog.load()
            assert run_on_packet(prog.fd) == XDP_PASS
            assert list(coll.variables(".data.custom").custom_bytes) == bytes_after
            assert coll.bss.tag_sum == sum(tag)


def test_tail_calls_follow_prog_array_slots_as_programs_load_and_unload(no_fd_leak: None) -> None:
    with dynbpf.open(build("tailcalls")) as coll:
        assert not coll.load(["xdp_dispatch", "xdp_stage_parse", "xdp_stage_count", "xdp_stage_drop"])
        dispatch = coll.programs["xdp_dispatch"].fd
        stages = coll.maps["xdp_stages"]
        ids = {name: coll.programs[name].id for name in ("xdp_stage_parse", "xdp_stage_count", "xdp_stage_drop")}
        assert dict(stages.items()) == {0: ids["xdp_stage_parse"], 1: ids["xdp_stage_count"], 3: ids["xdp_stage_drop"]}
        assert run_on_packet(dispatch) == XDP_PASS
        assert coll.bss.packets == 1
        assert coll.bss.fallthrough == 0
        coll.programs["xdp_stage_count"].unload()
        assert dict(stages.items()) == {0: ids["xdp_stage_parse"], 3: ids["xdp_stage_drop"]}
        assert run_on_packet(dispatch) == XDP_PASS
        assert coll.bss.packets == 1
        assert coll.bss.fallthrough == 1
        coll.programs["xdp_stage_count"].load()
        assert run_on_packet(dispatch) == XDP_PASS
        assert coll.bss.packets == 2


def test_maps_of_maps_hold_their_declared_inner_maps(pin_root: str, no_fd_leak: None) -> None:
    with dynbpf.open(build("maps"), pin_root=pin_root) as coll:
        prog = coll.programs["count_syscalls"]
        prog.load()
        inner_b = coll.maps["inner_b"]
        ids = {k: v for k, v in coll.maps["outer_by_slot"].items()}
        assert set(ids) == {0, 2}
        assert ids[2] == inner_b.id
        assert ids[0] == coll.maps["inner_a"].id
        assert dict(coll.maps["outer_by_id"].items()) == {1: inner_b.id}
        before = inner_b[0]
        with Fd(commands.raw_tracepoint_open("sys_enter", prog.fd).release(), "link"):
            for _ in range(20):
                os.getppid()
        assert inner_b[0] >= before + 20  # outer_by_id[1] is inner_b: bumped on every syscall
        assert coll.maps["perf_events"].max_entries == os.cpu_count()
        assert coll.maps["exec_count"].type == MapType.HASH


def test_program_states_and_errors(no_fd_leak: None) -> None:
    with dynbpf.open(build("tailcalls")) as coll:
        prog = coll.programs["socket_dispatch"]
        assert not prog.loaded
        with pytest.raises(StateError, match="not loaded"):
            prog.fd  # noqa: B018
        assert prog.load() is True
        fd = prog.fd
        assert prog.load() is False  # already loaded: a no-op
        assert prog.fd == fd
        assert len(prog.tag) == 16
        assert prog.id > 0
        prog.unload()
        prog.unload()  # idempotent
        assert not prog.loaded
        with pytest.raises(KeyError, match="no map 'nope'"):
            coll.maps["nope"]
    with pytest.raises(StateError, match="closed"):
        prog.load()


def test_a_program_the_kernel_refuses_does_not_stop_the_others(no_fd_leak: None) -> None:
    with dynbpf.open(build("kinds")) as coll:
        failures = coll.load(list(coll.programs))
        loaded = [n for n, p in coll.programs.items() if p.loaded]
        assert loaded, failures
        assert set(loaded) | set(failures) == set(coll.programs)
        for name, error in failures.items():
            assert name in str(error)
