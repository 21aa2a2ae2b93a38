"""Runtime invariants under concurrent random lifecycle operations (tests/stress_driver.py), and the probes they use.

The stress runs are seeded: set ``DYNBPF_STRESS_SEED`` to replay a failure
(the failure message names the seed, the round's map policies and the last
steps). ``bench/stress.py`` runs the same driver for long.
"""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

import dynbpf
from dynbpf._asm.insn import return_imm
from dynbpf._sys import commands
from dynbpf._sys.commands import ObjKind
from dynbpf._sys.constants import MapType, ProgType
from dynbpf._sys.placeholder import FdSlot
from tests import kernel_state as ks
from tests import stress_driver as sd
from tests.helpers import load_ok, new_map

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

SEED = int(os.environ.get("DYNBPF_STRESS_SEED", "5"))


@pytest.fixture
def fixture() -> sd.Fixture:
    return sd.Fixture.load()


# --- kernel_state: what /proc and the kernel say, checked against objects made by hand ---------------


def test_held_ids_follow_this_process_fds_and_the_kernel_lists_them_by_name(no_fd_leak: None) -> None:
    baseline = ks.open_fds()
    map_fd = new_map(MapType.ARRAY, value=4, entries=4, name=b"sxk_held")
    prog_fd = load_ok(ProgType.SOCKET_FILTER, return_imm(0), name=b"sxk_held")
    map_id, prog_id = int(commands.map_info(map_fd.raw).id), int(commands.prog_info(prog_fd.raw).id)
    try:
        assert ks.held_ids("map")[map_id] == [map_fd.raw]
        assert ks.held_ids("prog")[prog_id] == [prog_fd.raw]
        assert ks.new_fds(baseline) == {map_fd.raw: "anon_inode:bpf-map", prog_fd.raw: "anon_inode:bpf-prog"}
        dup = os.dup(map_fd.raw)
        assert sorted(ks.held_ids("map")[map_id]) == sorted([map_fd.raw, dup])
        os.close(dup)
        assert ks.kernel_maps_named("sxk_held") == {map_id: "sxk_held"}
        assert ks.kernel_progs_named(("sxk_", "nothing")) == {prog_id: "sxk_held"}
        assert ks.map_name(map_fd.raw) == "sxk_held"
        assert ks.prog_name(prog_fd.raw) == "sxk_held"
        assert map_id in ks.kernel_map_ids()
        assert prog_id in ks.kernel_prog_ids()
    finally:
        map_fd.close()
        prog_fd.close()
    assert map_id not in ks.held_map_ids()
    assert prog_id not in ks.held_prog_ids()
    assert ks.new_fds(baseline) == {}
    assert ks.eventually(lambda: not ks.alive(ObjKind.MAP, [map_id]) and not ks.alive(ObjKind.PROG, [prog_id]))


def test_links_show_their_id_and_program_in_fdinfo(no_fd_leak: None) -> None:
    with load_ok(ProgType.RAW_TRACEPOINT, return_imm(0), name=b"sxk_link") as prog:
        prog_id = int(commands.prog_info(prog.raw).id)
        with commands.raw_tracepoint_open("sys_enter", prog.raw) as link:
            link_id = int(commands.link_info(link.raw).id)
            assert ks.held_link_ids() >= {link_id}
            (held,) = [h for h in ks.held() if h.fd == link.raw]
            assert (held.kind, held.obj_id, int(held.info["prog_id"])) == ("link", link_id, prog_id)
            assert link_id in ks.kernel_link_ids()
        assert link_id not in ks.held_link_ids()
        assert ks.eventually(lambda: not ks.alive(ObjKind.LINK, [link_id]))


def test_placeholders_name_the_map_whose_number_they_reserve(no_fd_leak: None) -> None:
    with FdSlot("dynbpf:sx_reserved") as slot:
        (held,) = [h for h in ks.held() if h.fd == slot.number]
        assert (held.kind, held.placeholder_of, held.obj_id) == ("placeholder", "sx_reserved", None)
        slot.install(new_map(MapType.HASH, value=4, entries=4, name=b"sx_reserved"))
        (held,) = [h for h in ks.held() if h.fd == slot.number]
        assert held.kind == "map"
        assert held.placeholder_of is None
        assert held.obj_id == commands.map_info(slot.number).id


