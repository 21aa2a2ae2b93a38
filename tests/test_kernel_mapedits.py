"""Maps edited before creation, global-data maps as libbpf creates them, mmap'd globals; libbpf 1.1 as oracle.

The fixture tests/bpf/map_edits.bpf.c leaves sizes for the loader, as real
tools do (stack traces, one slot per CPU, a map of ring buffers, a resizable
``.data.buf``). Every edit is made the dynbpf way (``MapEdit``) and the
libbpf way (its setters, through tests/libbpf_oracle.py), and the kernel's
``bpf_map_info`` of both results must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import dynbpf
from dynbpf import MapEdit, MapEditError
from dynbpf._btf.types import Array, Datasec, Var
from dynbpf._maps import Map
from dynbpf._runtime.mapcreate import kernel_name
from dynbpf._sys import commands
from dynbpf._sys.constants import MapFlags, MapType
from dynbpf.errors import StateError, SyscallError, VerifierError
from tests import kernel_state as ks
from tests import stress_driver as sd
from tests.bpfbuild import build
from tests.helpers import BUF_ENTRIES, BUF_SIZE, CPUS, EDITS, RING, XDP_PASS, libbpf_edits, ring_buffer, run_on_packet
from tests.libbpf_oracle import created_maps, load_one, map_facts, map_name

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


@pytest.fixture(scope="module")
def obj() -> Path:
    return build("map_edits")


def facts(coll: dynbpf.Collection) -> dict[str, dict[str, int | str]]:
    return {n: map_facts(coll.map_fd_number(n)) for n in coll.prepared.maps if coll.map_exists(n)}


# --- sizes left to the loader -------------------------------------------------------------------


def test_zero_sized_maps_open_and_fail_clearly_only_when_created(obj: Path, no_fd_leak: None) -> None:
    with dynbpf.open(obj, map_policy="on_demand") as coll:  # nothing created yet: fine
        with pytest.raises(SyscallError, match=r"map 'stacks'.*map_edits=\{'stacks': MapEdit\(max_entries=\.\.\., "):
            coll.programs["tp_stack"].load()
        assert not coll.map_exists("stacks")
        assert coll.programs["xdp_globals"].load()  # other programs are not affected
    with pytest.raises(SyscallError, match=r"EINVAL.*map 'per_cpu_slots'.*MapEdit\(max_entries=\.\.\.\)"):
        dynbpf.open(obj)  # eager: every map is created at open


def test_edited_maps_are_created_as_libbpf_creates_them(obj: Path, no_fd_leak: None) -> None:
    with ring_buffer(RING) as inner:
        theirs = created_maps(obj, libbpf_edits(inner))
    with dynbpf.open(obj, map_edits=EDITS) as coll:
        ours = facts(coll)
    assert ours == theirs
    # names and flags of global-data maps included: libbpf's truncation, BPF_F_MMAPABLE where libbpf sets it
    assert ours[".bss"]["name"] == "map_edit.bss" == kernel_name("map_edits", ".bss")
    assert ours[".data.buf"]["name"] == ".data.buf"
    assert ours[".bss"]["map_flags"] == MapFlags.MMAPABLE
    assert ours[".rodata"]["map_flags"] == MapFlags.MMAPABLE | MapFlags.RDONLY_PROG
    assert ours[".data.priv"]["map_flags"] == 0  # static variables only: nothing for a skeleton to map
    assert ours["stacks"]["value_size"] == 127 * 8
    assert ours[".data.buf"]["value_size"] == BUF_SIZE


@pytest.mark.parametrize(
    ("name", "edit", "libbpf"),
    [
        # libbpf-tools' compat.c without ring buffers: the ring buffer becomes a perf event array
        (
            "events",
            MapEdit(type=MapType.PERF_EVENT_ARRAY, key_size=4, value_size=4, max_entries=0),
            {"type": MapType.PERF_EVENT_ARRAY, "key_size": 4, "value_size": 4, "max_entries": 0},
        ),
        ("table", MapEdit(flags=MapFlags.NO_PREALLOC, max_entries=4096), {"flags": 1, "max_entries": 4096}),
        ("table", MapEdit(key_size=8, value_size=16), {"key_size": 8, "value_size": 16}),
        ("table", MapEdit(flags=MapFlags.NUMA_NODE, numa_node=0), {"flags": MapFlags.NUMA_NODE, "numa_node": 0}),
        ("table", MapEdit(type=MapType.LRU_HASH), {"type": MapType.LRU_HASH}),
        ("heap", MapEdit(type=MapType.ARRAY, max_entries=8), {"type": MapType.ARRAY, "max_entries": 8}),
        (".bss", MapEdit(flags=0), {"flags": 0}),
        (".data.priv", MapEdit(flags=MapFlags.MMAPABLE), {"flags": MapFlags.MMAPABLE}),
        (".data.buf", MapEdit(value_size=8 + 8 * 3), {"value_size": 8 + 8 * 3}),
    ],
    ids=lambda v: "" if isinstance(v, dict | MapEdit) else str(v),
)
def test_each_edit_as_libbpf(obj: Path, name: str, edit: MapEdit, libbpf: dict[str, object], no_fd_leak: None) -> None:
    with ring_buffer(RING) as inner:
        theirs = created_maps(obj, {**libbpf_edits(inner), name: libbpf})
    with dynbpf.open(obj, map_edits={**EDITS, name: edit}) as coll:
        ours = facts(coll)
        if edit.key_size is not None:  # the declared key/value types no longer fit: created without them
            assert commands.map_info(coll.map_fd_number(name)).btf_key_type_id == 0
    assert ours[name] == theirs[name]
    assert ours == theirs


def test_inner_map_template_is_edited(obj: Path, no_fd_leak: None) -> None:
    without = {**EDITS, "rings": MapEdit(max_entries=CPUS)}
    with pytest.raises(SyscallError, match=r"'rings.inner'.*map_edits=\{'rings': MapEdit\(inner=MapEdit\(max_entries="):
        dynbpf.open(obj, map_edits=without)  # the ring size is left to the loader
    with dynbpf.open(obj, map_edits=EDITS) as coll, ring_buffer(RING) as ring:
        inner = coll.spec.maps["rings"].inner
        assert inner is not None
        assert (inner.type, inner.max_entries) == (MapType.RINGBUF, RING)
        coll.maps["rings"][0] = ring
        assert coll.maps["rings"][0] == commands.map_info(ring.raw).id


def test_inner_map_fd_gives_the_template(obj: Path, no_fd_leak: None) -> None:
    with ring_buffer(2 * RING) as template, ring_buffer(2 * RING) as same:
        edits = {**EDITS, "rings": MapEdit(max_entries=CPUS, inner_map_fd=template.raw)}
        with dynbpf.open(obj, map_edits=edits) as coll:
            coll.maps["rings"][0] = same
            assert coll.spec.maps["rings"].inner is not None
            assert coll.spec.maps["rings"].inner.max_entries == 2 * RING


def test_resized_section_resizes_its_last_array_in_btf(obj: Path, no_fd_leak: None) -> None:
    """libbpf 1.2+'s map_btf_datasec_resize: a new ARRAY type of the new length for the last VAR."""
    with dynbpf.open(obj, map_edits=EDITS) as coll:
        btf = coll.prepared.btf
        assert btf is not None
        spec = coll.prepared.maps[".data.buf"]
        datasec = btf[spec.value_type]
        assert isinstance(datasec, Datasec)
        assert datasec.size == BUF_SIZE
        last = datasec.vars[-1]
        var = btf[last.type]
        assert isinstance(var, Var)
        assert var.name == "buf"
        array = btf[var.type]
        assert isinstance(array, Array)
        assert array.nelems == BUF_ENTRIES
        assert (last.offset, last.size) == (8, 8 * BUF_ENTRIES)
        # the kernel took the map with that BTF (libbpf 1.1, which cannot resize BTF, creates it without)
        info = commands.map_info(coll.map_fd_number(".data.buf"))
        assert info.btf_value_type_id == spec.value_type
        view = coll.variables(".data.buf")
        assert view.buf == [1] + [0] * (BUF_ENTRIES - 1)  # the initial value, zero-extended


