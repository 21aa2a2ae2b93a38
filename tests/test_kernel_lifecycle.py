"""The runtime lifecycle on the real kernel: states, on-demand and pinned maps, clone, parallel loads."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import pytest

import dynbpf
from dynbpf import MapPolicy, ProgramState
from dynbpf._sys import commands
from dynbpf._sys.constants import AttachType
from dynbpf.errors import DynbpfError, PinError, StateError, SyscallError, VerifierError
from tests import kernel_state
from tests.bpfbuild import build
from tests.helpers import XDP_DROP, XDP_PASS, on_tracepoint, run_on_packet

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

TRACEPOINT_PROGRAMS = ("prog1", "prog2", "prog3", "use_a", "use_b", "use_outer")


def open_lifecycle(**options: object) -> dynbpf.Collection:
    constants = {"target_tgid": os.getpid()}
    return dynbpf.open(build("lifecycle"), constants=constants, **options)  # type: ignore[arg-type]


def map_id(coll: dynbpf.Collection, name: str) -> int:
    return int(commands.map_info(coll.map_fd_number(name)).id)


# --- states ---------------------------------------------------------------------------


def test_disabled_programs_never_load(no_fd_leak: None) -> None:
    with open_lifecycle(disabled=["prog1"]) as coll:
        prog1 = coll.programs["prog1"]
        assert prog1.state is ProgramState.DISABLED
        with pytest.raises(StateError, match="disabled"):
            prog1.load()
        with pytest.raises(StateError, match="disabled"):
            prog1.clone()
        with pytest.raises(StateError, match="disabled"):
            prog1.reload()
        prog1.unload()  # nothing to unload: a no-op, like libbpf's unload of an unloaded program
        failures = coll.load(["prog1", "prog2"])
        assert set(failures) == {"prog1"}
        assert isinstance(failures["prog1"], StateError)
        assert coll.programs["prog2"].state is ProgramState.LOADED
        failures = coll.load()  # autoload programs, skipping the disabled one
        assert "prog1" not in failures
        assert prog1.state is ProgramState.DISABLED
    with pytest.raises(KeyError, match="disabled=: object 'lifecycle' has no program 'nope'"):
        open_lifecycle(disabled=["nope"])


def test_state_transitions_and_what_each_state_allows(no_fd_leak: None) -> None:
    with open_lifecycle() as coll:
        prog = coll.programs["stage_drop"]
        assert prog.state is ProgramState.PREPARED
        with pytest.raises(StateError, match="prepared, not loaded"):
            prog.fd  # noqa: B018
        with pytest.raises(StateError, match="only a loaded program can be attached"):
            prog.attach()
        assert prog.load() is True
        assert prog.state is ProgramState.LOADED
        first = prog.id
        assert prog.load() is False
        assert prog.id == first
        prog.reload()
        assert prog.state is ProgramState.LOADED
        assert prog.id != first
        assert run_on_packet(prog.fd) == XDP_DROP
        prog.unload()
        assert prog.state is ProgramState.PREPARED
        prog.load()
    assert prog.state is ProgramState.PREPARED  # close unloaded it
    with pytest.raises(StateError, match="closed"):
        prog.load()


def test_seed_scenario_dynamic_load_attach_detach_unload_reload(no_fd_leak: None) -> None:
    """The seed patch's selftest (prog_tests/dynamicload.c), step by step."""
    with open_lifecycle(disabled=["prog1"]) as coll:
        bss = coll.bss
        progs = coll.programs
        assert coll.load(["prog2"]) == {}
        links = [progs["prog2"].attach()]

        def fired() -> tuple[bool, bool, bool]:
            bss.prog1_called = bss.prog2_called = bss.prog3_called = False
            os.getpgid(0)
            return bss.prog1_called, bss.prog2_called, bss.prog3_called

        assert fired() == (False, True, False)
        with pytest.raises(StateError):
            progs["prog1"].load()  # disabled: load fails
        assert progs["prog2"].load() is False  # autoloaded already: nothing to do
        assert fired() == (False, True, False)

        assert progs["prog3"].load() is True  # dynamic load
        link = progs["prog3"].attach()
        assert progs["prog3"].state is ProgramState.ATTACHED
        assert fired() == (False, True, True)
        link.detach()
        assert progs["prog3"].state is ProgramState.LOADED
        assert fired() == (False, True, False)
        progs["prog3"].unload()
        assert progs["prog3"].state is ProgramState.PREPARED
        assert progs["prog3"].load() is True  # reload after unload
        progs["prog3"].attach()
        assert fired() == (False, True, True)
        progs["prog3"].unload()  # detaches first
        assert progs["prog3"].links == ()
        assert fired() == (False, True, False)
        for link in links:
            link.detach()


