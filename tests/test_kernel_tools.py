"""Tool helpers against real kernel objects: stacks from bpf_get_stackid named, BPF timestamps dated,
``coll.attach()``, and programs and maps as attributes (tests/bpf/tool_helpers.bpf.c).

Names are checked against what the system says independently: kernel ones against /proc/kallsyms
read here, user ones against nm's symbol values plus the load base /proc/PID/maps shows, for a PIE
program, a position-dependent one and a stripped shared library.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import dynbpf
from dynbpf import Collection
from tests import stack_target
from tests.bpfbuild import build
from tests.stack_target import StackTarget

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

LOADED = ("kernel_stack_on_getpgid", "count_enters", "count_getppid", "user_stack_on_call", "pass_packets")
AUTO = {"kernel_stack_on_getpgid", "count_enters", "count_getppid"}


@pytest.fixture
def coll() -> Iterator[Collection]:
    with dynbpf.open(build("tool_helpers"), constants={"target_tgid": os.getpid()}) as c:
        yield c


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> StackTarget:
    return stack_target.build(tmp_path_factory.mktemp("stack-target"))


def kallsyms_addresses() -> dict[str, set[int]]:
    """Every address /proc/kallsyms lists each name at, read without dynbpf."""
    out: dict[str, set[int]] = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        address, _, name = line.split()[:3]
        out.setdefault(name, set()).add(int(address, 16))
    return out


# --- kernel stacks ----------------------------------------------------------------------------------


def test_a_kernel_stack_is_named_by_kallsyms(coll: Collection) -> None:
    coll.load(["kernel_stack_on_getpgid"])
    coll.programs["kernel_stack_on_getpgid"].attach()
    os.getpgid(0)
    stack_id = coll.data.kernel_stack
    assert stack_id >= 0
    frames = dynbpf.Symbolizer().kernel_stack(coll.maps["stacks"], stack_id)
    assert [f.address for f in frames] == list(coll.maps["stacks"].stack(stack_id))
    listed = kallsyms_addresses()
    assert len(frames) >= 3
    for frame in frames:
        assert frame.kernel, frame
        assert frame.function is not None, frame
        assert frame.address - frame.offset in listed[frame.function], frame  # the symbol really starts there
        assert str(frame) == f"{frame.function}+{frame.offset:#x}" + (f" [{frame.module}]" if frame.module else "")
    names = [f.function for f in frames]
    if platform.machine() == "x86_64":
        assert "do_syscall_64" in names, names  # the syscall entry is below every syscall's tracepoint


def test_a_bpf_program_is_named_as_module_bpf(coll: Collection) -> None:
    """kallsyms lists JITed programs as bpf_prog_<tag>_<name> [bpf]; read after the load, it names them."""
    coll.load(["count_enters"])
    listed = [
        line.split()
        for line in Path("/proc/kallsyms").read_text().splitlines()
        if line.endswith("[bpf]") and "_count_enters" in line
    ]
    if not listed:  # the administrator's choice, not a failure: nothing to name then
        assert Path("/proc/sys/net/core/bpf_jit_kallsyms").read_text().strip() == "0"
        return
    address, _, name = int(listed[0][0], 16), listed[0][1], listed[0][2]
    frame = dynbpf.Symbolizer().kernel(address + 4)
    assert (frame.function, frame.offset, frame.module) == (name, 4, "bpf")
    assert str(frame) == f"{name}+0x4 [bpf]"


def test_an_address_below_every_symbol_is_its_number() -> None:
    frame = dynbpf.Symbolizer().kernel(0x1000)
    assert frame.function is None
    assert str(frame) == "0x1000"


def test_what_is_not_an_address_or_a_pid_is_refused() -> None:
    symbolizer = dynbpf.Symbolizer()
    with pytest.raises(TypeError, match="address must be an int, not '0x10'"):
        symbolizer.kernel("0x10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pid must not be negative"):
        symbolizer.user(0x1000, -1)
    with pytest.raises(ValueError, match="pid=0 is no process"):
        symbolizer.user(0x1000, 0)


# --- user stacks ------------------------------------------------------------------------------------


def user_stack(coll: Collection, binary: Path, probed: Path, function: str) -> tuple[int, tuple[int, ...], list[str]]:
    """Run ``binary`` with a uprobe on ``function`` of ``probed``; (pid, addresses, named frames) while it runs."""
    coll.load(["user_stack_on_call"])
    link = coll.programs["user_stack_on_call"].attach(path=str(probed), symbol=function)
    with link, stack_target.running(binary) as proc:
        assert coll.bss.user_pid == proc.pid
        stack_id = coll.data.user_stack
        addresses = coll.maps["stacks"].stack(stack_id)
        frames = dynbpf.Symbolizer().user_stack(coll.maps["stacks"], stack_id, proc.pid)
        assert [f.address for f in frames] == list(addresses)
        check_offsets(frames, proc.pid)
        return proc.pid, addresses, [str(f) for f in frames]


def check_offsets(frames: list[dynbpf.StackFrame], pid: int) -> None:
    """Each named frame's function starts where nm's value, moved by the file's load base, says."""
    for frame in frames:
        if frame.function is None or frame.module is None or "/stack-target" not in frame.module:
            continue
        path = Path(frame.module)
        base = 0 if path.name == "stack-fixed" else stack_target.load_base(pid, path)
        assert frame.address - frame.offset == base + stack_target.symbols(path)[frame.function], frame