# --- create=False -------------------------------------------------------------------------------


def test_a_map_not_created_poisons_its_loads_as_libbpf_does(obj: Path, no_fd_leak: None) -> None:
    edits = {**EDITS, "heap": MapEdit(create=False)}
    with ring_buffer(RING) as inner:
        lib = load_one(obj, "xdp_heap", edits={**libbpf_edits(inner), "heap": {"create": False}})
    assert lib.loaded, lib.why()  # the use of heap is dead code while use_heap is false
    with dynbpf.open(obj, map_edits=edits) as coll:
        assert not coll.map_exists("heap")
        with pytest.raises(StateError, match=r"map 'heap' is not created.*create=False"):
            coll.maps["heap"]
        prog = coll.programs["xdp_heap"]
        prog.load()
        assert prog.tag == lib.tag  # the same poisoned instructions
        assert "heap" not in prog.maps
        assert run_on_packet(prog.fd) == XDP_PASS
    with dynbpf.open(obj, map_edits=edits, constants={"use_heap": True}) as coll:
        with pytest.raises(VerifierError, match=r"map 'heap' is not created \(MapEdit\(create=False\)\)") as e:
            coll.programs["xdp_heap"].load()
        assert "unknown#2001000000" in e.value.message


# --- invalid edits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edits", "where", "text"),
    [
        ({"table": MapEdit(max_entries=-1)}, ("table", "max_entries"), "from 0 to 2\\*\\*32 - 1"),
        ({"table": MapEdit(value_size=1 << 32)}, ("table", "value_size"), "from 0 to"),
        ({"table": MapEdit(key_size=True)}, ("table", "key_size"), "must be an int"),
        ({"events": MapEdit(key_size=4)}, ("events", "key_size"), "ringbuf maps have no keys"),
        ({"events": MapEdit(value_size=8)}, ("events", "value_size"), "ringbuf maps have no values"),
        ({".bss": MapEdit(key_size=8)}, (".bss", "key_size"), "one-element array"),
        ({".bss": MapEdit(max_entries=2)}, (".bss", "max_entries"), "one-element array"),
        ({".bss": MapEdit(value_size=64)}, (".bss", "value_size"), "'runs' is not an array"),
        ({".data.buf": MapEdit(value_size=8 + 12)}, (".data.buf", "value_size"), "give 8 \\+ n \\* 8"),
        ({".data.buf": MapEdit(value_size=8)}, (".data.buf", "value_size"), "leave 0 for the last variable 'buf'"),
        ({"table": MapEdit(inner=MapEdit(max_entries=1))}, ("table", "inner"), "only maps of maps"),
        ({"rings": MapEdit(inner=MapEdit(create=False))}, ("rings.inner", "create"), "only takes definition"),
        ({"rings": MapEdit(inner_map_fd=0)}, ("rings", "inner_map_fd"), "fd 0 is not a map"),
        ({"table": MapEdit(type=999)}, ("table", "type"), "not a map type"),
        ({"table": MapEdit(reuse_fd=3, reuse_pin="/x")}, ("table", "reuse_fd"), "not both"),
        ({"table": MapEdit(create=False, reuse_fd=3)}, ("table", "create"), "cannot reuse"),
        ({"table": MapEdit(reuse_pin="/sys/fs/bpf/dynbpf-no-such-pin")}, ("table", "reuse_pin"), "cannot open"),
    ],
)
def test_invalid_edits_name_map_and_field_and_create_nothing(
    obj: Path, edits: dict[str, MapEdit], where: tuple[str, str | None], text: str, no_fd_leak: None
) -> None:
    before = ks.held_map_ids()  # this process's: the kernel-wide list also has other test runs' maps
    with pytest.raises(MapEditError, match=text) as e:
        dynbpf.open(obj, map_edits={**EDITS, **edits})
    assert (e.value.map, e.value.field) == where
    assert isinstance(e.value, ValueError)
    assert ks.held_map_ids() - before == set(), "a refused open created maps"