# --- on-demand maps -------------------------------------------------------------------


def test_on_demand_maps_exist_exactly_while_a_loaded_program_needs_them(no_fd_leak: None) -> None:
    with open_lifecycle(map_policy="on_demand") as coll:
        names = list(coll.prepared.maps)
        numbers = {n: coll.map_fd_number(n) for n in names}
        assert not any(coll.map_exists(n) for n in names)
        with pytest.raises(StateError, match="on demand and no loaded program needs it"):
            coll.maps["shared"]
        a, b = coll.programs["use_a"], coll.programs["use_b"]
        assert set(a.maps) == {"shared", "private_a", ".rodata", ".data"}
        a.load()
        assert {n for n in names if coll.map_exists(n)} == set(a.maps)
        shared_id = map_id(coll, "shared")
        b.load()
        assert map_id(coll, "shared") == shared_id  # shared, not re-created
        assert {n for n in names if coll.map_exists(n)} == set(a.maps) | set(b.maps)
        a.unload()
        assert not coll.map_exists("private_a")
        assert coll.map_exists("shared")
        assert map_id(coll, "shared") == shared_id
        b.unload()
        assert not any(coll.map_exists(n) for n in names)
        assert kernel_state.eventually(lambda: shared_id not in kernel_state.kernel_map_ids())
        assert {n: coll.map_fd_number(n) for n in names} == numbers  # reserved numbers never move


def test_recreated_global_data_gets_its_initial_bytes_and_rodata_is_frozen_again(no_fd_leak: None) -> None:
    with open_lifecycle(map_policies={".data": "on_demand", ".rodata": "on_demand"}) as coll:
        assert coll.map_policy(".data") is MapPolicy.ON_DEMAND
        assert coll.map_policy("shared") is MapPolicy.EAGER
        use_a = coll.programs["use_a"]
        for _ in range(2):
            use_a.load()
            assert coll.data.data_counter == 100
            assert coll.rodata.target_tgid == os.getpid()  # the caller's constant, not the object's 0
            with pytest.raises(DynbpfError):
                coll.maps[".rodata"][0] = bytes(coll.maps[".rodata"].value_size)  # frozen
            with on_tracepoint(use_a.fd, "syscalls", "sys_enter_getpgid"):
                os.getpgid(0)
                os.getpgid(0)
            assert coll.data.data_counter == 102
            use_a.unload()
            assert not coll.map_exists(".data")


def test_map_of_maps_brings_its_inner_maps(no_fd_leak: None) -> None:
    with open_lifecycle(map_policy="on_demand") as coll:
        prog = coll.programs["use_outer"]
        assert "inner_0" not in prog.maps  # the program names only the outer map
        prog.load()
        assert coll.map_exists("outer")
        assert coll.map_exists("inner_0")
        with on_tracepoint(prog.fd, "syscalls", "sys_enter_getpgid"):
            os.getpgid(0)
        assert coll.maps["inner_0"][0] == 1
        prog.unload()
        assert not coll.map_exists("outer")
        assert not coll.map_exists("inner_0")


def test_prog_array_slots_follow_programs_also_for_on_demand_arrays(no_fd_leak: None) -> None:
    with open_lifecycle(map_policy="on_demand") as coll:
        stage, dispatch = coll.programs["stage_drop"], coll.programs["dispatch_declared"]
        stage.load()  # the array does not exist yet: the slot is remembered
        assert not coll.map_exists("stages_decl")
        dispatch.load()  # creates the array, filled with the loaded stage
        assert run_on_packet(dispatch.fd) == XDP_DROP
        stage.unload()
        assert run_on_packet(dispatch.fd) == XDP_PASS  # slot cleared: the tail call falls through
        stage.load()
        assert run_on_packet(dispatch.fd) == XDP_DROP
        dispatch.unload()
        assert not coll.map_exists("stages_decl")
        dispatch.load()
        assert run_on_packet(dispatch.fd) == XDP_DROP