def assert_entry_stack(functions: list[str], chain: list[str]) -> None:
    """The first frames of a stack taken by a uprobe on ``chain[0]``'s entry.

    The caller (``chain[1]``) is there when the kernel reads the return address at the stack top for it,
    and lost when it does not (the callee has not pushed its frame pointer yet, so the walk starts from the
    caller's frame): kernels differ (Debian's 6.1 finds it, older 6.1 builds do not), so either is right.
    """
    without_caller = [chain[0], *chain[2:]]
    assert functions[: len(chain)] == chain or functions[: len(without_caller)] == without_caller, functions


@pytest.mark.parametrize("variant", ["pie", "fixed"])
def test_a_user_stack_of_a_program_is_named(coll: Collection, target: StackTarget, variant: str) -> None:
    binary = getattr(target, variant)
    _, _, frames = user_stack(coll, binary, binary, "leaf")
    assert frames[0] == f"leaf+0x0 ({binary})"
    functions = [f.partition("+")[0] for f in frames]
    # middle is static: only .symtab names it
    assert_entry_stack(functions, ["leaf", "middle", "outer", "main"])
    assert all(f.endswith(f"({binary})") for f in frames[: functions.index("main") + 1]), frames


def test_a_user_stack_through_a_stripped_library_is_named(coll: Collection, target: StackTarget) -> None:
    _, _, frames = user_stack(coll, target.pie, target.library, "lib_leaf")
    assert frames[0] == f"lib_leaf+0x0 ({target.library})"  # .dynsym: the library has no .symtab
    functions = [f.partition("+")[0] for f in frames]
    assert_entry_stack(functions, ["lib_leaf", "lib_outer", "outer", "main"])
    assert frames[functions.index("outer")].endswith(f"({target.pie})")


def test_a_process_gone_leaves_numbers_and_a_kept_reading_still_names(coll: Collection, target: StackTarget) -> None:
    coll.load(["user_stack_on_call"])
    kept = dynbpf.Symbolizer()
    link = coll.programs["user_stack_on_call"].attach(path=str(target.pie), symbol="leaf")
    with link, stack_target.running(target.pie) as proc:
        stack_id, pid = coll.data.user_stack, proc.pid
        before = [str(f) for f in kept.user_stack(coll.maps["stacks"], stack_id, pid)]
    assert before[0] == f"leaf+0x0 ({target.pie})"
    after = dynbpf.Symbolizer().user_stack(coll.maps["stacks"], stack_id, pid)
    assert [str(f) for f in after] == [f"{f.address:#x}" for f in after]
    assert all(f.function is None and f.module is None for f in after)
    assert [str(f) for f in kept.user_stack(coll.maps["stacks"], stack_id, pid)] == before  # what it read stays
    kept.forget(pid)
    assert str(kept.user(after[0].address, pid)) == f"{after[0].address:#x}"


