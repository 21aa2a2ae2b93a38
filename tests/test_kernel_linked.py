"""Statically linked objects (``bpftool gen object``) and libbpf's lenient section names, in the kernel.

``tests/bpf/linked/twofiles`` links two files that each define a static
``helper`` doing something else, and static globals of one name; the tag
oracle (test_kernel_tags.py) compares every program with libbpf's load.
Here: each program runs its own code, each static variable is its own, and
what libbpf opens but cannot attach (or cannot load) is handled as libbpf
handles it — per program, not per object.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

import dynbpf
from dynbpf._cli.main import cli
from dynbpf._sys import commands
from dynbpf._sys.constants import ProgType
from dynbpf.errors import AttachError, ObjectFormatError
from tests.bpfbuild import build
from tests.helpers import XDP_DROP, XDP_TX, run_on_packet, run_once
from tests.libbpf_oracle import LibbpfError, open_object

pytestmark = [pytest.mark.needs_clang]

NAMES_APART = {"helper@first.bpf.c", "helper@second.bpf.c"}


def run(coll: dynbpf.Collection, program: str) -> int:
    """A program of the object run once: an XDP one on the test packet, a syscall one without data."""
    fd = coll.programs[program].fd
    xdp = coll.spec.programs[program].kind.prog_type == ProgType.XDP
    return run_on_packet(fd) if xdp else run_once(fd)


def test_same_named_static_functions_stay_apart_in_the_spec() -> None:
    spec = dynbpf.read(build("twofiles"))
    assert set(spec.subprograms) >= NAMES_APART
    assert spec.functions["first_prog"].calls == ("helper@first.bpf.c",)
    assert spec.functions["second_prog"].calls == ("helper@second.bpf.c", "shared_global")
    first, second = (spec.functions[n] for n in sorted(NAMES_APART))
    assert first.symbol_name == second.symbol_name == "helper"
    assert (first.section, first.offset) != (second.section, second.offset)
    assert first.encoded() != second.encoded()  # different code, one name
    assert {"counter@first.bpf.c", "counter@second.bpf.c", "scratch@first.bpf.c", "scratch@second.bpf.c"} <= set(
        spec.variables
    )
    assert spec.variables["counter@first.bpf.c"].initial == (1).to_bytes(4, "little")
    assert spec.variables["counter@second.bpf.c"].initial == (2).to_bytes(4, "little")
    assert {"first_bias", "second_scale"} <= set(spec.variables)  # unique names stay plain


@pytest.mark.kernel
def test_each_program_calls_its_own_static_helper(no_fd_leak: None) -> None:
    with dynbpf.open(build("twofiles")) as coll:
        assert coll.load(["first_prog", "second_prog"]) == {}
        assert run(coll, "first_prog") == 1 + 100 + 1  # first.bpf.c's helper, its own counter
        assert run(coll, "second_prog") == 2 * 1000 + 2 + 7  # second.bpf.c's helper and counter, the shared global
        assert coll.data["counter@first.bpf.c"] == 1
        assert coll.data["counter@second.bpf.c"] == 2
        assert coll.bss["scratch@first.bpf.c"] == 1  # each helper wrote its own static
        assert coll.bss["scratch@second.bpf.c"] == 4
        assert dict(coll.maps["shared_counts"].items()) == {0: 1, 1: 1, 2: 0, 3: 0}  # one map, both files


@pytest.mark.kernel
def test_linked_prog_array_dispatches(no_fd_leak: None) -> None:
    with dynbpf.open(build("twofiles")) as coll:
        assert coll.load(["second_dispatch", "second_stage", "first_stage"]) == {}
        assert run(coll, "second_dispatch") == XDP_DROP  # slot 0 empty: slot 1, second_stage (declared)
        coll.maps["stages"][0] = coll.programs["first_stage"].fd
        assert run(coll, "second_dispatch") == XDP_TX  # the first file's stage, set by user space
        assert coll.maps["shared_counts"][2] == 1


@pytest.mark.kernel
def test_lenient_sections_load_and_attach_only_with_a_target(no_fd_leak: None) -> None:
    with dynbpf.open(build("twofiles")) as coll:
        lenient = ["lenient_uprobe", "lenient_uretprobe", "lenient_tracepoint"]
        assert coll.load(lenient) == {}
        for name in lenient:
            assert coll.spec.programs[name].kind.error is not None
        with pytest.raises(AttachError, match=r"no ':' between binary and function.*passed explicitly"):
            coll.programs["lenient_uprobe"].attach()
        with pytest.raises(AttachError, match=r"malformed tp target 'sched'"):
            coll.programs["lenient_tracepoint"].attach()
        with coll.programs["lenient_uprobe"].attach(path="libc.so.6", symbol="getppid") as link:
            assert "getppid" in repr(link)
        with coll.programs["lenient_tracepoint"].attach(tracepoint="syscalls/sys_enter_getppid"):
            pass


@pytest.mark.kernel
def test_an_unknown_section_fails_its_program_only(no_fd_leak: None) -> None:
    with dynbpf.open(build("twofiles")) as coll:
        unknown = coll.spec.programs["unknown_kind"]
        assert unknown.kind.prog_type == ProgType.UNSPEC
        failures = coll.load(list(coll.programs))
        assert set(failures) == {"unknown_kind"}
        assert "nosuchkind/anything" in str(failures["unknown_kind"])
        assert isinstance(failures["unknown_kind"], ObjectFormatError)
        assert all(p.loaded for n, p in coll.programs.items() if n != "unknown_kind")


def test_libbpf_refuses_static_maps_dynbpf_keeps_them_apart() -> None:
    path = build("staticmaps")
    with pytest.raises(LibbpfError, match="unsupported map linkage static"):
        open_object(path)
    spec = dynbpf.read(path)
    assert set(spec.maps) == {"stats@left.bpf.c", "stats@right.bpf.c"}
    assert spec.maps["stats@left.bpf.c"].max_entries == 2
    assert spec.maps["stats@right.bpf.c"].max_entries == 3


@pytest.mark.kernel
def test_static_maps_of_one_name_are_two_maps(no_fd_leak: None) -> None:
    with dynbpf.open(build("staticmaps")) as coll:
        assert coll.load(["left_prog", "right_prog"]) == {}
        assert (run(coll, "left_prog"), run(coll, "right_prog")) == (1, 2)
        left, right = coll.maps["stats@left.bpf.c"], coll.maps["stats@right.bpf.c"]
        assert (left[0], right[0]) == (10, 20)
        infos = [commands.map_info(m.fd) for m in (left, right)]
        assert [i.max_entries for i in infos] == [2, 3]
        assert [i.name for i in infos] == [b"stats", b"stats"]  # the kernel knows both by the source's name


@pytest.mark.kernel
def test_static_maps_of_one_name_pin_apart(pin_root: str, no_fd_leak: None) -> None:
    """bpffs refuses '.' in a name: the pins of ``stats@left.bpf.c`` and ``stats@right.bpf.c`` say ``_``."""
    with dynbpf.open(build("staticmaps"), map_policy="pinned", pin_root=pin_root) as coll:
        assert coll.load(["left_prog", "right_prog"]) == {}
        assert (run(coll, "left_prog"), coll.maps["stats@left.bpf.c"][0]) == (1, 10)
        paths = {name: coll.map_pin_path(name) for name in ("stats@left.bpf.c", "stats@right.bpf.c")}
    assert sorted(os.listdir(pin_root)) == ["stats@left_bpf_c", "stats@right_bpf_c"]
    assert paths == {n: os.path.join(pin_root, n.replace(".", "_")) for n in paths}
    with dynbpf.open(build("staticmaps"), map_policy="pinned", pin_root=pin_root) as again:
        assert again.load(["left_prog"]) == {}
        assert again.maps["stats@left.bpf.c"][0] == 10  # the pinned map, as the first run left it


def test_inspect_lists_every_subprogram_and_section_problem() -> None:
    result = CliRunner().invoke(cli, ["inspect", "--json", str(build("twofiles"))], catch_exceptions=False)
    listed = json.loads(result.output)
    assert {s["name"] for s in listed["subprograms"]} == NAMES_APART | {"shared_global"}
    programs = {p["name"]: p for p in listed["programs"]}
    assert programs["second_prog"]["subprograms"] == ["helper@second.bpf.c", "shared_global"]
    assert "no ':' between binary and function" in programs["lenient_uprobe"]["error"]
    assert "no program type is known" in programs["unknown_kind"]["error"]
    assert programs["first_prog"]["error"] is None


def test_resizing_a_linked_section_finds_the_right_static() -> None:
    """``scratch@second.bpf.c`` is BTF's ``scratch`` at its offset: the edit finds it and says why it cannot grow."""
    with pytest.raises(dynbpf.MapEditError, match=r"last variable 'scratch@second.bpf.c' is not an array"):
        dynbpf.open(build("twofiles"), map_edits={".bss": dynbpf.MapEdit(value_size=64)})


def test_a_closed_collections_unprepared_program_still_has_a_repr() -> None:
    with dynbpf.open(build("twofiles")) as coll:
        program = coll.programs["first_prog"]
    assert repr(program) == "<Program 'first_prog' closed>"
