"""``dynbpf load``, ``prog``, ``map`` and ``link`` on real objects: what they do to the kernel, their JSON's
shape, their tables at 80 columns, and their errors (exit status 2, nothing loaded)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dynbpf._cli.main import cli
from dynbpf._sys import commands
from tests import kernel_state
from tests.bpfbuild import build
from tests.helpers import assert_schema

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

PROGRAMS = ("on_getppid", "on_getpgid")

LINK = {"id": int, "kind": str, "description": str, "pinned": (str, type(None))}
LOADED = {
    "object": str,
    "path": str,
    "workers": int,
    "load_ms": float,
    "programs": [
        {
            "name": str,
            "type": str,
            "id": int,
            "tag": str,
            "verification_ms": float,
            "pinned": (str, type(None)),
            "links": [LINK],
        }
    ],
    "maps": [{"name": str, "type": str, "id": int, "pinned": (str, type(None))}],
    "pin_dir": (str, type(None)),
    "kept": bool,
}
PROG = {
    "id": int,
    "type": str,
    "name": str,
    "tag": str,
    "gpl": bool,
    "loaded_at": str,
    "uid": int,
    "xlated_bytes": int,
    "jited_bytes": int,
    "verified_insns": int,
    "map_ids": [int],
    "btf_id": int,
    "run_cnt": int,
    "run_time_ns": int,
    "pinned": [str],
}
MAP = {
    "id": int,
    "type": str,
    "name": str,
    "key_size": int,
    "value_size": int,
    "max_entries": int,
    "flags": int,
    "btf_id": int,
    "pinned": [str],
}
HISTOGRAM = {
    "kind": str,
    "unit": str,
    "step": int,
    "base": int,
    "section": object,
    "section_name": (str, type(None)),
    "total": int,
    "buckets": [{"low": int, "high": int, "count": int}],
}
UPDATED = {"map": str, "id": int, "key": object, "value": object}
KERNEL_LINK = {"id": int, "type": str, "kind": str, "prog_id": int, "description": str, "pinned": [str]}
UNLOADED = {
    "unpinned": [str],
    "detached_links": [int],
    "removed_dirs": [str],
    "freed": [{"kind": str, "id": int}],
    "still_held": [{"kind": str, "id": int}],
}


def dynbpf(*args: str) -> Result:
    """The command, as a pipe 80 columns wide would run it."""
    return CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args), catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = dynbpf(*args, "-j")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str, status: int = 2) -> str:
    result = dynbpf(*args)
    assert result.exit_code == status, result.output
    return result.output


@pytest.fixture
def obj() -> str:
    return str(build("cli_tool"))


@pytest.fixture
def loaded(obj: str, pin_root: str) -> Iterator[dict[str, Any]]:
    """cli_tool loaded, attached and pinned under ``<pin_root>/cli_tool``, counting this process's syscalls."""
    report = ok_json("load", obj, "--attach", "--pin", f"{pin_root}/cli_tool", "--const", f"target_tgid={os.getpid()}")
    yield report
    if os.path.isdir(f"{pin_root}/cli_tool"):  # a test that failed half-way: what it left
        dynbpf("prog", "unload", f"{pin_root}/cli_tool")


def on_getpgid(*args: int) -> None:
    for arg in args:
        with contextlib.suppress(OSError):
            os.getpgid(arg)


def gone(ids: set[int], kind: commands.ObjKind) -> bool:
    return kernel_state.eventually(lambda: not (ids & set(commands.ids(kind))))


# --- load ----------------------------------------------------------------------------------------


def test_load_without_pin_keeps_nothing(obj: str) -> None:
    result = dynbpf("load", obj, "--attach", "-j")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert_schema(report, LOADED)
    assert report["kept"] is False
    assert report["pin_dir"] is None
    assert [p["name"] for p in report["programs"]] == list(PROGRAMS)
    assert all(len(p["links"]) == 1 for p in report["programs"])
    assert {m["name"] for m in report["maps"]} >= {"events", "samples", "arg_log2", ".rodata", ".bss"}
    assert gone({p["id"] for p in report["programs"]}, commands.ObjKind.PROG)
    assert gone({m["id"] for m in report["maps"]}, commands.ObjKind.MAP)
    text = refused("load", obj, status=0)
    assert "nothing was pinned: the kernel frees these programs, links and maps as this command exits" in text