def test_addresses_outside_code_are_unknown_in_their_mapping() -> None:
    """The heap is mapped but not code; a library's data is in the file but not a function."""
    symbolizer = dynbpf.Symbolizer()
    buffer = bytearray(4096)
    heap = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    frame = symbolizer.user(heap, os.getpid())
    assert frame.function is None
    assert str(frame) in (f"{heap:#x}", f"[unknown] ({frame.module})")
    libc = ctypes.CDLL(None)
    errno_location = ctypes.cast(libc.__errno_location, ctypes.c_void_p).value
    assert errno_location is not None
    named = symbolizer.user(errno_location, os.getpid())
    assert named.function == "__errno_location"
    assert named.offset == 0
    assert named.module is not None
    assert "libc" in named.module


def test_a_binary_deleted_while_it_runs_is_still_named(target: StackTarget, tmp_path: Path) -> None:
    """The mapping outlives the file's name: /proc/PID/map_files still reaches the file it maps."""
    copy = tmp_path / "stack-copy"
    copy.write_bytes(target.pie.read_bytes())
    copy.chmod(0o755)
    leaf_value = stack_target.symbols(copy)["leaf"]
    with stack_target.running(copy) as proc:
        leaf = stack_target.load_base(proc.pid, copy) + leaf_value
        copy.unlink()
        frame = dynbpf.Symbolizer().user(leaf + 4, proc.pid)
    assert str(frame) == f"leaf+0x4 ({copy})"


