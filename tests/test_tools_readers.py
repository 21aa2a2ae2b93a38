"""What the tool helpers read, without BPF: kallsyms and /proc/PID/maps lines, the functions of ELF files
(checked against nm), what a section leaves to the caller to attach, frames as text, the clocks' offsets,
and how mypy types programs and maps read as attributes."""

from __future__ import annotations

import ctypes
import os
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynbpf
from dynbpf._attach.auto import needs_target
from dynbpf._elf.functions import FunctionTable, Segment, read_functions
from dynbpf._elf.sections import program_kind
from dynbpf._sys import kallsyms, procmaps
from tests import stack_target
from tests.stack_target import StackTarget


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> StackTarget:
    return stack_target.build(tmp_path_factory.mktemp("stack-target"))


# --- /proc/kallsyms ---------------------------------------------------------------------------------

KALLSYMS_TEXT = """\
ffffffff81000000 T _stext
ffffffff81001000 t do_one_thing

ffffffffc0201000 t helper_of_mod\t[some_mod]
ffffffffc0300000 t bpf_prog_0123456789abcdef_handle\t[bpf]
"""


def test_kallsyms_lines_with_and_without_a_module() -> None:
    assert list(kallsyms.parse(KALLSYMS_TEXT)) == [
        (0xFFFFFFFF81000000, "T", "_stext", ""),
        (0xFFFFFFFF81001000, "t", "do_one_thing", ""),
        (0xFFFFFFFFC0201000, "t", "helper_of_mod", "some_mod"),
        (0xFFFFFFFFC0300000, "t", "bpf_prog_0123456789abcdef_handle", "bpf"),
    ]


@pytest.mark.parametrize("line", ["zzzz T name", "ffffffff81000000 T", "ffffffff81000000"])
def test_a_malformed_kallsyms_line_is_named(line: str) -> None:
    with pytest.raises(ValueError, match=r"line 2 is not 'address type name'"):
        list(kallsyms.parse(f"ffffffff81000000 T _stext\n{line}\n"))


def test_the_running_kernel_lists_code() -> None:
    symbols = list(kallsyms.parse(kallsyms.read_text()))
    assert sum(s.type in kallsyms.TEXT for s in symbols) > 1000


# --- /proc/PID/maps ---------------------------------------------------------------------------------

MAPS_TEXT = """\
55b9b3290000-55b9b3292000 r--p 00000000 fe:00 260386                     /usr/bin/head
55b9b3292000-55b9b3298000 r-xp 00002000 fe:00 260386                     /usr/bin/head
7fa49fbe0000-7fa49fbe3000 rw-p 00000000 00:00 0 
7fa49fc09000-7fa49fd5f000 r-xp 00026000 fe:00 339380                     /tmp/a dir/lib x.so (deleted)
7fa49fdd7000-7fa49fdd9000 r-xp 00000000 00:00 0                          [vdso]
"""  # noqa: W291 - an anonymous mapping's line ends in a space


def test_maps_lines_say_file_offset_and_what_is_mapped() -> None:
    head, text, anonymous, deleted, vdso = procmaps.parse(MAPS_TEXT)
    assert (text.start, text.end, text.perms, text.offset, text.path) == (
        0x55B9B3292000,
        0x55B9B3298000,
        "r-xp",
        0x2000,
        "/usr/bin/head",
    )
    assert head.file
    assert text.file
    assert not head.deleted
    assert (anonymous.path, anonymous.file, anonymous.inode) == ("", False, 0)
    assert (deleted.path, deleted.deleted, deleted.file) == ("/tmp/a dir/lib x.so", True, True)
    assert (vdso.path, vdso.file) == ("[vdso]", False)
    assert 0x55B9B3292000 in text
    assert 0x55B9B3298000 not in text


def test_a_malformed_maps_line_is_named() -> None:
    with pytest.raises(ValueError, match=r"line 1 is not 'start-end perms offset dev inode \[path\]'"):
        procmaps.parse("55b9b3290000 r--p 00000000 fe:00 260386 /usr/bin/head\n")