# --- pinned maps ----------------------------------------------------------------------


def test_pinned_maps_are_reused_across_collections_and_outlive_them(pin_root: str, no_fd_leak: None) -> None:
    with open_lifecycle(map_policies={"shared": "pinned"}, pin_root=pin_root) as first:
        assert os.path.exists(os.path.join(pin_root, "shared"))
        first.maps["shared"][0] = 41
        shared_id = map_id(first, "shared")
    assert os.path.exists(os.path.join(pin_root, "shared"))  # the pin survives close
    with open_lifecycle(map_policies={"shared": "pinned"}, pin_root=pin_root) as second:
        assert map_id(second, "shared") == shared_id
        assert second.maps["shared"][0] == 41
        prog = second.programs["prog3"]
        prog.load()
        with on_tracepoint(prog.fd, "syscalls", "sys_enter_getpgid"):
            os.getpgid(0)
        assert second.maps["shared"][0] == 42


def test_pinned_map_with_another_definition_is_a_clear_error(pin_root: str, tmp_path: Path, no_fd_leak: None) -> None:
    with open_lifecycle(map_policies={"private_a": "pinned"}, pin_root=pin_root):
        pass
    os.rename(os.path.join(pin_root, "private_a"), os.path.join(pin_root, "shared"))  # a hash where an array goes
    with pytest.raises(PinError, match=r"the map pinned at .*shared has type hash, the object declares array"):
        open_lifecycle(map_policies={"shared": "pinned"}, pin_root=pin_root)


def test_bad_policies_are_refused(no_fd_leak: None) -> None:
    with pytest.raises(ValueError, match="unknown map policy 'sometimes'"):
        open_lifecycle(map_policy="sometimes")
    with pytest.raises(ValueError, match="map_policies=: object 'lifecycle' has no map 'nope'"):
        open_lifecycle(map_policies={"nope": "eager"})


# --- clone ----------------------------------------------------------------------------


def test_clone_gives_a_caller_owned_program_and_leaves_the_original_alone(no_fd_leak: None) -> None:
    with open_lifecycle(map_policy="on_demand") as coll:
        stage = coll.programs["stage_drop"]
        log = bytearray(64 * 1024)
        with stage.clone(log_level=2, log_buffer=log) as clone:
            assert stage.state is ProgramState.PREPARED  # unchanged
            assert run_on_packet(clone.raw) == XDP_DROP
            assert b"processed" in log
            assert log.index(b"\0") > 0
        heavy = coll.programs["use_a"]
        heavy.load()
        with heavy.clone() as clone:
            assert commands.prog_info(clone.raw).id != heavy.id
            assert bytes(commands.prog_info(clone.raw).tag) == bytes(commands.prog_info(heavy.fd).tag)
        heavy.unload()
        with coll.programs["use_b"].clone() as clone:
            assert coll.map_exists("private_b")  # the clone holds its on-demand maps
        assert not coll.map_exists("private_b")  # until its fd is closed
        with pytest.raises(TypeError, match="unknown options colour"):
            stage.clone(colour="blue")
        with pytest.raises(VerifierError, match="refused"):
            coll.programs["refused"].clone()


def test_clone_overrides_reach_the_kernel(no_fd_leak: None) -> None:
    with open_lifecycle() as coll:
        stage = coll.programs["stage_drop"]
        with stage.clone(expected_attach_type=int(AttachType.XDP)) as clone:
            assert run_on_packet(clone.raw) == XDP_DROP
        with pytest.raises(DynbpfError, match="stage_drop"):
            stage.clone(ifindex=1_000_000).close()  # no such device to offload to


