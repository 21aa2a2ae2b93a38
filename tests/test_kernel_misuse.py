"""Misuse that must fail cleanly: views kept too long, reloads, odd paths, arguments of the wrong shape (issue 13).

Each test reproduces a report and fails on the code before its fix.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

import dynbpf
from dynbpf.errors import DynbpfError, ObjectFormatError, StateError
from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def agent() -> Path:
    return build("docs_agent")


def test_a_map_view_kept_after_close_raises_instead_of_touching_the_number(no_fd_leak: None) -> None:
    """The number a view held is reused by the next collection's larger maps: reading it crashed the interpreter."""
    with dynbpf.open(agent()) as coll:
        counts, rodata, bss = coll.maps["exec_count"], coll.maps[".rodata"], coll.bss
        assert rodata[0] is not None
        assert bss.hits == 0
    assert counts.closed
    assert rodata.closed
    with dynbpf.open(build("twofiles")) as other:  # takes the freed numbers, with maps of other sizes
        other.load(["first_prog"])
        with pytest.raises(StateError, match="no longer names the map this view was made for"):
            rodata[0]
        with pytest.raises(StateError, match="no longer names the map"):
            counts[1] = 2
        with pytest.raises(StateError):
            list(counts.items())
        with pytest.raises(StateError):
            bss.hits = 1  # through the old mapping: it is gone with its map


def test_a_view_of_a_freed_on_demand_map_raises_and_a_new_one_works(no_fd_leak: None) -> None:
    with dynbpf.open(agent(), map_policy="on_demand") as coll:
        coll.programs["handle_exec"].load()
        old = coll.maps["exec_count"]
        old[7] = 1
        coll.programs["handle_exec"].unload()  # its only user: the map is freed
        with pytest.raises(StateError, match="no longer names the map"):
            old[7]
        coll.programs["handle_exec"].load()
        new = coll.maps["exec_count"]
        assert new is not old
        assert 7 not in new  # a re-created map starts empty
        new[7] = 3
        assert new[7] == 3


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory", "empty path", "socket"])
def test_read_takes_regular_files_only(kind: str, tmp_path: Path) -> None:
    """/dev/zero read until MemoryError, a FIFO or /dev/urandom hung: only a regular file is an object."""
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path
    elif kind == "socket":
        path = tmp_path / "sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    else:
        path = Path("" if kind == "empty path" else kind)
    with pytest.raises(ObjectFormatError, match=r"not a regular file|empty path|cannot read"):
        dynbpf.read(path)
    with pytest.raises(ObjectFormatError):
        dynbpf.open(path)


def test_read_takes_bytes_like_objects_and_refuses_other_types() -> None:
    data = agent().read_bytes()
    assert set(dynbpf.read(bytearray(data)).programs) == set(dynbpf.read(memoryview(data)).programs)
    with pytest.raises(TypeError, match="a path or the object's bytes"):
        dynbpf.read(42)  # type: ignore[arg-type]