def test_a_pinned_load_is_listed_shown_read_and_written(obj: str, pin_root: str, loaded: dict[str, Any]) -> None:
    assert_schema(loaded, LOADED)
    directory = f"{pin_root}/cli_tool"
    assert loaded["kept"] is True
    assert loaded["pin_dir"] == directory
    ids = {p["name"]: p["id"] for p in loaded["programs"]}
    assert sorted(os.listdir(f"{directory}/progs")) == sorted(PROGRAMS)
    assert sorted(os.listdir(f"{directory}/links")) == sorted(PROGRAMS)
    assert "cli_tool_rodata" in os.listdir(f"{directory}/maps")  # libbpf's pin name of .rodata
    assert all(ids[name] in commands.ids(commands.ObjKind.PROG) for name in PROGRAMS)  # outlived the command

    listed = ok_json("prog", "list", "--pin-root", pin_root)
    assert_schema(listed, [PROG])
    assert {p["id"]: p["pinned"] for p in listed} == {ids[n]: [f"{directory}/progs/{n}"] for n in PROGRAMS}
    everything = ok_json("prog", "list", "--all", "--pin-root", pin_root)
    assert_schema(everything, [PROG])
    assert {p["id"] for p in listed} <= {p["id"] for p in everything}

    shown = ok_json("prog", "show", "on_getpgid", "--pin-root", pin_root)
    assert_schema(shown, {**PROG, "links": [KERNEL_LINK]})
    assert shown["id"] == ids["on_getpgid"]
    assert [link["pinned"] for link in shown["links"]] == [[f"{directory}/links/on_getpgid"]]
    assert ok_json("prog", "show", str(ids["on_getpgid"]))["id"] == ids["on_getpgid"]
    assert ok_json("prog", "show", f"{directory}/progs/on_getpgid")["id"] == ids["on_getpgid"]

    on_getpgid(2, 3, 100)
    entries = ok_json("map", "dump", "arg_log2", "--pin-root", pin_root)
    assert_schema(entries, [{"key": int, "value": int}])
    assert {e["key"]: e["value"] for e in entries if e["value"]} == {1: 2, 6: 1}
    hists = ok_json("map", "dump", "by_syscall", "--hist", "log2", "--pin-root", pin_root)
    assert_schema(hists, [HISTOGRAM])
    assert [(h["section_name"], h["section"], h["total"]) for h in hists] == [("syscall", 2, 3)]

    updated = ok_json(
        "map", "update", "settings", "7", '{"level": 3, "on": true, "name": "fast"}', "--pin-root", pin_root
    )
    assert_schema(updated, UPDATED)
    assert updated["value"] == {"level": 3, "on": True, "name": "fast"}
    assert ok_json("map", "dump", f"{directory}/maps/settings") == [{"key": 7, "value": updated["value"]}]
    maps = ok_json("map", "list", "--pin-root", pin_root)
    assert_schema(maps, [MAP])
    assert {m["name"] for m in maps} >= {"events", "arg_log2", "settings", "cli_tool.rodata"}
    links = ok_json("link", "list", "--pin-root", pin_root)
    assert_schema(links, [KERNEL_LINK])
    assert {link["prog_id"] for link in links} == set(ids.values())


def test_detach_then_unload_a_program_then_the_rest_leaves_nothing(pin_root: str, loaded: dict[str, Any]) -> None:
    directory = f"{pin_root}/cli_tool"
    ids = {p["name"]: p["id"] for p in loaded["programs"]}
    on_getpgid(2, 3, 100)
    detached = ok_json("link", "detach", "on_getpgid", "--pin-root", pin_root)
    assert_schema(
        detached,
        {"id": int, "description": str, "prog_id": int, "detached": bool, "unpinned": [str], "freed": bool},
    )
    assert detached["unpinned"] == [f"{directory}/links/on_getpgid"]
    assert detached["freed"]  # a tracepoint link ends with its last holder, the pin

    def counted() -> int:
        return sum(e["value"] for e in ok_json("map", "dump", "arg_log2", "--pin-root", pin_root))

    def not_counted() -> bool:  # the link's id goes a moment before the kernel takes the program off the hook
        before = counted()
        on_getpgid(1000)
        return counted() == before

    assert kernel_state.eventually(not_counted)
    assert not_counted()

    unloaded = ok_json("prog", "unload", "on_getppid", "--pin-root", pin_root)
    assert_schema(unloaded, UNLOADED)
    assert set(unloaded["unpinned"]) == {f"{directory}/progs/on_getppid", f"{directory}/links/on_getppid"}
    assert {"kind": "prog", "id": ids["on_getppid"]} in unloaded["freed"]
    assert unloaded["still_held"] == []

    map_ids = {m["id"] for m in loaded["maps"]}
    everything_left = ok_json("prog", "unload", directory)
    assert_schema(everything_left, UNLOADED)
    assert everything_left["still_held"] == []
    assert directory in everything_left["removed_dirs"]
    assert os.listdir(pin_root) == []  # nothing of the load is left in bpffs
    assert gone(set(ids.values()), commands.ObjKind.PROG)
    assert gone(map_ids, commands.ObjKind.MAP)