def test_clone_retargets_attach_btf_id_and_passes_prog_flags(no_fd_leak: None) -> None:
    """A tp_btf program cloned onto another tracepoint of the same shape; flags reach the kernel as given."""
    from dynbpf._btf import Kind, kernel

    vmlinux = kernel.vmlinux()
    assert vmlinux is not None
    (sys_exit,) = vmlinux.find("btf_trace_sys_exit", Kind.TYPEDEF)
    with dynbpf.open(build("attach")) as coll:
        prog = coll.programs["btf_getgid"]
        assert prog.prepared.attach_btf_id != sys_exit
        with prog.clone(attach_btf_id=sys_exit) as clone:
            assert commands.prog_info(clone.raw).attach_btf_id == sys_exit
        with prog.clone(prog_flags=0) as clone:  # the prepared target, explicitly no flags
            assert commands.prog_info(clone.raw).attach_btf_id == prog.prepared.attach_btf_id
        with pytest.raises(VerifierError) as e:
            prog.clone(prog_flags=1 << 30).close()  # no such BPF_F_* flag: the kernel says EINVAL
        assert e.value.errno == errno.EINVAL
        assert prog.state == ProgramState.PREPARED


# --- parallel loading -----------------------------------------------------------------


def test_parallel_load_reports_each_failure_with_its_own_log(no_fd_leak: None) -> None:
    with open_lifecycle() as coll:
        failures = coll.load(list(coll.programs), workers=4)
        assert set(failures) == {"refused"}
        error = failures["refused"]
        assert isinstance(error, VerifierError)
        assert "refused" in str(error)
        assert "p[0]" in str(error) or "invalid access" in error.log
        assert all(p.loaded for n, p in coll.programs.items() if n != "refused")


def test_atomic_parallel_load_rolls_back(no_fd_leak: None) -> None:
    with open_lifecycle(map_policy="on_demand") as coll:
        coll.programs["prog2"].load()  # loaded before: an atomic failure leaves it alone
        failures = coll.load(["prog2", "prog3", "use_a", "heavy", "refused"], workers=2, atomic=True)
        assert set(failures) == {"refused"}
        assert {n for n, p in coll.programs.items() if p.loaded} == {"prog2"}
        assert not coll.map_exists("private_a")
        assert coll.load(["prog3", "use_a"], atomic=True) == {}
        assert coll.programs["use_a"].loaded


def test_parallel_load_starts_the_longest_expected_first(no_fd_leak: None) -> None:
    """First by instruction count (nothing measured yet), then by each program's measured verification time."""
    with open_lifecycle() as coll:
        names = [n for n in coll.programs if n != "refused"]
        coll.load(names, workers=1)  # one worker: kernel ids give the order of the loads
        by_id = sorted(names, key=lambda n: coll.programs[n].id)
        sizes = [coll.programs[n].prepared.insn_count for n in by_id]
        assert sizes == sorted(sizes, reverse=True)
        heavy = coll.programs["heavy"]
        assert heavy.prepared.insn_count < max(sizes)  # small, but its loop runs 2000 times in the verifier
        assert heavy.seconds > max(coll.programs[n].seconds for n in names if n != "heavy")
        coll.unload()
        coll.load(names, workers=1)
        by_id = sorted(names, key=lambda n: coll.programs[n].id)
        assert by_id[0] == "heavy"


def test_concurrent_callers_keep_the_runtime_consistent(no_fd_leak: None) -> None:
    names = [n for n in TRACEPOINT_PROGRAMS if n != "prog1"] + ["stage_drop", "dispatch_declared", "heavy"]
    errors: list[BaseException] = []
    with open_lifecycle(map_policy="on_demand") as coll:

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(60):
                    program = coll.programs[rng.choice(names)]
                    action = rng.randrange(5)
                    if action == 0:
                        program.load()
                    elif action == 1:
                        program.unload()
                    elif action == 2:
                        program.reload()
                    elif action == 3:
                        program.clone().close()
                    else:
                        coll.load(rng.sample(names, 3), workers=2)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        loaded = {n for n, p in coll.programs.items() if p.loaded}
        needed = {m for n in loaded for m in coll.programs[n].maps}
        if "outer" in needed:
            needed.add("inner_0")
        for name in coll.prepared.maps:
            assert coll.map_exists(name) == (name in needed), name
        coll.unload()
        assert not any(coll.map_exists(n) for n in coll.prepared.maps)