def test_a_lone_program_name_is_not_read_as_letters(no_fd_leak: None) -> None:
    with dynbpf.open(agent()) as coll:
        with pytest.raises(TypeError, match=r"write \['handle_exec'\]"):
            coll.load("handle_exec")
        with pytest.raises(TypeError, match="program names"):
            coll.load([1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"write \['dump_tasks'\]"):
        dynbpf.open(agent(), disabled="dump_tasks")


@pytest.mark.parametrize("workers", [0, -1, "2", 1.5, True])
def test_workers_must_be_a_positive_whole_number(workers: object, no_fd_leak: None) -> None:
    with dynbpf.open(agent()) as coll:
        with pytest.raises(ValueError, match="workers must be"):
            coll.load(["handle_exec"], workers=workers)  # type: ignore[arg-type]
        assert coll.load(["handle_exec"], workers=None) == {}


def test_reload_keeps_the_maps_and_the_links(no_fd_leak: None) -> None:
    """reload() freed an on-demand counter map (3 -> 0) and came back detached."""
    import subprocess

    with dynbpf.open(agent(), map_policy="on_demand") as coll:
        prog = coll.programs["handle_exec"]
        prog.load()
        prog.attach()  # a tracepoint: a perf link, which cannot be updated in place
        coll.maps["exec_count"][424242] = 3
        old_id = prog.id
        prog.reload()
        assert prog.id != old_id  # a new kernel program
        assert coll.maps["exec_count"][424242] == 3  # the map was held through the swap
        assert len(prog.links) == 1
        before = coll.bss.hits
        child = subprocess.run(["sh", "-c", "exec true"], check=True)
        assert child.returncode == 0
        assert coll.bss.hits > before  # the new program runs on the re-made link
        prog.unload()
        assert not coll.map_exists("exec_count")  # and the hold was given back


def test_reload_of_an_iterator_updates_its_link_in_place(no_fd_leak: None) -> None:
    with dynbpf.open(agent()) as coll:
        prog = coll.programs["dump_tasks"]
        prog.load()
        link = prog.attach()
        prog.reload()
        assert prog.links == (link,)  # the same link, now running the new program
        assert link.read()  # type: ignore[attr-defined]


def test_repeated_reloads_of_an_iterator_leave_its_link_one_listener(no_fd_leak: None) -> None:
    """Each in-place update re-added the program's listener on top of the old one: 2^n listeners after n reloads
    (a stress run's set_constants calls reloaded one attached iterator until every reload took seconds)."""
    with dynbpf.open(agent()) as coll:
        prog = coll.programs["dump_tasks"]
        prog.load()
        link = prog.attach()
        for _ in range(12):
            prog.reload()
        assert len(link._listeners) == 1  # the program's own, once
        assert prog.links == (link,)
        link.detach()
        assert prog.links == ()


def test_processes_opening_one_object_with_pinned_maps_at_once_share_them(pin_root: str) -> None:
    """8 of 20 simultaneous opens failed with BPF_OBJ_PIN EEXIST (check, then create): the loser reuses the pin."""
    import subprocess
    import sys

    script = (
        "import sys, dynbpf\n"
        "from dynbpf._sys import commands\n"
        "with dynbpf.open(sys.argv[1], map_policy='pinned', pin_root=sys.argv[2]) as coll:\n"
        "    print(commands.map_info(coll.map_fd_number('exec_count')).id, flush=True)\n"
        "    sys.stdin.read()\n"  # hold the collection until every process has opened
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(agent()), pin_root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    ids = [p.stdout.readline().strip() for p in procs if p.stdout is not None]
    results = [p.communicate(input="") for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results if err]
    assert len(set(ids)) == 1  # one map, shared by all


def test_a_symlink_in_a_pin_path_is_refused(pin_root: str, no_fd_leak: None) -> None:
    """A planted link to another application's pin made root reuse (and write into) that map."""
    from dynbpf._sys import commands

    with dynbpf.open(build("twofiles")) as other:  # "another application" with a pinned map
        foreign = os.path.join(pin_root, "foreign")
        commands.obj_pin(other.map_fd_number("shared_counts"), foreign)
    os.symlink(foreign, os.path.join(pin_root, "exec_count"))
    with pytest.raises(DynbpfError, match="symbolic link, not a pin"):
        dynbpf.open(agent(), map_policies={"exec_count": "pinned"}, pin_root=pin_root)


@pytest.mark.parametrize("atomic", [False, True])
def test_ctrl_c_stops_a_parallel_load_and_atomic_rolls_back(atomic: bool) -> None:
    """Ctrl-C took effect only after all 200 programs had loaded, and atomic=True kept them."""
    import subprocess
    import sys

    from bench.synth_agent import build as build_agent

    script = (
        "import itertools, os, signal, sys, dynbpf\n"
        "import dynbpf._runtime.load as load\n"
        "coll = dynbpf.open(sys.argv[1])\n"
        "coll.prepare()\n"  # so the interrupt lands during verification, not before it
        # Ctrl-C as the 10th program goes to the verifier: a timer raced fast machines, where all
        # 200 programs had loaded before it fired
        "calls, real = itertools.count(1), load.prog_load_raw\n"
        "def prog_load(attr):\n"
        "    if next(calls) == 10:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(attr)\n"
        "load.prog_load_raw = prog_load\n"
        "try:\n"
        "    coll.load(workers=2, atomic=sys.argv[2] == 'atomic')\n"
        "    print('finished')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', sum(p.loaded for p in coll.programs.values()), len(coll.programs))\n"
        "coll.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(build_agent(200)), "atomic" if atomic else "keep"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out[0] == "interrupted", out
    loaded, total = int(out[1]), int(out[2])
    assert loaded < total  # scheduling stopped: the rest never started
    if atomic:
        assert loaded == 0  # and what this call had loaded was unloaded again


@pytest.mark.parametrize("where", ["outside bpffs", "dotdot", "relative", "through a symlink"])
def test_link_pin_checks_the_path_before_creating_anything(
    where: str, tmp_path: Path, pin_root: str, no_fd_leak: None
) -> None:
    """Link.pin created directories (as root) wherever it was pointed, then noticed they were not on bpffs."""
    if where == "outside bpffs":
        path = str(tmp_path / "made" / "by" / "pin")
    elif where == "dotdot":
        path = os.path.join(pin_root, "..", "..", "..", str(tmp_path).lstrip("/"), "escaped", "pin")
    elif where == "relative":
        path = "relative/dir/pin"
    else:
        os.symlink(tmp_path, os.path.join(pin_root, "elsewhere"))
        path = os.path.join(pin_root, "elsewhere", "made", "pin")
    with dynbpf.open(agent()) as coll:
        prog = coll.programs["dump_tasks"]
        prog.load()
        with prog.attach() as link, pytest.raises(DynbpfError, match="cannot pin at"):
            link.pin(path)
    assert not (tmp_path / "made").exists()
    assert not (tmp_path / "escaped").exists()
    assert not os.path.exists("relative")


def test_link_pin_still_makes_directories_on_bpffs(pin_root: str, no_fd_leak: None) -> None:
    with dynbpf.open(agent()) as coll:
        prog = coll.programs["dump_tasks"]
        prog.load()
        with prog.attach() as link:
            link.pin(os.path.join(pin_root, "a", "b", "link"))
            assert os.path.exists(os.path.join(pin_root, "a", "b", "link"))
            link.unpin()


def test_a_pinned_rodata_with_other_constants_is_refused(pin_root: str, no_fd_leak: None) -> None:
    """The program saw 0 where the caller asked 12345: the reused pin held an earlier run's .rodata."""
    policies = {".rodata": "pinned"}
    with dynbpf.open(agent(), map_policies=policies, pin_root=pin_root, constants={"target_tgid": 7}) as first:
        assert first.rodata.target_tgid == 7
    with dynbpf.open(agent(), map_policies=policies, pin_root=pin_root, constants={"target_tgid": 7}) as same:
        assert same.rodata.target_tgid == 7  # the same constants: the pin is reused
    with pytest.raises(DynbpfError, match="holds other values than this open's constants"):
        dynbpf.open(agent(), map_policies=policies, pin_root=pin_root, constants={"target_tgid": 12345})


def test_close_waits_for_a_clone_under_way(monkeypatch: pytest.MonkeyPatch, no_fd_leak: None) -> None:
    """A clone that passed the open check loaded after close freed the map numbers (and others reused them)."""
    import dynbpf._runtime.program as program_module

    entered, closing = threading.Event(), threading.Event()
    real = program_module.load_program

    def slow_load(*args: object, **kwargs: object) -> object:
        entered.set()
        closing.wait(5)  # the collection is being closed now
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(program_module, "load_program", slow_load)
    coll = dynbpf.open(agent())
    clones: list[object] = []
    cloner = threading.Thread(target=lambda: clones.append(coll.programs["handle_exec"].clone()))
    cloner.start()
    assert entered.wait(5)
    closer = threading.Thread(target=coll.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # close waits for the clone's load, rather than freeing its maps under it
    closing.set()
    cloner.join(5)
    closer.join(5)
    assert not closer.is_alive()
    (clone,) = clones
    with clone:  # type: ignore[attr-defined]
        from dynbpf._sys import commands

        assert commands.prog_info(clone.raw).nr_map_ids >= 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ({"prog_flags": 2**40}, ValueError),
        ({"expected_attach_type": "x"}, TypeError),
        ({"ifindex": -1}, ValueError),
        ({"log_level": True}, TypeError),
    ],
)
def test_clone_options_of_the_wrong_type_or_size_are_refused(
    option: dict[str, object], error: type[Exception], no_fd_leak: None
) -> None:
    """prog_flags=2**40 was silently truncated; a string reached ctypes as a TypeError of its own."""
    with dynbpf.open(agent()) as coll, pytest.raises(error, match="load option"):
        coll.programs["handle_exec"].clone(**option)


def test_a_perf_buffer_on_no_cpu_and_a_reader_added_twice_are_refused(no_fd_leak: None) -> None:
    from dynbpf._maps.events import EventLoop
    from dynbpf._maps.perfbuf import PerfBuffer

    with dynbpf.open(agent()) as coll:
        with pytest.raises(ValueError, match="would read no CPU"):
            PerfBuffer(coll.map_fd_number("samples"), cpus=[])
        reader = PerfBuffer(coll.map_fd_number("samples"), pages=2, callback=lambda cpu, r: None)
        with EventLoop([reader]) as loop, pytest.raises(ValueError, match="polled by this loop already"):
            loop.add(reader)


def test_runtime_failures_are_dynbpf_errors_and_wrong_arguments_type_or_value_errors(no_fd_leak: None) -> None:
    """Raw OSError, MemoryError, ValueError and AttributeError escaped public calls (issue 13 item 11)."""
    from dynbpf._attach.binaries import BinaryNotFoundError
    from dynbpf._attach.symbols import SymbolError
    from dynbpf._sys.constants import MapType

    assert issubclass(SymbolError, DynbpfError)
    assert issubclass(BinaryNotFoundError, DynbpfError)
    with pytest.raises(TypeError, match="constants= takes a mapping"):
        dynbpf.open(agent(), constants=[("target_tgid", 1)])  # type: ignore[arg-type]
    with dynbpf.open(agent()) as coll:
        with pytest.raises(DynbpfError, match="mmap"):
            coll.perf_buffer("samples", pages=2**20)  # far past what the kernel maps: its refusal, as an error
        counts = coll.maps["exec_count"]
        assert counts.type == MapType.HASH
        counts.batch = True
        assert list(counts.lookup_batch(chunk=2**40)) == []  # the chunk is capped by the map's size
        with pytest.raises(ValueError, match="chunk must be"):
            list(counts.lookup_batch(chunk=0))
        reader = coll.ring_buffer("events")
        reader.close()
        with pytest.raises(StateError, match="is closed"):
            reader.fileno()


def test_errno_hints_fit_the_command() -> None:
    """E2BIG on a full map said "the kernel is older than the feature"; EBADF at load said the verifier rejected it."""
    import errno

    from dynbpf._sys.constants import Cmd
    from dynbpf._sys.syscall import hint

    assert "full" in hint(Cmd.MAP_UPDATE_ELEM, errno.E2BIG)
    assert "older" not in hint(Cmd.MAP_UPDATE_ELEM, errno.E2BIG)
    assert "not open" in hint(Cmd.PROG_LOAD, errno.EBADF)
    assert "RLIMIT_NOFILE" in hint(Cmd.PROG_LOAD, errno.EMFILE)
    assert "permissions" in hint(Cmd.OBJ_GET, errno.EACCES)
    assert "older" in hint(Cmd.MAP_CREATE, errno.E2BIG)  # where it is the likely reason, it still says so


def test_a_full_hash_map_says_it_is_full(no_fd_leak: None) -> None:
    with dynbpf.open(agent(), map_edits={"exec_count": dynbpf.MapEdit(max_entries=1)}) as coll:
        counts = coll.maps["exec_count"]
        counts[1] = 1
        with pytest.raises(DynbpfError, match="the map is full"):
            counts[2] = 2


def test_a_busy_hook_does_not_make_a_probe_say_unsupported(no_fd_leak: None) -> None:
    """An XDP program already on lo made the xdp-link probe answer "unsupported", cached for the process."""
    from dynbpf._probes import attach as attach_features
    from dynbpf._probes.result import Support, cached, clear_cache

    with dynbpf.open(build("twofiles")) as coll:
        prog = coll.programs["first_stage"]  # an XDP program
        prog.load()
        if attach_features.xdp():  # the probe decides; on a kernel without xdp links only the part below runs
            with prog.attach(interface="lo"):
                clear_cache()
                busy = attach_features.xdp()
                assert busy.supported, busy.how
                assert "busy" in busy.how
    clear_cache()

    calls: list[int] = []

    @cached
    def flaky() -> Support:
        calls.append(1)
        return Support("flaky", False, "EAGAIN", transient=len(calls) == 1)

    assert not flaky().supported
    flaky()
    flaky()
    assert len(calls) == 2  # the transient refusal was asked again; the lasting answer was kept


def test_attach_after_close_says_closed(no_fd_leak: None) -> None:
    with dynbpf.open(agent()) as coll:
        prog = coll.programs["handle_exec"]
        prog.load()
    with pytest.raises(StateError, match="collection 'docs_agent' is closed"):
        prog.attach()


def test_open_takes_typed_keyword_options_only() -> None:
    """Unknown option names raised KeyError, DynbpfError or ValueError depending on the option (issue 13 §5)."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'map_polcy'"):
        dynbpf.open(agent(), map_polcy="on_demand")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        dynbpf.open(agent(), {"target_tgid": 1})  # type: ignore[misc]


def _pin_shapes() -> Path:
    return build("pin_shapes")


def test_a_pin_root_others_may_write_is_refused_unless_the_caller_accepts_it(pin_root: str, no_fd_leak: None) -> None:
    """With /sys/fs/bpf mode 1777, anyone could pin a map of their own under a name root then reuses."""
    os.chmod(pin_root, 0o1777)
    with pytest.raises(DynbpfError, match=r"writable by others \(mode 1777\).*allow_shared_pin_root=True"):
        dynbpf.open(_pin_shapes(), map_policy="pinned", pin_root=pin_root)
    assert os.listdir(pin_root) == []  # refused before anything was pinned
    with dynbpf.open(_pin_shapes(), map_policy="pinned", pin_root=pin_root, allow_shared_pin_root=True) as coll:
        assert coll.maps["pairs"] is not None
    assert sorted(os.listdir(pin_root)) == ["pairs", "stamps"]


def test_a_missing_pin_root_is_made_private(pin_root: str, no_fd_leak: None) -> None:
    root = os.path.join(pin_root, "app", "maps")
    with dynbpf.open(_pin_shapes(), map_policy="pinned", pin_root=root):
        pass
    assert os.stat(os.path.join(pin_root, "app")).st_mode & 0o777 == 0o700
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(root)) == ["pairs", "stamps"]


def test_a_pin_root_owned_by_another_user_is_refused(pin_root: str, no_fd_leak: None) -> None:
    os.chown(pin_root, 65534, 65534)
    with pytest.raises(DynbpfError, match="belongs to uid 65534"):
        dynbpf.open(_pin_shapes(), map_policy="pinned", pin_root=pin_root)


def test_a_pin_another_user_owns_is_not_reused(pin_root: str, no_fd_leak: None) -> None:
    with dynbpf.open(_pin_shapes(), map_policy="pinned", pin_root=pin_root):
        pass
    os.chown(os.path.join(pin_root, "stamps"), 65534, 65534)  # as if planted by nobody
    with pytest.raises(DynbpfError, match="pinned by uid 65534"):
        dynbpf.open(_pin_shapes(), map_policy="pinned", pin_root=pin_root)


def test_a_pin_with_equal_sizes_but_other_btf_types_is_not_reused(pin_root: str, no_fd_leak: None) -> None:
    """libbpf compares sizes only: a u64 map's pin passed for a map of struct pair (8 bytes too)."""
    from dynbpf._sys import commands

    with dynbpf.open(_pin_shapes()) as other:
        commands.obj_pin(other.map_fd_number("stamps"), os.path.join(pin_root, "pairs"))
    with pytest.raises(DynbpfError, match=r"value type 'u64', the object declares 'struct pair'"):
        dynbpf.open(_pin_shapes(), map_policies={"pairs": "pinned"}, pin_root=pin_root)
    with dynbpf.open(_pin_shapes(), map_policies={"stamps": "pinned"}, pin_root=pin_root) as coll:
        coll.maps["stamps"][1] = 5  # the same shape is reused as before
    with dynbpf.open(_pin_shapes(), map_policies={"stamps": "pinned"}, pin_root=pin_root) as coll:
        assert coll.maps["stamps"][1] == 5