def test_map_pin_pins_a_map_found_by_id(obj: str, pin_root: str, loaded: dict[str, Any]) -> None:
    settings = next(m for m in loaded["maps"] if m["name"] == "settings")
    path = f"{pin_root}/extra/settings"
    pinned = ok_json("map", "pin", str(settings["id"]), path)
    assert_schema(pinned, MAP)
    assert pinned["pinned"] == [path]
    with commands.obj_get(path) as fd:
        assert commands.map_info(fd.raw).id == settings["id"]
    os.unlink(path)
    os.rmdir(f"{pin_root}/extra")


def test_tables_fit_80_columns_and_never_cut_a_name(obj: str, pin_root: str, loaded: dict[str, Any]) -> None:
    names = {p["name"] for p in loaded["programs"]} | {m["name"] for m in loaded["maps"] if "." not in m["name"]}
    outputs = [
        dynbpf("prog", "list", "--pin-root", pin_root).stdout,
        dynbpf("map", "list", "--pin-root", pin_root).stdout,
        dynbpf("link", "list", "--pin-root", pin_root).stdout,
        dynbpf("prog", "show", "on_getppid", "--pin-root", pin_root).stdout,
        dynbpf("map", "dump", "arg_log2", "--hist", "log2", "--pin-root", pin_root).stdout,
        dynbpf("load", obj, "--attach").stdout,
    ]
    for out in outputs:
        lines = out.splitlines()
        assert lines, outputs
        assert max(len(line) for line in lines) <= 80, out
        assert "…" not in out
        assert not any(line != line.rstrip() for line in lines), out
        assert not any(c in out for c in "┃━│─┏"), out  # no box drawing: a pipe gets plain text
    words = set(" ".join(outputs).split())
    assert names <= words  # every name whole, on one line
    assert outputs[0].splitlines()[0].split() == ["ID", "TYPE", "NAME", "TAG", "PINNED"]


def test_a_terminal_gets_a_progress_bar_a_pipe_does_not(obj: str) -> None:
    import pty
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    command = str(Path(sys.executable).parent / "dynbpf")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its stdout and stderr are the terminal
        os.execve(command, [command, "load", obj], env)
    seen = b""
    with contextlib.suppress(OSError):  # EIO: the child closed the terminal
        while chunk := os.read(terminal, 65536):
            seen += chunk
    os.close(terminal)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, seen
    assert b"verifying" in seen
    assert b"2/2" in seen
    assert "verifying" not in dynbpf("load", obj).output


# --- errors -----------------------------------------------------------------------------------------


@pytest.fixture
def nothing_loaded() -> Iterator[None]:
    """The test's commands leave no program of cli_tool or lifecycle loaded."""
    before = set(kernel_state.kernel_progs_named(("on_get", "refused", "prog")))
    yield
    assert kernel_state.eventually(
        lambda: set(kernel_state.kernel_progs_named(("on_get", "refused", "prog"))) <= before
    )


def test_bad_objects_and_names_exit_2_with_nothing_loaded(obj: str, tmp_path: Path, nothing_loaded: None) -> None:
    not_elf = tmp_path / "notes.bpf.o"
    not_elf.write_text("not an object\n")
    assert "is not a BPF object dynbpf can read" in refused("load", str(not_elf))
    assert "does not exist" in refused("load", str(tmp_path / "missing.bpf.o"))
    out = refused("load", obj, "-p", "on_getpid")
    assert "-p" in out
    assert "no program 'on_getpid'; did you mean 'on_getppid'" in out
    out = refused("load", obj, "--map", "event.max_entries=8")
    assert "no map 'event'; did you mean 'events'" in out
    assert "max_entries takes an integer, not 'many'" in refused("load", obj, "--map", "events.max_entries=many")
    assert "FIELD one of" in refused("load", obj, "--map", "events.size=8")