def test_close_releases_every_kernel_object_but_pins(pin_root: str, no_fd_leak: None) -> None:
    with open_lifecycle(map_policies={"private_b": "pinned"}, pin_root=pin_root) as coll:
        assert coll.load(workers=2) == {}  # autoload programs: all but "refused"
        assert not coll.programs["refused"].loaded
        prog_ids = {p.id for p in coll.programs.values() if p.loaded}
        map_ids = {map_id(coll, n) for n in coll.prepared.maps}
        pinned_id = map_id(coll, "private_b")
    assert kernel_state.eventually(lambda: not (prog_ids & set(commands.ids(commands.ObjKind.PROG))))
    assert kernel_state.eventually(lambda: kernel_state.kernel_map_ids() & map_ids == {pinned_id})
    with commands.obj_get(os.path.join(pin_root, "private_b")) as pinned:
        assert commands.map_info(pinned.raw).id == pinned_id


def test_a_pinned_program_outlives_unload_and_close_until_unpinned(
    pin_root: str, tmp_path: Path, no_fd_leak: None
) -> None:
    path = os.path.join(pin_root, "progs", "prog2")
    with open_lifecycle() as coll:
        program = coll.programs["prog2"]
        with pytest.raises(StateError, match="only a loaded program can be pinned"):
            program.pin(path)
        program.load()
        pinned_id = program.id
        program.pin(path)
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700  # made like libbpf's pin directories
        with pytest.raises(SyscallError) as taken:
            program.pin(path)
        assert taken.value.errno == errno.EEXIST
        with pytest.raises(PinError, match="not on a BPF filesystem"):
            program.pin(str(tmp_path / "prog2"))
        program.unload()
        assert pinned_id in commands.ids(commands.ObjKind.PROG)  # the pin holds it
    with commands.obj_get(path) as pinned:
        assert commands.prog_info(pinned.raw).id == pinned_id
    os.unlink(path)
    assert kernel_state.eventually(lambda: pinned_id not in commands.ids(commands.ObjKind.PROG))


# --- event readers --------------------------------------------------------------------


def test_an_event_reader_holds_its_on_demand_map_and_close_closes_it(no_fd_leak: None) -> None:
    with dynbpf.open(build("events"), constants={"target_tgid": os.getpid()}, map_policy="on_demand") as coll:
        assert not coll.map_exists("events")
        reader = coll.ring_buffer("events", record="struct event")
        assert coll.map_exists("events")  # created for the reader
        producer = coll.programs["emit_reserved"]
        producer.load()
        events_id = map_id(coll, "events")
        commands.prog_test_run(producer.fd, ctx_in=(3).to_bytes(8, "little") + bytes(16), repeat=0)
        producer.unload()
        assert map_id(coll, "events") == events_id  # the reader still needs it
        records = reader.read(timeout=1)
        assert [r.seq for r in records] == [0, 1, 2]
        reader.close()
        assert not coll.map_exists("events")
        with coll.perf_buffer("samples", record="event") as perf:
            assert coll.map_exists("samples")
            assert perf.cpus
        assert not coll.map_exists("samples")
        open_reader = coll.ring_buffer("audit")
    assert open_reader.closed  # the collection closed it


def test_a_load_under_way_while_constants_change_gets_the_new_ones(no_fd_leak: None) -> None:
    """set_constants reloaded the programs loaded when it began; one whose load was under way kept the old .rodata
    (the stress driver saw it: a program loaded beside set_constants used a .rodata no number held any more)."""
    with dynbpf.open(build("slow_constants")) as coll:
        slow, quick = coll.programs["slow"], coll.programs["quick"]
        assert not coll.prepare()  # the thread below goes straight to the verifier
        quick.load()
        loading = threading.Thread(target=slow.load)
        loading.start()
        threading.Event().wait(0.05)  # the slow program is in the verifier now (for ~0.25 s), not yet loaded
        assert not slow.loaded
        assert coll.set_constants({"factor": 7}) == ("quick",)
        loading.join()
        rodata = map_id(coll, ".rodata")
        for program in (quick, slow):
            assert rodata in commands.prog_map_ids(program.fd), program.name
        assert coll.programs["quick"].state is ProgramState.LOADED
        assert commands.prog_test_run(quick.fd, data_in=bytes(64)).retval == 7
        assert commands.prog_test_run(slow.fd, data_in=bytes(64)).retval in (7, 8)