def test_fd_array_ids_read_what_prog_arrays_and_maps_of_maps_hold(no_fd_leak: None) -> None:
    with (
        new_map(MapType.PROG_ARRAY, value=4, entries=4, name=b"sxk_jmp") as jmp,
        load_ok(ProgType.SOCKET_FILTER, return_imm(0), name=b"sxk_stage") as stage,
        new_map(MapType.ARRAY, value=8, entries=1, name=b"sxk_inner") as inner,
    ):
        assert ks.fd_array_ids(jmp.raw, 4) == {}
        commands.map_update_elem(jmp.raw, (2).to_bytes(4, "little"), stage.raw.to_bytes(4, "little"))
        assert ks.fd_array_ids(jmp.raw, 4) == {2: commands.prog_info(stage.raw).id}
        with new_map(MapType.ARRAY_OF_MAPS, value=4, entries=2, name=b"sxk_outer", inner_map_fd=inner.raw) as outer:
            commands.map_update_elem(outer.raw, (1).to_bytes(4, "little"), inner.raw.to_bytes(4, "little"))
            assert ks.fd_array_ids(outer.raw, 2) == {1: commands.map_info(inner.raw).id}


def test_eventually_gives_up_after_its_timeout() -> None:
    calls = Counter[str]()

    def never() -> bool:
        calls["n"] += 1
        return False

    assert ks.eventually(never, timeout=0.05, interval=0.01) is False
    assert calls["n"] >= 2
    assert ks.eventually(lambda: True, timeout=0) is True


# --- the stress fixture ---------------------------------------------------------------------------------


def test_stress_fixture_has_what_the_driver_relies_on(fixture: sd.Fixture) -> None:
    assert len(fixture.programs) == 50
    kinds = Counter(fixture.kind(p) for p in fixture.programs)
    assert kinds == {"tp": 14, "raw_tp": 6, "tp_btf": 6, "iter": 4, "xdp": 14, "socket": 6}
    with dynbpf.open(fixture.path) as coll:
        users = Counter(m for p in coll.programs.values() for m in set(p.maps))
    private = [m for m in fixture.maps if m.startswith("sx_priv_")]
    assert len(private) == 16
    assert all(users[m] == 1 for m in private), {m: users[m] for m in private}
    assert all(users[m] >= 8 for m in ("sx_counts", "sx_hash", "sx_pcpu", ".rodata", ".bss")), users
    assert users["sx_pair"] == 2
    assert {".rodata", ".data", ".bss"} <= set(fixture.maps)
    assert fixture.contents["sx_jmp"] == tuple((i, f"sx_xdp_stage{i}") for i in range(4))
    assert fixture.contents["sx_sjmp"] == ((0, "sx_sk_stage0"), (1, "sx_sk_stage1"))
    assert fixture.contents["sx_outer"] == ((0, "sx_inner0"),)
    assert fixture.closure(["sx_outer"]) == {"sx_outer", "sx_inner0"}
    assert {stage for array, slot in sd.DISPATCHERS.values() for i, stage in fixture.contents[array] if i == slot} == (
        set(sd.STAGE_VERDICT)
    )
    assert set(fixture.attachable()) == {
        p for p in fixture.programs if fixture.kind(p) in ("tp", "raw_tp", "tp_btf", "iter")
    }