# --- reuse ----------------------------------------------------------------------------------------


def test_reuse_fd_and_reuse_pin_share_one_map(obj: Path, pin_root: str, no_fd_leak: None) -> None:
    with dynbpf.open(obj, map_edits=EDITS) as first:
        table = first.map_fd_number("table")
        pin = os.path.join(pin_root, "table")
        commands.obj_pin(table, pin)
        with (
            dynbpf.open(obj, map_edits={**EDITS, "table": MapEdit(reuse_fd=table)}) as by_fd,
            dynbpf.open(obj, map_edits={**EDITS, "table": MapEdit(reuse_pin=pin)}) as by_pin,
        ):
            ids = {commands.map_info(c.map_fd_number("table")).id for c in (first, by_fd, by_pin)}
            assert len(ids) == 1
            by_fd.maps["table"][7] = 49
            assert first.maps["table"][7] == by_pin.maps["table"][7] == 49
        assert first.maps["table"][7] == 49  # the reusers closed their own references only
        with pytest.raises(MapEditError, match=r"fd \d+ has type percpu_array, the object declares hash") as e:
            dynbpf.open(obj, map_edits={**EDITS, "table": MapEdit(reuse_fd=first.map_fd_number("heap"))})
        assert (e.value.map, e.value.field) == ("table", "reuse_fd")