def test_this_process_maps_its_python() -> None:
    regions = procmaps.read(os.getpid())
    assert any(r.file and "x" in r.perms for r in regions)
    assert regions == sorted(regions, key=lambda r: r.start)


# --- functions of ELF files -------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "table"), [("pie", ".symtab"), ("fixed", ".symtab"), ("library", ".dynsym")])
def test_every_function_nm_lists_is_found_at_its_value(target: StackTarget, variant: str, table: str) -> None:
    path = getattr(target, variant)
    functions = read_functions(str(path))
    assert functions.table == table
    listed = stack_target.symbols(path)
    assert set(listed) >= ({"lib_leaf", "lib_outer"} if variant == "library" else {"leaf", "middle", "outer", "main"})
    for name, value in listed.items():
        found = functions.function(value)
        assert found is not None, name
        assert found[1] == 0, name
        assert listed[found[0]] == value, name  # this name, or another of the same address


def test_file_offsets_become_the_linkers_addresses(target: StackTarget) -> None:
    """The fixed binary runs where nm says; its file offsets are not its addresses, so the segments matter."""
    functions = read_functions(str(target.fixed))
    leaf = stack_target.symbols(target.fixed)["leaf"]
    text = next(s for s in functions.segments if s.vaddr <= leaf < s.vaddr + s.size)
    assert text.vaddr != text.offset
    assert functions.address(leaf - text.vaddr + text.offset) == leaf
    assert functions.function(leaf + 3) == ("leaf", 3)
    assert functions.address(10**12) is None


def test_an_address_between_functions_has_no_name() -> None:
    table = FunctionTable(".symtab", [Segment(0, 0x1000, 0x100)], [(0x1040, 0x10, "b"), (0x1000, 0x20, "a")])
    assert [table.function(a) for a in (0xFFF, 0x1000, 0x101F, 0x1020, 0x1045, 0x1050)] == [
        None,
        ("a", 0),
        ("a", 0x1F),
        None,
        ("b", 5),
        None,
    ]
    assert len(table) == 2


def test_of_names_at_one_address_the_public_one_wins() -> None:
    """libc's getpgid is __getpgid too: the name callers use is the one shown."""
    address = ctypes.cast(ctypes.CDLL(None).getpgid, ctypes.c_void_p).value
    region = next(r for r in procmaps.read(os.getpid()) if address in r)
    functions = read_functions(region.path)
    vaddr = functions.address(address - region.start + region.offset)
    assert vaddr is not None
    assert functions.function(vaddr) == ("getpgid", 0)


def test_not_elf_and_unreadable_files(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match=f"{text} is not an ELF file we can read: no ELF header"):
        read_functions(str(text))
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the path
        read_functions(str(tmp_path / "missing"))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_damaged_binary_is_a_value_error_or_still_read(target: StackTarget, data: st.DataObject) -> None:
    """Truncated or with bytes of its headers changed: a ValueError naming the file, never anything else."""
    original = target.pie.read_bytes()
    damaged = bytearray(original[: data.draw(st.integers(0, len(original)), label="length")])
    for _ in range(data.draw(st.integers(0, 8), label="changes")):
        if damaged:
            where = data.draw(st.integers(0, min(len(damaged), 4096) - 1))
            damaged[where] = data.draw(st.integers(0, 255))
    path = target.pie.parent / f"damaged-{os.getpid()}"
    path.write_bytes(bytes(damaged))
    try:
        read_functions(str(path))
    except ValueError as e:
        error = str(e)
    else:
        error = str(path)
    finally:
        path.unlink()
    assert str(path) in error


