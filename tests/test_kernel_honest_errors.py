"""Errors callers can catch one by one, and messages that say what is true (issue 13 items 11 and 12).

Every runtime failure is a specific ``DynbpfError`` subclass; an unknown name,
wherever it is given, is ``dynbpf.NotFound`` (a ``KeyError`` and a
``ValueError`` too); a missing directory is reported as missing; map types are
named, not numbered. Each test fails on the code before its fix.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import dynbpf
from dynbpf import MapEdit
from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

SRC = Path(dynbpf.__file__).resolve().parent  # the package under test
DOCS = Path(__file__).resolve().parent.parent / "docs"


def agent() -> Path:
    return build("docs_agent")


# --- item 11: one specific class per failure -------------------------------------------------------


def test_no_public_call_raises_the_bare_root_class() -> None:
    """33 places raised DynbpfError itself: a caller could not catch a pin problem apart from a corrupt ring."""
    bare = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id == "DynbpfError":
                    bare.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert bare == []


def test_every_error_class_is_public_and_documented() -> None:
    import dynbpf.errors

    defined = {
        name
        for name, value in vars(dynbpf.errors).items()
        if isinstance(value, type) and issubclass(value, dynbpf.DynbpfError)
    }
    assert defined <= set(dynbpf.__all__)
    text = (DOCS / "architecture.md").read_text()
    errors = text[text.index("## Errors") :]
    for name in defined:
        assert f"`{name}`" in errors, f"{name} is not in docs/architecture.md's Errors section"


def test_kind_of_failure_decides_the_class(pin_root: str, no_fd_leak: None) -> None:
    """Each of these raised plain DynbpfError before."""
    from dynbpf._sys.cpus import parse_cpu_list

    with pytest.raises(dynbpf.KernelDataError, match="malformed CPU list"):
        parse_cpu_list("0-x")
    no_btf = build("legacy_maps", ("-g0",))
    with pytest.raises(dynbpf.OptionError, match="constants=: object 'legacy_maps' has no BTF"):
        dynbpf.open(no_btf, constants={"anything": 1})
    with dynbpf.open(no_btf) as coll, pytest.raises(dynbpf.OptionError, match=r"record='struct x'.*has no BTF"):
        coll.perf_buffer("drops", record="struct x")
    # it said "has no data section '.bss' (data sections: .rodata, .data, ..., .bss)"
    with dynbpf.open(build("globals", ("-g0",))) as coll, pytest.raises(dynbpf.OptionError, match="has no BTF"):
        coll.bss  # noqa: B018
    with dynbpf.open(agent()) as coll:
        commands_pin = os.path.join(pin_root, "a_map")
        from dynbpf._sys import commands

        commands.obj_pin(coll.map_fd_number("exec_count"), commands_pin)
        with pytest.raises(dynbpf.PinError, match="pins a BPF map, not a link") as e:
            dynbpf.Link.from_pin(commands_pin)
        assert e.value.path == commands_pin
    os.mkdir(os.path.join(pin_root, "empty"))
    with pytest.raises(dynbpf.PinError, match="empty bpffs directory"):
        dynbpf.Link.from_pin(os.path.join(pin_root, "empty"))
    from dynbpf._btf import kernel as kernel_btf
    from dynbpf._runtime.collection import KernelView

    stand_in = KernelView(vmlinux=kernel_btf.vmlinux())
    with pytest.raises(dynbpf.OptionError, match="cache=: a prepared cache needs the running kernel's BTF"):
        dynbpf.Collection(dynbpf.read(agent()), cache=True, kernel=stand_in)


def test_a_pinned_map_of_another_type_is_a_pin_error_naming_both_types(pin_root: str, no_fd_leak: None) -> None:
    """The message said "has type 1, the object declares 27" (issue 13 item 12)."""
    from dynbpf._sys import commands

    with dynbpf.open(agent()) as coll:
        commands.obj_pin(coll.map_fd_number("exec_count"), os.path.join(pin_root, "events"))  # a hash as "events"
    with pytest.raises(dynbpf.PinError, match=r"has type hash, the object declares ringbuf.*remove the pin") as e:
        dynbpf.open(agent(), map_policies={"events": "pinned"}, pin_root=pin_root)
    assert e.value.path == os.path.join(pin_root, "events")


# --- item 11: an unknown name is NotFound, wherever it is given --------------------------------------

#: (what is done, the unknown name, the close match suggested): every way a caller names a program,
#: map, data section or global. Before, these raised KeyError, ValueError, MapEditError, DynbpfError,
#: AttributeError, or a KeyError whose message was the bare name.
UNKNOWN_NAMES: dict[str, tuple[Callable[[dynbpf.Collection], object], str, str]] = {
    "disabled=": (lambda c: dynbpf.open(agent(), disabled=["handle_exe"]), "handle_exe", "handle_exec"),
    "constants=": (lambda c: dynbpf.open(agent(), constants={"target_tgd": 1}), "target_tgd", "target_tgid"),
    "map_policies=": (lambda c: dynbpf.open(agent(), map_policies={"exec_cont": "eager"}), "exec_cont", "exec_count"),
    "map_edits=": (
        lambda c: dynbpf.open(agent(), map_edits={"exec_cont": MapEdit(max_entries=1)}),
        "exec_cont",
        "exec_count",
    ),
    "coll.load([...])": (lambda c: c.load(["handle_exe"]), "handle_exe", "handle_exec"),
    "coll.unload([...])": (lambda c: c.unload(["handle_exe"]), "handle_exe", "handle_exec"),
    "coll.programs[...]": (lambda c: c.programs["handle_exe"], "handle_exe", "handle_exec"),
    "coll.maps[...]": (lambda c: c.maps["exec_cont"], "exec_cont", "exec_count"),
    "coll.variables(...)": (lambda c: c.variables(".bs"), ".bs", ".bss"),
    "coll.map_policy(...)": (lambda c: c.map_policy("exec_cont"), "exec_cont", "exec_count"),
    "coll.map_exists(...)": (lambda c: c.map_exists("exec_cont"), "exec_cont", "exec_count"),
    "coll.map_fd_number(...)": (lambda c: c.map_fd_number("exec_cont"), "exec_cont", "exec_count"),
    "coll.ring_buffer(...)": (lambda c: c.ring_buffer("event"), "event", "events"),
    "coll.perf_buffer(...)": (lambda c: c.perf_buffer("sample"), "sample", "samples"),
    "coll.bss[...]": (lambda c: c.bss["hit"], "hit", "hits"),
    "coll.prepared.result(...)": (lambda c: c.prepared.result("handle_exe"), "handle_exe", "handle_exec"),
}


@pytest.mark.parametrize("where", list(UNKNOWN_NAMES))
def test_an_unknown_name_is_not_found_wherever_it_is_given(where: str, no_fd_leak: None) -> None:
    act, name, close = UNKNOWN_NAMES[where]
    with dynbpf.open(agent()) as coll, pytest.raises(dynbpf.NotFound) as e:
        act(coll)
    err = e.value
    assert isinstance(err, dynbpf.DynbpfError)
    assert isinstance(err, KeyError)  # the Mapping contract of coll.programs / coll.maps
    assert isinstance(err, ValueError)  # an option's value naming nothing
    assert err.name == name
    assert close in err.known
    message = str(err)
    assert f"has no {err.kind} {name!r}" in message
    assert f"did you mean {close!r}" in message
    assert not message.startswith(("'", '"'))  # not KeyError's quoted repr
    if where.endswith("="):
        assert message.startswith(where)  # an option says which option


def test_an_unknown_variable_attribute_is_still_an_attribute_error(no_fd_leak: None) -> None:
    with dynbpf.open(agent()) as coll:
        assert getattr(coll.bss, "hit", None) is None  # getattr's default needs an AttributeError
        with pytest.raises(AttributeError, match="has no variable 'hit'; did you mean 'hits'"):
            _ = coll.bss.hit
        with pytest.raises(AttributeError, match="has no variable 'hit'"):
            coll.bss.hit = 1
        assert "hit" not in coll.programs
        assert "nope" not in coll.maps
        assert coll.programs.get("nope") is None


def test_not_found_lists_a_long_list_in_part_but_the_close_matches_always() -> None:
    known = [f"prog_{i:03}" for i in range(200)]
    err = dynbpf.NotFound("object 'big'", "program", "prog_1999", known)
    assert "did you mean 'prog_199'" in str(err)
    assert "(200 in all)" in str(err)
    assert len(str(err)) < 600
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.known) == (dynbpf.NotFound, str(err), err.known)


def test_the_cli_says_which_programs_there_are(no_fd_leak: None) -> None:
    from click.testing import CliRunner

    from dynbpf._cli.main import cli

    result = CliRunner().invoke(cli, ["inspect", str(agent()), "--disasm", "handle_exe"])
    assert isinstance(result.exception, dynbpf.NotFound)  # main() prints it as one line (test_cli_inspect.py)
    assert "object 'docs_agent' has no program 'handle_exe'; did you mean 'handle_exec'?" in str(result.exception)


# --- item 12: a missing directory is missing -------------------------------------------------------


def test_a_pin_root_that_does_not_exist_says_so(pin_root: str, tmp_path: Path, no_fd_leak: None) -> None:
    """It said "/sys/fs/bpf/x/does/not/exist is not a BPF filesystem", sending users to mount one that was there.

    A missing pin_root on bpffs is now made (mode 0700, issue 13 item 5); one whose nearest existing parent
    is not on bpffs says it does not exist and why dynbpf does not make it.
    """
    elsewhere = str(tmp_path / "no" / "such")
    with pytest.raises(dynbpf.PinError) as e:
        dynbpf.open(agent(), map_policy="pinned", pin_root=elsewhere)
    message = str(e.value)
    assert "not a BPF filesystem" not in message
    assert f"{elsewhere} does not exist" in message
    assert f"{tmp_path}, the nearest that exists, is not on one" in message
    assert not (tmp_path / "no").exists()
    with pytest.raises(dynbpf.PinError, match="'relative/root' is not an absolute path"):
        dynbpf.open(agent(), map_policy="pinned", pin_root="relative/root")
    missing = os.path.join(pin_root, "does", "not", "exist")
    with dynbpf.open(agent(), map_policy="pinned", pin_root=missing):
        assert os.path.isdir(missing)


def test_link_pin_under_a_missing_directory_off_bpffs_says_it_is_missing(tmp_path: Path, no_fd_leak: None) -> None:
    target = tmp_path / "missing" / "dir" / "link"
    with dynbpf.open(agent()) as coll:
        prog = coll.programs["dump_tasks"]
        prog.load()
        with prog.attach() as link, pytest.raises(dynbpf.PinError) as e:
            link.pin(str(target))
    message = str(e.value)
    assert f"{target.parent} does not exist" in message
    assert f"{tmp_path}, the nearest that exists, is not on one" in message
    assert not (tmp_path / "missing").exists()


def test_ensure_bpffs_on_a_missing_directory_says_missing(pin_root: str) -> None:
    from dynbpf._sys import fs

    with pytest.raises(dynbpf.PinError, match=r"does not exist, and dynbpf does not create it"):
        fs.ensure_bpffs(os.path.join(pin_root, "nope"))
    assert fs.ensure_bpffs(pin_root) == pin_root


# --- item 12: types by name ------------------------------------------------------------------------


def test_a_reader_of_the_wrong_map_names_both_types(no_fd_leak: None) -> None:
    """The message was "map 'exec_count' (type 1) is not a ring buffer": the type was a number."""
    from dynbpf._maps.errors import MapTypeError

    with dynbpf.open(agent()) as coll:
        with pytest.raises(MapTypeError, match=r"map 'exec_count' is a hash, not a ringbuf"):
            coll.ring_buffer("exec_count")
        with pytest.raises(MapTypeError, match=r"map 'events' is a ringbuf, not a perf_event_array"):
            coll.perf_buffer("events")


def test_type_names_fall_back_to_the_number_only_for_unknown_values() -> None:
    from dynbpf._sys.constants import AttachType, Cmd, LinkType, MapType, ProgType, type_name

    assert type_name(MapType, 27) == "ringbuf"
    assert type_name(MapType, MapType.PERCPU_ARRAY) == "percpu_array"
    assert type_name(ProgType, 26) == "tracing"
    assert type_name(AttachType, AttachType.TRACE_FENTRY) == "trace_fentry"
    assert type_name(LinkType, 2) == "tracing"
    assert type_name(MapType, 9999) == "map type 9999"
    assert type_name(ProgType, 9999) == "program type 9999"
    assert type_name(AttachType, 9999) == "attach type 9999"
    assert type_name(LinkType, 9999) == "link type 9999"
    assert type_name(Cmd, 9999) == "command 9999"


def test_probe_output_names_commands_and_types() -> None:
    """``dynbpf probe`` said "command 38"; map, program and attach types print by name."""
    import re

    from click.testing import CliRunner

    from dynbpf._cli.main import cli

    result = CliRunner().invoke(cli, ["probe", "--no-helpers"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.replace("│", " ").split())  # the table wraps long cells
    assert "command 38" not in out
    assert "BPF_PROG_ASSOC_STRUCT_OPS" in out
    for name in ("ringbuf", "percpu_array", "perf_event_array", "array_of_maps", "cgroup_inet_ingress"):
        assert name in out
    assert not re.search(r"\b(map|program|attach|link) type \d", out)