def test_a_reused_global_data_map_is_not_reinitialised(obj: Path, no_fd_leak: None) -> None:
    with dynbpf.open(obj, map_edits=EDITS) as first:
        first.data.input = 41
        edits = {**EDITS, ".data": MapEdit(reuse_fd=first.map_fd_number(".data"))}
        with dynbpf.open(obj, map_edits=edits) as second:
            assert second.data.input == 41  # libbpf does not populate a reused map either
            second.data.input = 42
            assert first.data.input == 42


# --- .rodata bound to every program ------------------------------------------------------------------


def test_rodata_is_bound_to_programs_that_do_not_use_it(obj: Path, no_fd_leak: None) -> None:
    with ring_buffer(RING) as inner:
        lib = load_one(obj, "xdp_ring", edits=libbpf_edits(inner))
    assert lib.loaded, lib.why()
    with dynbpf.open(obj, map_edits=EDITS, map_policy="on_demand") as coll:
        prog = coll.programs["xdp_ring"]
        assert ".rodata" not in prog.prepared.maps
        assert ".rodata" in prog.maps
        prog.load()
        assert coll.map_exists(".rodata")  # it must exist while the program holds it
        fds = [coll.map_fd_number(n) for n in coll.prepared.maps if coll.map_exists(n)]
        names = {commands.map_info(fd).id: map_name(fd) for fd in fds}
        assert (
            {names[i] for i in commands.prog_map_ids(prog.fd)} == lib.used_maps == {".rodata", "per_cpu_slots", "rings"}
        )
        prog.unload()
        assert not coll.map_exists(".rodata")


# --- mmap'd globals -----------------------------------------------------------------------------------


def test_globals_through_the_mapping_both_ways(obj: Path, no_fd_leak: None) -> None:
    constants = {"buf_entries": BUF_ENTRIES, "step": 3}
    with dynbpf.open(obj, map_edits=EDITS, constants=constants) as coll:
        data, bss, buf = coll.data, coll.bss, coll.variables(".data.buf")
        assert all(v._mapping is not None for v in (data, bss, buf))
        data.input = 5  # user space writes through the mapping...
        bss.slot = 50
        assert Map(coll.map_fd_number(".data"))[0][:8] == (5).to_bytes(8, "little")  # ...which is the map's memory
        prog = coll.programs["xdp_globals"]
        prog.load()
        assert run_on_packet(prog.fd) == XDP_PASS
        # ...and reads what the program wrote, without a syscall
        assert (bss.output, bss.runs) == (15, 1)
        private = coll.variables(".data.priv")
        assert private._mapping is None  # not mmap-able (static variables only): through the fd
        assert private.private_count == 6
        assert (buf.buf_used, buf.buf[50]) == (51, 15 + 6)
        rodata = coll.rodata
        assert rodata._mapping is not None
        assert (rodata.step, rodata.buf_entries) == (3, BUF_ENTRIES)
        with pytest.raises(StateError, match="frozen"):
            rodata.step = 4
        assert coll.bss is bss  # one view per mapping