# --- what a section leaves to the caller ------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ("tp/syscalls/sys_enter_openat", None),
        ("raw_tp/sys_enter", None),
        ("uprobe/libc.so.6:malloc", None),
        ("kprobe.multi/do_sys_*", None),
        ("fentry/do_unlinkat", None),
        ("iter/task", None),
        ("uprobe", "section 'uprobe' names no target"),
        ("kprobe", "section 'kprobe' names no target"),
        ("usdt", "section 'usdt' names no target"),
        ("uprobe.multi", "section 'uprobe.multi' names no target"),
        ("xdp", "a xdp program attaches where the caller says: pass interface="),
        ("tcx/ingress", "pass interface="),
        ("cgroup_skb/ingress", "pass cgroup="),
        ("perf_event", "a perf event"),
        ("netfilter", "pf= and hook="),
        ("sk_lookup", "netns="),
        ("sk_msg", "map="),
        ("iter/bpf_map_elem", "a bpf_map_elem iterator walks one map: pass map_fd="),
        ("struct_ops/init", "registered with its struct_ops map"),
        ("fentry.multi/do_*", "not implemented"),
    ],
)
def test_which_sections_name_their_hook(section: str, reason: str | None) -> None:
    found = needs_target(program_kind(section))
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found


def test_a_section_whose_target_does_not_parse_says_why() -> None:
    kind = program_kind("uprobe/malloc")
    assert kind.error is not None
    assert needs_target(kind) == kind.error


# --- frames and clocks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (dynbpf.StackFrame(0xFFFFFFFF81001010, "do_one_thing", 0x10, None, kernel=True), "do_one_thing+0x10"),
        (dynbpf.StackFrame(0xFFFFFFFFC0201004, "helper", 4, "some_mod", kernel=True), "helper+0x4 [some_mod]"),
        (dynbpf.StackFrame(0xFFFFFFFF80000000, None, 0, None, kernel=True), "0xffffffff80000000"),
        (dynbpf.StackFrame(0x55B9B3292010, "main", 0x10, "/usr/bin/head", kernel=False), "main+0x10 (/usr/bin/head)"),
        (dynbpf.StackFrame(0x55B9B3292010, None, 0, "/usr/bin/head", kernel=False), "[unknown] (/usr/bin/head)"),
        (dynbpf.StackFrame(0x7FA49FDD7010, None, 0, "[vdso]", kernel=False), "[unknown] ([vdso])"),
        (dynbpf.StackFrame(0x7FA49FBE0000, None, 0, None, kernel=False), "0x7fa49fbe0000"),
    ],
)
def test_a_frame_as_text(frame: dynbpf.StackFrame, text: str) -> None:
    assert str(frame) == text


def test_the_offsets_are_the_clocks_differences() -> None:
    clock = dynbpf.KernelClock()
    assert abs(clock.realtime_ns(time.monotonic_ns()) - time.time_ns()) < 5_000_000
    boottime = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(clock.realtime_ns(boottime, "boottime") - time.time_ns()) < 5_000_000
    tai = time.clock_gettime_ns(time.CLOCK_TAI)
    assert abs(clock.realtime_ns(tai, "tai") - time.time_ns()) < 5_000_000
    assert all(0 <= u < 1_000_000 for u in clock.uncertainty.values())
    before = clock.offsets
    clock.measure()
    assert clock.offsets.keys() == before.keys()
    assert abs(clock.offsets["monotonic"] - before["monotonic"]) < 5_000_000
    with pytest.raises(ValueError, match="clock='utc': one of monotonic, boottime, tai"):
        clock.realtime_ns(0, "utc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="an int of nanoseconds"):
        clock.monotonic(1.5)  # type: ignore[arg-type]


def test_attribute_access_is_typed(tmp_path: Path) -> None:
    """mypy --strict sees programs and maps read as attributes as Program and Map."""
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "typed.py"
    source.write_text(
        textwrap.dedent(
            """
            import dynbpf

            def use(coll: dynbpf.Collection) -> None:
                reveal_type(coll.programs.handle_exec)
                reveal_type(coll.progs.handle_exec)
                reveal_type(coll.maps.events)
                reveal_type(coll.attach())
            """
        )
    )
    out, err, _ = api.run(["--strict", "--no-incremental", "--python-version", "3.11", str(source)])
    assert "dynbpf._runtime.program.Program" in out, out + err
    assert out.count("dynbpf._runtime.program.Program") == 2, out
    assert "dynbpf._maps.map.Map" in out, out
    assert "dynbpf._attach.auto.Attached" in out, out
    assert "error:" not in out, out