def test_a_mapped_file_that_is_not_elf_is_said_once(tmp_path: Path) -> None:
    text = tmp_path / "not-elf"
    text.write_bytes(b"#!/bin/sh\n" * 1000)
    symbolizer = dynbpf.Symbolizer()
    with open(text, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    with m:
        view = ctypes.c_char.from_buffer(m)
        address = ctypes.addressof(view)
        del view
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            first = symbolizer.user(address, os.getpid())
            second = symbolizer.user(address + 100, os.getpid())
    assert str(first) == f"[unknown] ({text})"
    assert second.function is None
    assert len(said) == 1
    assert f"addresses in {text} stay unnamed: " in str(said[0].message)
    assert f"{text} is not an ELF file we can read: no ELF header" in str(said[0].message)


# --- stack maps -------------------------------------------------------------------------------------


def test_stack_ids_that_name_no_stack(coll: Collection) -> None:
    stacks = coll.maps["stacks"]
    with pytest.raises(ValueError, match=r"stack id -14 is bpf_get_stackid\(\)'s error EFAULT"):
        stacks.stack(-14)
    with pytest.raises(KeyError):
        stacks.stack(1000)
    with pytest.raises(TypeError, match="a stack id is an int"):
        stacks.stack("1")  # type: ignore[arg-type]
    with pytest.raises(dynbpf.MapTypeError, match="'counts' is a hash map, not a stack_trace map"):
        coll.maps["counts"].stack(0)


# --- timestamps -------------------------------------------------------------------------------------


def test_bpf_timestamps_are_dated_within_a_second(coll: Collection) -> None:
    coll.load(["kernel_stack_on_getpgid"])
    coll.programs["kernel_stack_on_getpgid"].attach()
    os.getpgid(0)
    now = datetime.now(UTC)
    clock = dynbpf.KernelClock()
    assert abs(clock.monotonic(coll.bss.ktime) - now) < timedelta(seconds=1)
    assert abs(clock.boottime(coll.bss.boot_time) - now) < timedelta(seconds=1)
    assert clock.monotonic(coll.bss.ktime) <= now  # stamped before now was read
    local = dynbpf.KernelClock(tz=None).monotonic(coll.bss.ktime)
    assert local.utcoffset() == now.astimezone().utcoffset()
    assert abs(local - now) < timedelta(seconds=1)


# --- coll.attach() ----------------------------------------------------------------------------------


def test_attach_attaches_what_sections_name_and_says_what_it_passed_over(coll: Collection) -> None:
    assert not coll.load(list(LOADED))
    links = coll.attach()
    assert set(links) == AUTO
    assert set(links.skipped) == {"user_stack_on_call", "pass_packets"}
    assert "names no target" in links.skipped["user_stack_on_call"]
    assert "interface=" in links.skipped["pass_packets"]
    assert all(coll.programs[n].state is dynbpf.ProgramState.ATTACHED for n in AUTO)
    os.getpgid(0)
    os.getppid()
    assert coll.data.kernel_stack >= 0
    assert coll.bss.enters > 0
    assert coll.bss.getppid_calls >= 1  # the uprobe its section names: libc.so.6:getppid
    again = coll.attach()
    assert not again
    assert all("attached already" in again.skipped[n] for n in AUTO)
    links.detach()
    assert all(not coll.programs[n].links for n in AUTO)
    assert all(coll.programs[n].loaded for n in AUTO)


def test_attach_leaves_out_what_is_not_loaded(coll: Collection) -> None:
    coll.load(["count_enters"])
    links = coll.attach()
    assert set(links) == {"count_enters"}
    assert not links.skipped
    links.detach()


def test_attach_is_all_or_nothing(coll: Collection) -> None:
    assert not coll.load([*LOADED, "never_attaches"])
    with pytest.raises(dynbpf.AttachError, match="never_attaches") as raised:
        coll.attach()
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "stopped at program 'never_attaches'" in notes
    assert "kernel_stack_on_getpgid, count_enters, count_getppid" in notes
    assert all(not p.links for p in coll.programs.values())
    os.getpgid(0)
    assert coll.data.kernel_stack == -1  # detached in the kernel too: the program did not run
    assert all(coll.programs[n].loaded for n in LOADED)


# --- attribute access -------------------------------------------------------------------------------


def test_programs_and_maps_are_attributes_too(coll: Collection) -> None:
    assert coll.programs.count_enters is coll.programs["count_enters"]
    assert coll.progs is coll.programs
    assert coll.maps.stacks is coll.maps["stacks"]
    assert isinstance(coll.maps.keys, type(coll.maps.get))  # the mapping's method, not the map named keys
    assert isinstance(coll.maps["keys"], dynbpf.Map)
    assert "stacks" in dir(coll.maps)
    assert "count_enters" in dir(coll.progs)
    assert ".bss" not in dir(coll.maps)
    assert dir(coll.maps).count("keys") == 1
    assert getattr(coll.maps, "stack", None) is None
    assert not hasattr(coll.programs, "count_enter")


def test_an_unknown_attribute_names_the_close_ones(coll: Collection) -> None:
    with pytest.raises(dynbpf.AttributeNotFound, match="has no map 'stack'; did you mean 'stacks'") as raised:
        _ = coll.maps.stack
    assert isinstance(raised.value, AttributeError)
    assert isinstance(raised.value, dynbpf.NotFound)
    assert raised.value.name == "stack"
    with pytest.raises(dynbpf.NotFound, match="has no program 'count_enter'; did you mean 'count_enters'"):
        _ = coll.progs.count_enter
    with pytest.raises(AttributeError, match="has no variable 'enter'; did you mean 'enters'"):
        _ = coll.bss.enter
    with pytest.raises(AttributeError):
        _ = coll.maps._private