def test_the_mapping_follows_an_on_demand_map(obj: Path, no_fd_leak: None) -> None:
    with dynbpf.open(obj, map_edits=EDITS, map_policy="on_demand") as coll:
        prog = coll.programs["xdp_globals"]
        prog.load()
        run_on_packet(prog.fd)
        old = coll.bss
        assert old.runs == 1
        first_id = commands.map_info(coll.map_fd_number(".bss")).id
        prog.unload()
        with pytest.raises(StateError, match=r"map '\.bss' of 'map_edits': it was freed.*stale"):
            _ = old.runs
        with pytest.raises(StateError, match="stale"):
            old.runs = 3
        # the mapping held no reference: the kernel map is really gone
        assert ks.eventually(lambda: not ks.alive(commands.ObjKind.MAP, [first_id]))
        with pytest.raises(StateError, match="on demand"):
            _ = coll.bss
        prog.load()
        new = coll.bss
        assert new is not old
        assert new.runs == 0  # a fresh map, a fresh mapping
        run_on_packet(prog.fd)
        assert new.runs == 1
        with pytest.raises(StateError, match="stale"):
            _ = old.runs
    with pytest.raises(StateError, match="stale"):
        _ = new.runs


# --- pins shared with libbpf (bpftool) ----------------------------------------------------------------


def bpftool(*args: str) -> Any:
    run = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr + run.stdout
    return json.loads(run.stdout) if run.stdout.strip() else None


@pytest.mark.needs_bpftool
def test_pins_are_shared_with_libbpf_both_ways(pin_root: str, no_fd_leak: None) -> None:
    obj = build("globals")
    progs, maps = os.path.join(pin_root, "progs"), os.path.join(pin_root, "maps")
    # libbpf (bpftool) pins first; dynbpf finds every map under libbpf's name and reuses it
    bpftool("prog", "loadall", str(obj), progs, "pinmaps", maps)
    pinned = _pinned_ids(maps)
    with dynbpf.open(obj, map_policy="pinned", pin_root=maps) as coll:
        ours = {
            os.path.basename(coll.map_pin_path(n) or ""): commands.map_info(coll.map_fd_number(n)).id
            for n in coll.prepared.maps
        }
        assert ours == pinned
        assert {"globals_bss", "_data_custom"} <= set(ours)
    sd.remove_pins(progs)
    sd.remove_pins(maps)
    os.makedirs(maps)
    # dynbpf pins first; libbpf (bpftool, map ... pinned ...) reuses them
    with dynbpf.open(obj, map_policy="pinned", pin_root=maps) as coll:
        reuse = []
        for n in coll.prepared.maps:
            reuse += ["map", "name", kernel_name("globals", n), "pinned", coll.map_pin_path(n) or ""]
        ours_ids = {commands.map_info(coll.map_fd_number(n)).id for n in coll.prepared.maps}
    bpftool("prog", "loadall", str(obj), progs, *reuse)
    with commands.obj_get(os.path.join(progs, "count_writes")) as prog:
        assert set(commands.prog_map_ids(prog.raw)) <= ours_ids


def _pinned_ids(directory: str) -> dict[str, int]:
    out = {}
    for name in os.listdir(directory):
        with commands.obj_get(os.path.join(directory, name)) as fd:
            out[name] = int(commands.map_info(fd.raw).id)
    return out