def test_operations_depend_only_on_the_seed(fixture: sd.Fixture) -> None:
    weighted = {**sd.WEIGHTS, **sd.FEATURE_WEIGHTS}
    kinds, weights = list(weighted), list(weighted.values())

    def draw(seed: int) -> list[str]:
        rng = random.Random(seed)
        config = sd.choose_round(rng, fixture, 0)
        return [config.describe()] + [str(sd.choose_op(rng, fixture, kinds, weights, config)) for _ in range(300)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert {op.split("(")[0] for op in draw(7)[1:]} == set(weighted)


def test_feature_rounds_declare_real_alternatives_and_leave_the_rest_to_the_other_operations(
    fixture: sd.Fixture,
) -> None:
    """Feature maps are built over the fixture's tracing programs; the other operations never touch them."""
    assert {p for alternatives in sd.HOOKS.values() for v in alternatives for p in v} <= set(fixture.attachable())
    rng = random.Random(3)
    broken = Counter[str]()
    for index in range(40):
        config = sd.choose_round(rng, fixture, index)
        if config.features is None:
            assert index > 0, "the first round always has features"
            continue
        declared = {p for h in config.features.hooks.values() for p in h.programs}
        assert set(config.free(fixture.programs)) == set(fixture.programs) - declared
        for hook in config.features.hooks.values():
            for variant in hook.variants:
                broken[variant.name.partition("!")[2] or "sound"] += 1
                assert sd.works(variant, "paused", ()) == ("!refused" not in variant.name)
                assert sd.works(variant, "enabled", ()) == ("!" not in variant.name)
        weighted = {**sd.WEIGHTS, **sd.FEATURE_WEIGHTS}
        for _ in range(50):
            op = sd.choose_op(rng, fixture, list(weighted), list(weighted.values()), config)
            assert not set(op.programs) & declared, op
    assert min(broken[kind] for kind in ("refused", "missing", "sound")) > 0, broken


# --- the runtime under stress -------------------------------------------------------------------------


def _stress(threads: int, operations: int) -> sd.Report:
    print(f"stress seed {SEED} ({threads} threads; replay with DYNBPF_STRESS_SEED={SEED})")
    report = sd.run(seed=SEED, operations=operations, threads=threads)
    print(f"{report.operations} operations in {report.seconds:.1f} s ({report.rate:.0f}/s), {report.rounds} rounds")
    return report


def _assert_exercised(report: sd.Report, operations: int) -> None:
    assert report.violations == []
    assert report.operations >= operations
    assert report.checks == report.steps + report.rounds
    done = report.outcomes
    for outcome in ("load:new", "load:noop", "unload", "reload", "detach", "clone", "clone:log", "run", "poke"):
        assert done[outcome] > 0, (outcome, done)
    for outcome in ("load_many", "unload_many", "peek", "attach", "attach:iter-read"):
        assert done[outcome] > 0, (outcome, done)
    assert done["run:refused"] > 0, "no operation ever met an unloaded program"
    for outcome in ("apply", "apply_alone", "pause", "resume", "switch", "set_constants", "status"):
        assert done[outcome] > 0, (outcome, done)
    assert done["status:during-apply"] > 0, "status() was never asked while an apply held the lock"


def test_concurrent_lifecycle_keeps_runtime_and_kernel_in_agreement(no_fd_leak: None) -> None:
    report = _stress(threads=4, operations=3000)
    _assert_exercised(report, 3000)
    assert report.rounds >= 3
    done = report.outcomes
    assert done["apply:failed"] + done["pause:failed"] + done["resume:failed"] > 0, "no apply failed"
    assert done["apply_alone:rolled-back"] > 0, "no atomic apply was rolled back alone"


def test_serial_lifecycle_keeps_runtime_and_kernel_in_agreement(no_fd_leak: None) -> None:
    report = _stress(threads=1, operations=800)
    _assert_exercised(report, 800)


# --- runtime bugs the stress driver found (fixed; kept as regressions) ------------------------------------


def test_global_data_maps_can_be_pinned(fixture: sd.Fixture, pin_root: str, no_fd_leak: None) -> None:
    with dynbpf.open(fixture.path, map_policies={".data": "pinned"}, pin_root=pin_root) as coll:
        assert coll.map_exists(".data")
        path = coll.map_pin_path(".data")
    assert path is not None
    assert os.listdir(pin_root) == [os.path.basename(path)]
    assert "." not in os.listdir(pin_root)[0]  # bpffs refuses '.' in names: libbpf's '_' instead


def test_inner_map_of_an_eager_map_of_maps_lives_as_long_as_it(fixture: sd.Fixture, no_fd_leak: None) -> None:
    policies = {"sx_outer": "eager", "sx_inner0": "on_demand"}
    with dynbpf.open(fixture.path, map_policies=policies) as coll:
        inner, outer = coll.map_fd_number("sx_inner0"), coll.map_fd_number("sx_outer")
        assert ks.fd_array_ids(outer, 2) == {0: commands.map_info(inner).id}
        program = coll.programs["sx_xdp_inner"]
        program.load()
        program.unload()
        assert coll.map_exists("sx_inner0"), "freed while the eager outer map holds it"
        program.load()
        assert ks.fd_array_ids(outer, 2) == {0: commands.map_info(inner).id}
