"""Restart without a blind window (issue 16 §3): pin a running application, adopt it in a new process.

A process pins its programs, links and maps under a root and exits keeping
them (``close(keep_pinned=True)``); the kernel runs on with no process at
all. A new process opens the object with ``adopt=root``: what is pinned and
is what it would load (the kernel's tag equals the tag computed here, the
maps are the object's) becomes its own, same kernel ids, no verification,
no link touched. Steady event generators run through every restart here,
and the maps must have counted each event exactly once (or, where the
kernel cannot swap a link's program in place, at least once).

Each adopting or pinning process is a real one (``tests/adopt_child.py``);
the test process reads what the kernel holds between them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dynbpf
from dynbpf import MapEdit, PinError, ProgramState, StateError
from dynbpf._asm.insn import R1, ld_map_value, return_imm, st_mem
from dynbpf._asm.opcodes import Size
from dynbpf._asm.tag import prog_tag
from dynbpf._probes import kernel as kernel_features
from dynbpf._probes.trial import create_map, load
from dynbpf._runtime.pins import Manifest, json_target, read_manifest, write_manifest
from dynbpf._sys import commands, fs
from dynbpf._sys.constants import MapType, ProgType
from dynbpf.errors import DynbpfError
from tests.bpfbuild import ROOT, build, compile_source
from tests.helpers import numbered_getpgid, patience, private_cgroup

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

TRACED = {"tp_getpgid": {}, "tp_getppid": {}}


def features_app() -> str:
    return str(build("features_app"))


@pytest.fixture
def root() -> Iterator[str]:
    """A pin root for the test, which must leave nothing in it: every test ends by closing what it adopted."""
    fs.ensure_bpffs(fs.DEFAULT_BPFFS, mount_if_missing=True)
    path = os.path.join(fs.DEFAULT_BPFFS, f"dynbpf-adopt-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    yield path
    left = sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files)
    there = os.path.lexists(path)
    shutil.rmtree(path, ignore_errors=True)
    assert not left, f"the test left pins behind: {left}"
    assert not there, f"the test left {path} behind"


class Child:
    """A process running ``tests/adopt_child.py`` steps; killed if the test ends before it does."""

    def __init__(self, *steps: list[Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.adopt_child", json.dumps(list(steps))],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=patience(60))
            assert self.proc.stderr is not None
            raise AssertionError(f"child ended ({self.proc.returncode}): {self.proc.stderr.read()}")
        out: dict[str, Any] = json.loads(line)
        return out

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def end(self) -> None:
        _, err = self.proc.communicate(timeout=patience(120))
        assert self.proc.returncode == 0, err

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(*steps: list[Any]) -> list[dict[str, Any]]:
    """Run a child to its end; what it reported."""
    with Child(*steps) as child:
        out, err = child.proc.communicate(timeout=patience(120))
        assert child.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]


def alive(prog_id: int) -> bool:
    try:
        commands.fd_by_id(commands.ObjKind.PROG, prog_id).close()
    except DynbpfError:
        return False
    return True


def gone(*prog_ids: int) -> bool:
    """Whether the programs are freed, allowing for the kernel's deferred release of a link whose pin went."""
    deadline = time.monotonic() + 5
    while any(alive(i) for i in prog_ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def pinned_value(path: str, key: int, size: int = 8) -> int:
    """Value ``key`` of the array map pinned at ``path``, read by this process (a third party to the pins)."""
    with commands.obj_get(path) as fd:
        value = ctypes.create_string_buffer(size)
        assert commands.map_lookup_elem(fd.raw, key.to_bytes(4, "little"), value)
        return int.from_bytes(value.raw, "little")


def listing(path: str) -> dict[str, int]:
    """Every pin under ``path`` and the kernel id of what it holds."""
    out = {}
    for directory, _, files in os.walk(path):
        for name in files:
            pin = os.path.join(directory, name)
            with commands.obj_get(pin) as fd:
                kind = os.readlink(f"/proc/self/fd/{fd.raw}")
                info = commands.link_info(fd.raw) if "link" in kind else commands.map_info(fd.raw)
                if "prog" in kind:
                    info = commands.prog_info(fd.raw)
                out[os.path.relpath(pin, path)] = int(info.id)
    return out


class Generator:
    """Calls getpgid(SEQ_BASE + seq) at a steady rate on a thread: features_app's programs count each in seen[seq]."""

    def __init__(self, period: float = 0.0005) -> None:
        self.issued = 0
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            numbered_getpgid(self.issued)
            self.issued += 1
            time.sleep(self._period)

    def __enter__(self) -> Generator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.issued


# --- the tag -----------------------------------------------------------------------------------------


def test_the_tag_computed_here_is_the_kernels_for_programs_with_maps_and_global_data() -> None:
    """Computed before loading, from the prepared instructions; read back from the kernel after."""
    with dynbpf.open(features_app()) as coll:
        names = ["tp_getpgid", "tp_getppid", "raw_getpgid", "slotted_getppid"]  # maps, .rodata, stack arrays
        expected = {name: coll.programs[name].expected_tag for name in names}
        assert not coll.load(names)
        assert {name: coll.programs[name].tag for name in names} == expected
    with dynbpf.open(build("globals")) as coll:  # .bss, .data, custom sections through map-value loads
        assert not coll.load()
        assert len(coll.programs) >= 2
        for name, program in coll.programs.items():
            assert program.expected_tag == program.tag, name


def test_the_tag_blanks_map_references_as_the_kernel_does() -> None:
    """A map-value ldimm64 (fd and offset blanked) and the digest the kernel uses, decided by a probe."""
    with create_map(MapType.ARRAY, 4, 16, 1) as m:
        assert m.fd is not None
        prog = [ld_map_value(R1, m.fd.raw, 8), st_mem(Size.DW, R1, 0, 42), *return_imm(0)]
        with load(ProgType.SOCKET_FILTER, prog) as t:
            assert t.fd is not None
            tag = bytes(commands.prog_info(t.fd.raw).tag).hex()
    code = b"".join(insn.encode() for insn in prog)
    digest = "sha256" if kernel_features.sha256_tags() else "sha1"
    assert prog_tag(code, digest) == tag
    assert prog_tag(code, "sha1" if digest == "sha256" else "sha256") != tag
    other = bytearray(code)
    other[4] ^= 1  # another map fd: the same tag
    other[12] ^= 8  # another offset into it: the same tag
    assert prog_tag(bytes(other), digest) == tag
    with pytest.raises(ValueError, match="md5"):
        prog_tag(code, "md5")


# --- pin, keep, adopt ----------------------------------------------------------------------------------


def test_pinned_and_kept_then_adopted_by_a_new_process_with_the_same_ids(root: str) -> None:
    obj = features_app()
    (first,) = run(
        ["open", obj, {}],
        ["load", ["tp_getpgid", "tp_getppid", "raw_getpgid"]],
        ["attach", "tp_getpgid", {}],
        ["attach", "tp_getppid", {}],
        ["write", "counters", 3, 77],
        ["pin", root],
        ["report", ["counters"]],
        ["close", True],
    )
    ids = {name: p["id"] for name, p in first["programs"].items()}
    pins = listing(root)
    assert {p: i for p, i in pins.items() if p.startswith("progs/")} == {f"progs/{n}": i for n, i in ids.items()}
    assert sorted(p for p in pins if p.startswith("links/")) == ["links/tp_getpgid/0", "links/tp_getppid/0"]
    assert {"maps/seen", "maps/counters", "maps/features_rodata", "manifest"} <= set(pins)
    assert all(alive(i) for i in ids.values())  # no process holds them: the pins do
    numbered_getpgid(5)  # counted while nobody runs the application
    assert pinned_value(f"{root}/maps/counters", 0) == 1

    (second,) = run(["open", obj, {"adopt": root}], ["report", ["counters"]], ["close", False])
    adoption = second["adoption"]
    assert sorted(adoption["programs"]) == ["raw_getpgid", "tp_getpgid", "tp_getppid"]
    assert adoption["refused"] == {}
    assert adoption["stale"] == []
    assert adoption["ignored"] == {}
    assert {"seen", "counters", ".rodata"} <= set(adoption["maps"])
    programs = second["programs"]
    assert {name: p["id"] for name, p in programs.items()} == ids
    assert {name: p["state"] for name, p in programs.items()} == {
        "tp_getpgid": "attached",
        "tp_getppid": "attached",
        "raw_getpgid": "loaded",
    }
    assert {name: p["links"] for name, p in programs.items()} == {
        name: p["links"] for name, p in first["programs"].items()
    }
    assert second["map_ids"] == first["map_ids"]
    assert second["maps"]["counters"]["3"] == 77
    assert second["maps"]["counters"]["0"] == 1
    assert gone(*ids.values())  # the adopter's plain close ended them, pins and all


def test_a_steady_generator_is_counted_across_the_restart_without_a_gap(root: str) -> None:
    """Process A runs a tracepoint counter and exits keeping it; events go on while no process runs; B adopts.

    Every event the generator issued is in the map exactly once: none was
    lost while A stopped, nobody ran, or B started; none counted twice.
    """
    obj = features_app()
    with Child(
        ["open", obj, {}],
        ["load", ["tp_getpgid"]],
        ["attach", "tp_getpgid", {}],
        ["pin", root],
        ["report"],
        ["wait"],
        ["close", True],
    ) as a:
        before = a.read()["programs"]["tp_getpgid"]
        with Generator() as gen:
            time.sleep(0.2)
            a.go()
            a.end()
            a_gone = gen.issued
            with Child(
                ["open", obj, {"adopt": root}], ["report"], ["wait"], ["report", ["counters"]], ["close", False]
            ) as b:
                adopted = b.read()["programs"]["tp_getpgid"]
                b_ready = gen.issued
                time.sleep(0.2)
                issued = gen.stop()
                seen = [pinned_value(f"{root}/maps/seen", seq, 4) for seq in range(issued)]
                b.go()
                counters = b.read()["maps"]["counters"]
                b.end()
    assert adopted["id"] == before["id"]
    assert adopted["links"] == before["links"]
    assert adopted["state"] == "attached"
    assert b_ready > a_gone, "no event fell between A's exit and B's adoption: the test proves nothing"
    assert seen == [1] * issued, [seq for seq, n in enumerate(seen) if n != 1][:10]
    assert counters["0"] == issued
    assert gone(before["id"])


def test_a_map_unlike_the_objects_is_refused_and_nothing_changes(root: str, no_fd_leak: None) -> None:
    obj = features_app()
    (first,) = run(
        ["open", obj, {}],
        ["load", ["tp_getpgid"]],
        ["attach", "tp_getpgid", {}],
        ["pin", root],
        ["report"],
        ["close", True],
    )
    before = listing(root)
    with pytest.raises(
        PinError,
        match=r"map 'counters': the map pinned at .*counters has max_entries 4, the object declares 8.*nothing was",
    ):
        dynbpf.open(obj, adopt=root, map_edits={"counters": MapEdit(max_entries=8)})
    with pytest.raises(PinError, match=r"map '.rodata': the read-only data pinned at .* holds other values"):
        dynbpf.open(obj, adopt=root, constants={"weight": 5})
    assert listing(root) == before
    numbered_getpgid(1)
    assert pinned_value(f"{root}/maps/counters", 0) == 1  # still attached, still counting
    with dynbpf.open(obj, adopt=root) as coll:
        assert coll.programs["tp_getpgid"].id == first["programs"]["tp_getpgid"]["id"]
    assert gone(first["programs"]["tp_getpgid"]["id"])


CHANGING = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define SEQ_BASE 0x40000000ULL
#define SEQ_MAX (1 << 16)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SEQ_MAX);
	__type(key, u32);
	__type(value, u32);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps"); /* [0] sockets created, [1] the version that counted the last, [2] getpgid's */

static __always_inline void mark(u32 key, u64 value)
{
	u64 *slot = bpf_map_lookup_elem(&counters, &key);

	if (slot)
		*slot = value;
}

SEC("cgroup/sock_create")
int count_socks(struct bpf_sock *sk)
{
	u32 key = 0;
	u64 *n = bpf_map_lookup_elem(&counters, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
	mark(1, VERSION);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int count_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	u64 arg = ctx->args[0];
	u32 seq;
	u32 *hit;

	if (arg < SEQ_BASE || arg >= SEQ_BASE + SEQ_MAX)
		return 0;
	seq = arg - SEQ_BASE;
	hit = bpf_map_lookup_elem(&seen, &seq);
	if (hit)
		__sync_fetch_and_add(hit, 1);
	mark(2, VERSION);
	return 0;
}
"""

SOCKETS = (
    "import socket, sys, time\n"
    "sys.stdin.readline()\n"  # in the cgroup now
    "n = 0\n"
    "import select\n"
    "while not select.select([sys.stdin], [], [], 0)[0]:\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\n"
    "    n += 1\n"
    "    time.sleep(0.0005)\n"
    "print(n)\n"
)


def changing(version: int) -> str:
    return str(compile_source(f"#define VERSION {version}\n{CHANGING}", "adopt_changing"))


class Sockets:
    """A process in ``cgroup`` creating sockets at a steady rate until told to stop; it says how many."""

    def __init__(self, cgroup: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SOCKETS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(self.proc.pid))
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def stop(self) -> int:
        out, _ = self.proc.communicate("stop\n", timeout=patience(60))
        return int(out)

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_changed_program_is_not_adopted_and_replaced_without_a_gap(root: str) -> None:
    """v2 of the object finds v1's programs pinned: their tags differ, so they are refused (and run on);
    replace_pinned() loads v2 and moves each link: the cgroup link by BPF_LINK_UPDATE (each socket counted
    exactly once), the tracepoint link by attaching anew before the old one goes (each event at least once)."""
    v1, v2 = changing(1), changing(2)
    with (
        private_cgroup() as cgroup,
        Child(
            ["open", v1, {}],
            ["load", ["count_socks", "count_getpgid"]],
            ["attach", "count_socks", {"cgroup": cgroup}],
            ["attach", "count_getpgid", {}],
            ["pin", root],
            ["report"],
            ["wait"],
            ["close", True],
        ) as a,
    ):
        first = a.read()
        with Sockets(cgroup) as sockets, Generator() as gen:  # from now on, every event must be counted
            time.sleep(0.1)
            a.go()
            a.end()
            with Child(
                ["open", v2, {"adopt": root}],
                ["report"],
                ["replace"],
                ["report"],
                ["wait"],
                ["report", ["counters"]],
                ["close", False],
            ) as b:
                found, replaced, after = b.read(), b.read(), b.read()
                time.sleep(0.2)
                created, issued = sockets.stop(), gen.stop()
                seen = [pinned_value(f"{root}/maps/seen", seq, 4) for seq in range(issued)]
                b.go()
                counters = b.read()["maps"]["counters"]
                b.end()
    refused = found["adoption"]["refused"]
    assert set(refused) == {"count_socks", "count_getpgid"}
    assert all("the program changed" in why for why in refused.values()), refused
    assert set(found["adoption"]["maps"]) == {"seen", "counters"}
    assert found["programs"] == {}
    assert replaced["failures"] == {}
    old, new = first["programs"], after["programs"]
    assert new["count_socks"]["links"] == old["count_socks"]["links"]  # the same cgroup link, updated in place
    assert new["count_getpgid"]["links"] != old["count_getpgid"]["links"]  # a new tracepoint link
    assert all(new[n]["id"] != old[n]["id"] for n in old)
    assert gone(*(p["id"] for p in old.values()))
    assert counters["0"] == created
    assert counters["1"] == 2
    assert min(seen) >= 1, [seq for seq, n in enumerate(seen) if not n][:10]
    assert counters["2"] == 2


def test_discarding_what_an_earlier_run_left(root: str) -> None:
    (first,) = run(
        ["open", changing(1), {}],
        ["load", ["count_getpgid"]],
        ["attach", "count_getpgid", {}],
        ["pin", root],
        ["report"],
        ["close", True],
    )
    old = first["programs"]["count_getpgid"]["id"]
    with dynbpf.open(changing(2), adopt=root) as coll:
        assert coll.adoption is not None
        assert "the program changed" in coll.adoption.refused["count_getpgid"]
        assert not coll.load(["count_getpgid"])
        with pytest.raises(PinError, match=r"program 'count_getpgid': .*pinned already.*earlier run's"):
            coll.pin()  # its name is taken by the earlier run's pin, which runs on
        assert alive(old)
        removed = coll.discard_pinned()
        assert f"{root}/progs/count_getpgid" in removed
        assert f"{root}/links/count_getpgid/0" in removed
        assert gone(old)
        coll.pin()
        assert os.path.lexists(f"{root}/progs/count_getpgid")
    assert not os.path.lexists(root)


def test_stale_pins_are_skipped_and_programs_found_through_their_links(root: str, no_fd_leak: None) -> None:
    obj = features_app()
    (first,) = run(
        ["open", obj, {}],
        ["load", ["tp_getpgid", "tp_getppid", "raw_getpgid", "btf_getpgid"]],
        ["attach", "tp_getpgid", {}],
        ["attach", "tp_getppid", {}],
        ["pin", root],
        ["report"],
        ["close", True],
    )
    os.unlink(f"{root}/progs/tp_getpgid")  # its link still holds it
    os.unlink(f"{root}/links/tp_getppid/0")  # nothing holds that link: it ends
    os.unlink(f"{root}/progs/raw_getpgid")  # nothing holds it: the program is gone
    os.unlink(f"{root}/progs/btf_getpgid")
    with commands.obj_get(f"{root}/maps/counters") as counters:  # something else where a program should be
        commands.obj_pin(counters.raw, f"{root}/progs/btf_getpgid")
    with dynbpf.open(obj, adopt=root) as coll:
        adoption = coll.adoption
        assert adoption is not None
        assert sorted(adoption.stale) == [
            f"{root}/links/tp_getppid/0",
            f"{root}/progs/raw_getpgid",
            f"{root}/progs/tp_getpgid",
        ]
        assert sorted(adoption.programs) == ["tp_getpgid", "tp_getppid"]
        assert adoption.refused == {"btf_getpgid": f"{root}/progs/btf_getpgid pins a BPF map, not a prog"}
        assert not coll.programs["raw_getpgid"].loaded
        assert coll.discard_pinned(["btf_getpgid"]) == (f"{root}/progs/btf_getpgid",)
        assert coll.programs["tp_getpgid"].id == first["programs"]["tp_getpgid"]["id"]
        assert coll.programs["tp_getpgid"].state is ProgramState.ATTACHED
        assert coll.programs["tp_getppid"].state is ProgramState.LOADED
        assert os.path.lexists(f"{root}/progs/tp_getpgid")  # pinned again: the root says what runs
        manifest = Manifest.decode(_manifest_bytes(root), root)
        assert set(manifest.programs) == {"tp_getpgid", "tp_getppid"}
        assert manifest.programs["tp_getppid"].links == ()
    assert gone(*(p["id"] for p in first["programs"].values()))


def _manifest_bytes(root: str) -> bytes:
    with commands.obj_get(f"{root}/manifest") as fd:
        size = commands.map_info(fd.raw).value_size
        value = ctypes.create_string_buffer(size)
        commands.map_lookup_elem(fd.raw, bytes(4), value)
        return value.raw


def test_a_root_without_a_manifest_is_refused_and_a_missing_one_is_a_first_start(root: str) -> None:
    obj = features_app()
    with dynbpf.open(obj, adopt=root) as coll:  # nothing there: a first start
        assert coll.adoption is not None
        assert coll.adoption.programs == ()
        assert coll.adoption.object is None
        coll.programs["tp_getpgid"].load()
        coll.programs["tp_getpgid"].attach()
        coll.pin()  # under the adopt= root
        assert os.path.lexists(f"{root}/links/tp_getpgid/0")
        os.unlink(f"{root}/manifest")
        with pytest.raises(PinError, match="holds pins but no dynbpf manifest"):
            dynbpf.open(obj, adopt=root)
        coll.pin()  # the manifest again
    assert not os.path.lexists(root)


# --- the pins follow the collection ---------------------------------------------------------------------


def test_pins_follow_detach_reload_unload_and_close_removes_them(root: str, no_fd_leak: None) -> None:
    with dynbpf.open(features_app(), map_policy="on_demand") as coll:
        with pytest.raises(StateError, match=r"pinned nowhere; call pin\(root\) first"):
            coll.close(keep_pinned=True)
        pgid, ppid = coll.programs["tp_getpgid"], coll.programs["tp_getppid"]
        assert not coll.load(["tp_getpgid", "tp_getppid"])
        pgid.attach()
        ppid.attach()
        coll.pin(root)
        with pytest.raises(StateError, match=f"pinned under {root}"):
            coll.pin(root + "-other")
        link = listing(root)["links/tp_getpgid/0"]
        pgid.reload()  # a tracepoint link is re-made: the new one takes the old one's pin
        now = listing(root)
        assert now["progs/tp_getpgid"] == pgid.id
        assert now["links/tp_getpgid/0"] == pgid.links[0].id != link
        coll.set_constants({"weight": 3})  # .rodata made anew (frozen): its pin holds the new map
        assert (
            listing(root)["maps/features_rodata"] == coll._registry.kernel_id(".rodata") != now["maps/features_rodata"]
        )
        ppid.detach()  # its link ends for real: its pin goes with it
        assert "links/tp_getppid/0" not in listing(root)
        ppid.unload()
        assert "progs/tp_getppid" not in listing(root)
        coll.pin()
        manifest = Manifest.decode(_manifest_bytes(root), root)
        assert set(manifest.programs) == {"tp_getpgid"}
        own = f"{root}-prog"
        pgid.pin(own)  # a pin of the caller's own, left alone
        try:
            with commands.obj_get(own) as fd:
                assert int(commands.prog_info(fd.raw).id) == pgid.id
        finally:
            os.unlink(own)
        pgid.unload()  # the last user of the on-demand maps: they are freed, and their pins go
        assert sorted(listing(root)) == ["manifest"]
    assert not os.path.lexists(root)


def test_pin_refuses_a_root_where_something_is_pinned(root: str) -> None:
    with dynbpf.open(features_app()) as coll:
        fs.make_pin_dir(root)
        commands.obj_pin(coll._registry.require("counters"), f"{root}/x")
        with pytest.raises(PinError, match="holds pins already; open with adopt="):
            coll.pin(root)
        os.unlink(f"{root}/x")
        os.rmdir(root)


def test_link_groups_and_iterator_links_are_pinned_and_adopted(root: str, no_fd_leak: None) -> None:
    """A perf event per CPU is a LinkGroup (a directory of pins); an iterator link comes back an IterLink."""
    obj = str(build("attach"))
    (first,) = run(
        ["open", obj, {}],
        ["load", ["on_clock", "task_lines"]],
        ["attach", "on_clock", {}],
        ["attach", "task_lines", {}],
        ["pin", root],
        ["report"],
        ["close", True],
    )
    cpus = len(os.listdir(f"{root}/links/on_clock/0"))
    assert cpus >= 1
    with dynbpf.open(obj, adopt=root) as coll:
        clock, lines = coll.programs["on_clock"], coll.programs["task_lines"]
        assert coll.adoption is not None
        assert sorted(coll.adoption.programs) == ["on_clock", "task_lines"]
        (group,) = clock.links
        assert isinstance(group, dynbpf.LinkGroup)
        assert len(group.links) == cpus
        assert group.id == first["programs"]["on_clock"]["links"][0]  # the same kernel links
        (it,) = lines.links
        assert isinstance(it, dynbpf.IterLink)
        assert f"{os.getpid()} " in it.read().decode()
        hits = coll.bss.clock_hits
        assert hits > 0  # counted by the pinned program while no process ran it, in the adopted .bss
        spin(0.05)
        assert coll.bss.clock_hits > hits
        clock.detach()  # every member's pin goes, and the directory
        assert not os.path.lexists(f"{root}/links/on_clock")
        time.sleep(0.01)
        settled = coll.bss.clock_hits
        spin(0.05)
        assert coll.bss.clock_hits == settled
    assert gone(*(p["id"] for p in first["programs"].values()))


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_manifest_that_is_not_one_is_refused() -> None:
    where = "/sys/fs/bpf/x/manifest"
    with pytest.raises(PinError, match=r"/sys/fs/bpf/x/manifest is not a manifest dynbpf can read: not JSON"):
        Manifest.decode(b"{", where)
    with pytest.raises(PinError, match=r"not format 1 \(dynbpf_pins is 2\)"):
        Manifest.decode(b'{"dynbpf_pins": 2}', where)
    with pytest.raises(PinError, match="KeyError: 'programs'"):
        Manifest.decode(b'{"dynbpf_pins": 1, "object": "a"}', where)
    escaping = {"dynbpf_pins": 1, "object": "a", "programs": {}, "maps": {"m": {"pin": "../../etc", "id": 1}}}
    with pytest.raises(PinError, match=r"invalid pin name component '\.\.'"):
        Manifest.decode(json.dumps(escaping).encode(), where)
    manifest = Manifest("a", None, maps={})
    assert Manifest.decode(manifest.encode() + b"\0\0", where) == manifest


def test_only_attach_keywords_another_process_can_use_are_recorded() -> None:
    assert json_target({"category": "syscalls", "event": "sys_enter_getpgid"}) == {
        "category": "syscalls",
        "event": "sys_enter_getpgid",
    }
    assert json_target({"cgroup": Path("/sys/fs/cgroup/app")}) == {"cgroup": "/sys/fs/cgroup/app"}
    assert json_target({"cgroup": 5}) is None  # an fd of this process: another one's 5 is something else
    assert json_target({"netns": 7, "x": 1}) is None
    assert json_target({"symbols": ("a", "b")}) is None  # not what JSON gives back
    assert json_target({"map": object()}) is None
    assert json_target(None) is None


# --- the features layer ------------------------------------------------------------------------------------

HOOKS = {"getpgid": ["tp_getpgid"], "getppid": ["tp_getppid"]}
FEATURES = {"seq": ["getpgid"], "ppid": ["getppid"]}


def test_an_application_starts_from_an_adopted_collection_and_switches_on(root: str, no_fd_leak: None) -> None:
    obj = features_app()
    (first,) = run(
        ["open", obj, {"map_policy": "on_demand"}],
        ["app", HOOKS, FEATURES],
        ["apply", {"seq": "enabled", "ppid": "paused"}],
        ["pin", root],
        ["report"],
        ["close", True],
    )
    ids = {name: p["id"] for name, p in first["programs"].items()}
    features = dynbpf.FeatureMap.of(
        [dynbpf.Feature(n, hooks=hs) for n, hs in FEATURES.items()], {n: list(p) for n, p in HOOKS.items()}
    )
    with dynbpf.open(obj, map_policy="on_demand", adopt=root) as coll, dynbpf.Application(coll, features) as app:
        assert coll.adoption is not None
        assert coll.adoption.application == {
            "config": {"seq": "enabled", "ppid": "paused"},
            "variants": {"getpgid": "tp_getpgid", "getppid": "tp_getppid"},
        }
        status = app.status()
        assert {h: s["state"] for h, s in status["hooks"].items()} == {"getpgid": "enabled", "getppid": "paused"}
        assert dict(app.config) == {"seq": "enabled", "ppid": "paused"}
        assert [d["outcome"] for d in app.explain()["getpgid"]] == ["adopted"]
        app.apply({"seq": "enabled", "ppid": "paused"})  # the same: nothing is loaded or attached again
        assert {n: coll.programs[n].id for n in ids} == ids
        numbered_getpgid(3)
        assert coll.maps["counters"][0] == 1
        app.disable("seq")
        assert not coll.programs["tp_getpgid"].loaded
        assert gone(ids["tp_getpgid"])
        assert not os.path.lexists(f"{root}/links/tp_getpgid")
        assert not os.path.lexists(f"{root}/progs/tp_getpgid")
        numbered_getpgid(4)
        assert coll.maps["counters"][0] == 1
        app.enable("seq", "ppid")
        assert coll.programs["tp_getppid"].id == ids["tp_getppid"]  # resumed: attached, not reloaded
        assert coll.programs["tp_getppid"].state is ProgramState.ATTACHED
        numbered_getpgid(5)
        assert coll.maps["counters"][0] == 2
        coll.pin()
        assert {"links/tp_getpgid/0", "links/tp_getppid/0"} <= set(listing(root))
    assert gone(*ids.values())


def test_an_adopted_program_no_variant_runs_is_taken_down_at_the_first_apply(root: str) -> None:
    obj = features_app()
    run(["open", obj, {}], ["load", ["raw_getpgid"]], ["attach", "raw_getpgid", {}], ["pin", root], ["close", True])
    features = dynbpf.FeatureMap.of(
        [dynbpf.Feature("seq", hooks=["getpgid"])], {"getpgid": [["tp_getpgid", "raw_getpgid"]]}
    )
    with dynbpf.open(obj, adopt=root) as coll, dynbpf.Application(coll, features) as app:
        raw = coll.programs["raw_getpgid"].id  # adopted, but its variant needs tp_getpgid too
        assert app.status()["hooks"]["getpgid"]["state"] == "off"
        app.apply({})
        assert not coll.programs["raw_getpgid"].loaded
        assert gone(raw)


def test_a_link_that_cannot_be_moved_keeps_the_old_program_until_discarded(root: str, no_fd_leak: None) -> None:
    """replace_pinned() cannot re-make a tracepoint link whose attach keywords were not recorded: the old
    program stays on it, the manifest carries it beside the new one, and a later run reports and discards it."""
    v1, v2 = changing(1), changing(2)
    with dynbpf.open(v1) as coll:
        coll.programs["count_getpgid"].load()
        coll.programs["count_getpgid"].attach()
        old = coll.programs["count_getpgid"].id
        coll.pin(root)
        coll.close(keep_pinned=True)
    manifest = read_manifest(root)
    assert manifest is not None
    (link,) = manifest.programs["count_getpgid"].links
    assert link.target == {}
    unrecorded = dataclasses.replace(link, target=None)  # as if attached with an fd of that process
    programs = {"count_getpgid": dataclasses.replace(manifest.programs["count_getpgid"], links=(unrecorded,))}
    write_manifest(root, dataclasses.replace(manifest, programs=programs))
    with dynbpf.open(v2, adopt=root) as coll:
        failures = coll.replace_pinned()
        assert "were not recorded" in str(failures["count_getpgid"])
        new = coll.programs["count_getpgid"]
        assert new.loaded
        assert not new.links
        assert alive(old)
        numbered_getpgid(7)
        assert coll.maps["counters"][2] == 1  # counted by v1 (its VERSION), through the maps both share
        coll.close(keep_pinned=True)
    with dynbpf.open(v2, adopt=root) as coll:
        assert coll.adoption is not None
        assert coll.adoption.programs == ("count_getpgid",)
        assert "an earlier version of it still runs" in coll.adoption.refused["count_getpgid"]
        assert coll.discard_pinned() == (f"{root}/links/count_getpgid/0",)
        assert gone(old)
        assert coll.programs["count_getpgid"].loaded


def test_an_application_made_after_replace_pinned_runs_the_replaced_programs(root: str, no_fd_leak: None) -> None:
    """replace_pinned() moved v1's link onto v2's program: an Application made then runs v2 as it runs adopted
    programs (the link it has, no second one, which a perf tracepoint would refuse) and takes it down when told."""
    run(
        ["open", changing(1), {}],
        ["load", ["count_getpgid"]],
        ["attach", "count_getpgid", {}],
        ["pin", root],
        ["close", True],
    )
    features = dynbpf.FeatureMap.of([dynbpf.Feature("seq", hooks=["getpgid"])], {"getpgid": ["count_getpgid"]})
    with dynbpf.open(changing(2), adopt=root) as coll:
        assert coll.adoption is not None
        assert coll.adoption.replaced == ()
        assert coll.replace_pinned() == {}
        assert coll.adoption.replaced == ("count_getpgid",)
        program = coll.programs["count_getpgid"]
        (link,) = program.links
        with dynbpf.Application(coll, features) as app:
            (decision,) = app.explain()["getpgid"]
            assert decision["outcome"] == "adopted"
            assert "loaded anew in place" in decision["reason"]
            app.apply({"seq": "enabled"})
            assert program.links == (link,)
            numbered_getpgid(1)
            assert coll.maps["counters"][2] == 2  # counted by version 2, through the link version 1 had
            app.apply({})
            assert not program.loaded
            assert not os.path.lexists(f"{root}/links/count_getpgid")
