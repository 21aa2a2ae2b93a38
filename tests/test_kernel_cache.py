"""The warm prepared cache: a restarted agent loads what an earlier run prepared, byte-identically, or prepares afresh.

Each test opens a real object twice (or more) against the running kernel:
a hit must give the kernel the very instructions a cold start gives (equal
tags), and anything that would change the instructions must miss.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import dynbpf
from dynbpf._prepare import cache as prepare_cache
from dynbpf._runtime.collection import KernelView
from tests.bpfbuild import build
from tests.helpers import run_once

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

FIXTURE = "twofiles"
PROGRAMS = ["first_prog", "first_stage", "second_prog", "second_dispatch", "second_stage", "lenient_uprobe"]


def start(directory: Path | None, programs: list[str] = PROGRAMS, **options: object) -> tuple[dict[str, str], int, int]:
    """Open with the cache in ``directory``, load ``programs``; their tags, and the cache's hits and misses."""
    with dynbpf.open(build(FIXTURE), cache=directory, **options) as coll:
        assert coll.load(programs) == {}
        tags = {name: coll.programs[name].tag for name in programs}
        cache = coll.prepared.cache
        counts = (cache.hits, cache.misses) if cache is not None else (0, 0)
    return tags, *counts


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.prepared"))


def test_a_warm_start_loads_what_a_cold_start_loads_without_preparing(tmp_path: Path, no_fd_leak: None) -> None:
    cold, _, _ = start(None)
    first, hits, misses = start(tmp_path)
    assert (hits, misses) == (0, len(PROGRAMS))
    assert len(cache_files(tmp_path)) == 1
    warm, hits, misses = start(tmp_path)
    assert (hits, misses) == (len(PROGRAMS), 0)
    assert warm == cold == first  # the kernel tagged the same instructions every time


def test_a_hit_gets_this_runs_map_numbers_and_source_lines(tmp_path: Path, no_fd_leak: None) -> None:
    start(tmp_path)
    with dynbpf.open(build(FIXTURE), cache=tmp_path) as coll:
        prog = coll.programs["first_prog"]
        prepared = prog.prepared
        assert coll.prepared.cache is not None
        assert coll.prepared.cache.hits == 1
        numbers = {coll.map_fd_number(m) for m in prog.maps}
        refs = {i.imm & 0xFFFFFFFF for i in prepared.instructions if i.is_ldimm64 and i.src in (1, 2)}
        assert refs <= numbers
        assert refs
        line = prepared.source_line(0)
        assert line is not None
        assert line.file.endswith("first.bpf.c")
        prog.load()
        assert run_once(coll.programs["first_prog"].fd) == 102


def test_programs_prepared_later_are_added(tmp_path: Path, no_fd_leak: None) -> None:
    start(tmp_path, ["first_prog"])
    _, hits, misses = start(tmp_path, ["first_prog", "second_prog"])
    assert (hits, misses) == (1, 1)
    _, hits, misses = start(tmp_path, ["first_prog", "second_prog"])
    assert (hits, misses) == (2, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"map_edits": {"shared_counts": dynbpf.MapEdit(create=False)}},
        {"kernel": KernelView(config={"CONFIG_DYNBPF_TEST": "y"})},
        {"kernel": KernelView(kallsyms={"dynbpf_test_symbol": 0xFFFF0000})},
    ],
    ids=["absent map", "kconfig values", "kallsyms"],
)
def test_what_changes_instructions_misses(tmp_path: Path, change: dict[str, object], no_fd_leak: None) -> None:
    programs = ["second_stage", "lenient_uprobe"]  # load whatever the change does to the maps
    start(tmp_path, programs)
    _, hits, misses = start(tmp_path, programs, **change)
    assert (hits, misses) == (0, len(programs))
    assert len(cache_files(tmp_path)) == 2  # a key of its own; the first stays valid
    _, hits, _ = start(tmp_path, programs)
    assert hits == len(programs)


@pytest.mark.parametrize("identity", ["kernel_identity", "code_identity"])
def test_another_kernel_or_dynbpf_misses(
    tmp_path: Path, identity: str, monkeypatch: pytest.MonkeyPatch, no_fd_leak: None
) -> None:
    """A test can neither reboot nor upgrade dynbpf: the identity functions stand in for that."""
    start(tmp_path)
    real = getattr(prepare_cache, identity)()
    monkeypatch.setattr(prepare_cache, identity, lambda: real + b"another boot, or another dynbpf")
    _, hits, misses = start(tmp_path)
    assert (hits, misses) == (0, len(PROGRAMS))
    monkeypatch.undo()
    _, hits, _ = start(tmp_path)
    assert hits == len(PROGRAMS)  # back on the first: its file is still valid


def test_another_object_misses(tmp_path: Path, no_fd_leak: None) -> None:
    start(tmp_path)
    other = build("staticmaps")
    with dynbpf.open(other, cache=tmp_path) as coll:
        assert coll.load(["left_prog"]) == {}
        assert coll.prepared.cache is not None
        assert coll.prepared.cache.misses == 1
    assert len(cache_files(tmp_path)) == 2


def test_constants_share_the_cache(tmp_path: Path, no_fd_leak: None) -> None:
    """.rodata values are map data, not instructions: a hit, and the program sees the new value."""
    start(tmp_path, ["first_prog"])
    with dynbpf.open(build(FIXTURE), cache=tmp_path, constants={"first_bias": 5}) as coll:
        coll.programs["first_prog"].load()
        assert coll.prepared.cache is not None
        assert coll.prepared.cache.hits == 1
        assert run_once(coll.programs["first_prog"].fd) == 1 + 5 + 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_a_corrupt_file_is_ignored_and_replaced(tmp_path: Path, damage: str, no_fd_leak: None) -> None:
    cold, _, _ = start(tmp_path)
    (path,) = cache_files(tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) // 3]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"DBPC" + os.urandom(200))
    path.write_bytes(bytes(raw))
    tags, hits, misses = start(tmp_path)
    assert (hits, misses) == (0, len(PROGRAMS))
    assert tags == cold
    _, hits, _ = start(tmp_path)  # the damaged file was replaced by a good one
    assert hits == len(PROGRAMS)


def test_a_directory_others_can_write_is_not_trusted(tmp_path: Path, no_fd_leak: None) -> None:
    shared = tmp_path / "shared"
    start(shared)
    shared.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="not private"):
        _, hits, _ = start(shared)
    assert hits == 0  # its files are not unpickled either


def test_concurrent_writers_leave_a_complete_file(tmp_path: Path, no_fd_leak: None) -> None:
    halves = [PROGRAMS[:3], PROGRAMS[3:]]
    errors: list[BaseException] = []

    def run(programs: list[str]) -> None:
        try:
            for _ in range(3):
                start(tmp_path, programs)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache_files(tmp_path)) == 1
    tags, hits, misses = start(tmp_path)  # whatever survived is complete and loads; the rest is prepared
    assert hits + misses == len(PROGRAMS)
    assert hits >= 3
    assert tags == start(None)[0]


def test_cache_true_uses_the_xdg_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fd_leak: None
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with dynbpf.open(build(FIXTURE), cache=True) as coll:
        coll.programs["first_prog"].load()
    assert len(cache_files(tmp_path / "dynbpf")) == 1
    assert (tmp_path / "dynbpf").stat().st_mode & 0o777 == 0o700