@pytest.mark.parametrize(
    ("const", "message"),
    [
        ("emit_events=maybe", "'maybe' is not a bool (true/false, yes/no, on/off, 1/0) for bool"),
        ("target_tgid=12a", "'12a' is not an integer for u32 (unsigned, 32 bits)"),
        ("target_tgid=-1", "target_tgid: -1 does not fit unsigned int (range 0..4294967295); expected an integer"),
        ("label=far-too-long", "label: char[8] holds 8 bytes, got 12; expected text of at most 8 bytes for char[8]"),
        ("bias=0x10000000000000000", "bias: 18446744073709551616 does not fit long long"),
        ("biass=1", "no read-only global 'biass'; did you mean 'bias'"),
        ("target_tgid", "'target_tgid' is not NAME=VALUE"),
    ],
)
def test_constants_are_read_as_their_btf_type(obj: str, const: str, message: str, nothing_loaded: None) -> None:
    out = refused("load", obj, "--const", const)
    assert "--const" in out
    assert message in out


def test_constants_of_each_type_reach_the_programs(obj: str) -> None:
    report = ok_json(
        "load",
        obj,
        "--const",
        "emit_events=no",
        "--const",
        "label=cli",
        "--const",
        "bias=-5",
        "--const",
        "target_tgid=0x10",
    )
    assert len(report["programs"]) == 2  # (what they read is checked through events in test_cli_run.py)


def test_pins_are_refused_before_anything_loads(obj: str, pin_root: str, tmp_path: Path, nothing_loaded: None) -> None:
    out = refused("load", obj, "--pin", str(tmp_path / "pins"))
    assert "is not on a BPF filesystem" in out
    assert not (tmp_path / "pins").exists()
    taken = f"{pin_root}/taken"
    os.makedirs(f"{taken}/progs")  # an empty directory is fine
    report = ok_json("load", obj, "-p", "on_getppid", "--pin", taken)
    assert "exists" in refused("load", obj, "-p", "on_getppid", "--pin", taken)
    dynbpf("prog", "unload", taken)
    assert gone({report["programs"][0]["id"]}, commands.ObjKind.PROG)


def test_a_verifier_rejection_exits_1_and_loads_nothing(nothing_loaded: None) -> None:
    out = refused("load", str(build("lifecycle")), "-p", "prog1", "-p", "refused", status=1)
    assert "dynbpf: error: 1 of the programs did not load, so none stays loaded" in out
    assert "refused" in out


def test_an_attach_failure_exits_1_and_leaves_nothing(pin_root: str, nothing_loaded: None) -> None:
    out = refused(
        "load", str(build("docs_agent")), "-p", "count_malloc", "--attach", "--pin", f"{pin_root}/a", status=1
    )
    assert "dynbpf: error:" in out
    assert "count_malloc" in out
    assert os.listdir(pin_root) == []


def test_references_that_name_nothing(pin_root: str) -> None:
    assert "the kernel has no program with id 4000000000" in refused("prog", "show", "4000000000")
    assert f"no map named 'nosuch' (maps pinned under {pin_root}: none" in refused(
        "map", "dump", "nosuch", "--pin-root", pin_root
    )
    assert "nothing is pinned at /sys/fs/bpf/nosuch" in refused("link", "detach", "/sys/fs/bpf/nosuch")


def test_unloading_what_dynbpf_did_not_pin_is_refused(obj: str, loaded: dict[str, Any], tmp_path: Path) -> None:
    prog_id = loaded["programs"][0]["id"]
    out = refused("prog", "unload", str(prog_id), "--pin-root", str(tmp_path), status=1)
    assert f"program {prog_id} (on_getppid) is not pinned under {tmp_path}" in out


def test_map_values_are_read_as_the_maps_types(obj: str, pin_root: str, loaded: dict[str, Any]) -> None:
    root = ("--pin-root", pin_root)
    out = refused("map", "update", "settings", "x", "{}", *root)
    assert "KEY" in out
    assert "'x' is not an integer for unsigned int (unsigned, 32 bits)" in out
    out = refused("map", "update", "settings", "1", '{"level": 1, "of": true}', *root)
    assert "struct setting has no field 'of' (fields: level, on, name)" in out
    assert "not JSON" in refused("map", "update", "settings", "1", "{level: 1}", *root)
    assert "ringbuf maps are read with a ring buffer reader" in refused("map", "dump", "events", *root)
    ok_json("map", "update", "settings", "1", '{"level": 1}', *root)
    assert "neither one count nor one array" in refused("map", "dump", "settings", "--hist", "log2", *root)
