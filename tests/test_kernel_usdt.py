"""USDT programs on the real kernel: a C program with <sys/sdt.h> probes, its arguments read exactly.

The test builds a small program with gcc (-O2, so most arguments live in
registers, 8 to 64 bits, signed and unsigned; one function at -O0 whose
arguments are stack slots and constants; a probe behind a semaphore; a probe
in a shared library it links), attaches the programs of tests/bpf/usdt.bpf.c,
which read the arguments with libbpf's usdt.bpf.h, lets the program fire its
probes and compares what the BPF side saw with what the program passed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import dynbpf
from dynbpf._attach import Link, attach
from dynbpf._attach.usdt import SPECS_MAP, UsdtContext, UsdtLink, semaphore_support
from dynbpf._attach.usdt_notes import find_sites, read_notes
from dynbpf._probes import attach as attach_features
from dynbpf._probes import kernel as kernel_features
from dynbpf._sys.constants import AttachType, LinkType
from dynbpf.errors import AttachError, KernelUnsupported
from tests.bpfbuild import build
from tests.helpers import IN_CI, kernel_lacks, require

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

K = 5  # the program's seed: every value it passes is computed from it at run time
TIMES = 3  # how often it fires each probe
TEXT = "dynbpf usdt string"

MAIN_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/sdt.h>

extern volatile unsigned short dynbpf_guarded_semaphore;
int guarded_fire(long n);
long lib_call(long x);

/* -O2: the arguments are computed from k at run time and passed in registers */
__attribute__((noinline)) void fire_regs(long k, const char *s)
{
	int8_t a = (int8_t)-k;
	uint8_t b = (uint8_t)(250 + k);
	int16_t c = (int16_t)(-30000 - k);
	uint16_t d = (uint16_t)(65530 + k);
	int32_t e = (int32_t)(-2000000000 - k);
	uint32_t f = (uint32_t)(4000000000u + k);
	int64_t g = INT64_MIN + k;
	uint64_t h = UINT64_MAX - k;
	STAP_PROBE9(dynbpf, regs, a, b, c, d, e, f, g, h, s);
}

/* -O0: locals live on the stack, so the specs are memory operands, and two constants */
__attribute__((noinline, optimize("O0"))) void fire_mem(long k)
{
	short local = (short)(-k * 3);
	unsigned long big = 0xfedcba9876543210ul + k;
	STAP_PROBE4(dynbpf, mem, local, big, -7, 42);
}

int main(int argc, char **argv)
{
	long k = atol(argv[1]);
	int times = atoi(argv[2]);
	int guarded = 0, semaphore;
	long acc = 0;
	char go;

	printf("ready\n"); /* its libraries are mapped: a probe can find them in /proc/<pid>/maps */
	fflush(stdout);
	if (argc != 4 || read(0, &go, 1) != 1) /* the test attaches first, then lets us run */
		return 1;
	semaphore = dynbpf_guarded_semaphore;
	for (int i = 0; i < times; i++) {
		fire_regs(k, argv[3]);
		fire_mem(k);
		guarded += guarded_fire(k + i);
		acc += lib_call(k);
	}
	printf("%d %d %ld\n", semaphore, guarded, acc);
	return 0;
}
"""

GUARDED_C = r"""
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

volatile unsigned short dynbpf_guarded_semaphore __attribute__((unused)) __attribute__((section(".probes")));

int guarded_fire(long n)
{
	if (dynbpf_guarded_semaphore) { /* arguments that cost something are computed only when traced */
		STAP_PROBE2(dynbpf, guarded, n, (int)(n * -2));
		return 1;
	}
	return 0;
}
"""

LIB_C = r"""
#include <sys/sdt.h>

long lib_call(long x)
{
	STAP_PROBE2(dynbpf_lib, call, x, x * 3);
	return x + 1;
}
"""


@dataclass(frozen=True)
class Target:
    binary: Path
    library: Path


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    """The program and its library, built with gcc against Debian's systemtap-sdt-dev."""
    for tool in ("gcc", "readelf"):
        if shutil.which(tool) is None:
            require(f"{tool} is not installed (scripts/bootstrap.sh installs it)")
    d = tmp_path_factory.mktemp("usdt-target")
    for name, source in (("main.c", MAIN_C), ("guarded.c", GUARDED_C), ("lib.c", LIB_C)):
        (d / name).write_text(source)
    gcc = ["gcc", "-O2", "-g", "-Wall", "-Werror"]
    try:
        subprocess.run([*gcc, "-fPIC", "-shared", "-o", str(d / "libdynbpfusdt.so"), str(d / "lib.c")], check=True)
        subprocess.run(
            [
                *gcc,
                "-o",
                str(d / "dynbpf-usdt-target"),
                str(d / "main.c"),
                str(d / "guarded.c"),
                "-L",
                str(d),
                "-ldynbpfusdt",
                f"-Wl,-rpath,{d}",
            ],
            check=True,
        )
    except subprocess.CalledProcessError as e:
        if not IN_CI and not Path("/usr/include/x86_64-linux-gnu/sys/sdt.h").exists():
            require("<sys/sdt.h> is missing (Debian's systemtap-sdt-dev; scripts/bootstrap.sh installs it)")
        raise AssertionError(f"cannot build the USDT target: {e}") from e
    return Target(d / "dynbpf-usdt-target", d / "libdynbpfusdt.so")


@pytest.fixture
def coll() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("usdt"), constants={"string_arg": 8}) as c:
        yield c


def run(target: Target, *, times: int = TIMES) -> subprocess.Popen[bytes]:
    """The program, started and waiting for the go (its libraries mapped by then)."""
    proc = subprocess.Popen(
        [str(target.binary), str(K), str(times), TEXT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate()  # waits, and closes its pipes


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, int, int]:
    """Let the program run; what it printed: the semaphore it saw, how often the guarded probe fired, a sum."""
    try:
        out, _ = proc.communicate(b"g", timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0
    semaphore, guarded, acc = (int(x) for x in out.split())
    return semaphore, guarded, acc


def s64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def supported_or_refused(prog: dynbpf.Program, **target: object) -> bool:
    """True when this kernel runs usdt programs; else checks that attaching refuses with the probe's evidence."""
    for support in (kernel_features.bpf_cookie(), attach_features.uprobes()):
        if not support.supported:
            with pytest.raises(KernelUnsupported) as refused:
                prog.attach(**target)
            assert refused.value.how == support.how
            return False
    return True


# --- the notes --------------------------------------------------------------------------------------


def _readelf_notes(path: Path) -> list[dict[str, str]]:
    """``readelf -n``'s view of the stapsdt notes: binutils is the oracle for the note format."""
    out = subprocess.run(["readelf", "-n", "--wide", str(path)], check=True, capture_output=True, text=True).stdout
    notes: list[dict[str, str]] = []
    for block in out.split("NT_STAPSDT")[1:]:
        fields = dict(re.findall(r"(Provider|Name|Location|Base|Semaphore|Arguments): ?(.*?)(?=,\s*\w+:|\n|$)", block))
        notes.append(fields)
    return notes


def test_notes_read_as_readelf_reads_them(target: Target) -> None:
    for path in (target.binary, target.library):
        ours = read_notes(str(path))
        theirs = _readelf_notes(path)
        assert len(ours) == len(theirs) > 0
        for note, fields in zip(ours, theirs, strict=True):
            assert (note.provider, note.name, note.args) == (fields["Provider"], fields["Name"], fields["Arguments"])
            assert (note.pc, note.base, note.semaphore) == tuple(
                int(fields[k], 16) for k in ("Location", "Base", "Semaphore")
            )
    specs = {n.name: n.args for n in read_notes(str(target.binary))}
    assert "@%" in specs["regs"]  # the -O2 probe reads registers (gcc 12: %sil %r8b %ax %r9w %edx %r10d...)
    assert "(%rbp)" in specs["mem"]
    assert "@$" in specs["mem"]
    (guarded,) = find_sites(str(target.binary), "dynbpf", "guarded")
    assert guarded.note.semaphore != 0
    # the semaphore's file offset: where the .probes section's bytes sit in the file
    sections = subprocess.run(["readelf", "-SW", str(target.binary)], check=True, capture_output=True, text=True)
    row = next(line for line in sections.stdout.splitlines() if " .probes " in line).split()
    addr, offset = int(row[row.index("PROGBITS") + 1], 16), int(row[row.index("PROGBITS") + 2], 16)
    assert guarded.semaphore_offset == guarded.note.semaphore - addr + offset


# --- attach and read the arguments -------------------------------------------------------------------


def test_register_arguments_of_every_size_and_a_string(coll: dynbpf.Collection, target: Target) -> None:
    prog = coll.programs["regs"]
    prog.load()
    if not supported_or_refused(prog, path=str(target.binary), provider="dynbpf", name="regs"):
        return
    with prog.attach(path=str(target.binary), provider="dynbpf", name="regs", cookie=0xC0FFEE) as link:
        assert isinstance(link, UsdtLink)
        assert link.kind == "usdt"
        assert link.description == f"usdt {target.binary}:dynbpf:regs, 1 site"
        multi = attach_features.uprobe_multi().supported  # then the program was loaded for uprobe_multi links
        assert [m.facts().link_type for m in link.links] == [LinkType.UPROBE_MULTI if multi else LinkType.PERF_EVENT]
        finish(run(target))
        seen = coll.bss.regs_seen
        assert seen.hits == TIMES
        assert (seen.cnt, seen.errors, seen.cookie) == (9, 0, 0xC0FFEE)
        args = [s64(int(a)) for a in seen.args]
        assert args[:8] == [
            -K,
            250 + K,
            -30000 - K,
            65530 + K,
            -2000000000 - K,
            4000000000 + K,
            -(1 << 63) + K,
            s64((1 << 64) - 1 - K),  # bpf_usdt_arg's long holds the u64's bits
        ]
        assert bytes(seen.str).rstrip(b"\0").decode() == TEXT
    assert link.closed
    finish(run(target))
    assert coll.bss.regs_seen.hits == TIMES  # detached: no more hits


def test_memory_and_constant_arguments_from_the_section(coll: dynbpf.Collection, target: Target) -> None:
    """SEC("usdt/dynbpf-usdt-target:dynbpf:mem"): provider and name from the section, path= for the file."""
    prog = coll.programs["mem"]
    prog.load()
    if not supported_or_refused(prog, path=str(target.binary)):
        return
    with prog.attach(path=str(target.binary)):
        finish(run(target))
    seen = coll.bss.mem_seen
    assert (seen.hits, seen.cnt, seen.errors, seen.cookie) == (TIMES, 4, 0, 0)
    assert [s64(int(a)) for a in seen.args[:4]] == [-K * 3, s64(0xFEDCBA9876543210 + K), -7, 42]


def test_a_semaphore_is_set_while_attached(coll: dynbpf.Collection, target: Target) -> None:
    prog = coll.programs["guarded"]
    prog.load()
    if not supported_or_refused(prog, path=str(target.binary), provider="dynbpf", name="guarded"):
        return
    if kernel_lacks(
        semaphore_support(), lambda: prog.attach(path=str(target.binary), provider="dynbpf", name="guarded")
    ):
        return
    assert finish(run(target))[:2] == (0, 0)  # not traced: the semaphore is 0, the probe is skipped
    with prog.attach(path=str(target.binary), provider="dynbpf", name="guarded", cookie=7):
        semaphore, guarded, _ = finish(run(target))
    assert semaphore > 0
    assert guarded == TIMES
    seen = coll.bss.guarded_seen
    assert seen.hits == TIMES
    last = K + TIMES - 1
    assert (seen.args[0], seen.args[1], seen.cookie) == (last, -2 * last, 7)
    assert finish(run(target))[:2] == (0, 0)  # detached: 0 again


def test_a_shared_library_probe_by_name_in_the_process(coll: dynbpf.Collection, target: Target) -> None:
    """A library's probe: file offsets of an ET_DYN file; the bare name is found in the traced process's maps."""
    prog = coll.programs["lib"]
    prog.load()
    proc = run(target)
    try:
        if not supported_or_refused(prog, path=str(target.library), provider="dynbpf_lib", name="call"):
            return
        with prog.attach(path="libdynbpfusdt.so", provider="dynbpf_lib", name="call", pid=proc.pid) as link:
            assert link.description.startswith(
                f"usdt libdynbpfusdt.so:dynbpf_lib:call pid {proc.pid} ({target.library}"
            )
            _, _, acc = finish(proc)
    finally:
        stop(proc)
    assert acc == TIMES * (K + 1)
    seen = coll.bss.lib_seen
    assert (seen.hits, seen.cnt, seen.errors) == (TIMES, 2, 0)
    assert list(seen.args[:2]) == [K, 3 * K]
    finish(run(target))  # another process: not traced
    assert coll.bss.lib_seen.hits == TIMES


def test_perf_uprobes_per_site_when_not_loaded_for_uprobe_multi(coll: dynbpf.Collection, target: Target) -> None:
    """Without uprobe_multi links (or a program not loaded for them) each site gets a perf uprobe with its cookie."""
    prog = coll.programs["regs"]
    prog.load()
    if not supported_or_refused(prog, path=str(target.binary), provider="dynbpf", name="regs"):
        return
    loaded_for_multi = prog.prepared.expected_attach_type == AttachType.TRACE_UPROBE_MULTI
    assert loaded_for_multi == attach_features.uprobe_multi().supported
    clone = prog.clone(expected_attach_type=0)
    try:
        context = UsdtContext(coll._registry.require(SPECS_MAP), coll._usdt_spec_ids(), multi=False)
        where = {"path": str(target.binary), "provider": "dynbpf"}
        with attach(prog.prepared.kind, clone.raw, "regs", usdt_context=context, name="regs", **where) as link:
            assert isinstance(link, UsdtLink)
            assert [m.facts().link_type for m in link.links] == [LinkType.PERF_EVENT]  # one site, one perf uprobe
            assert context.ids.used == {0}
            finish(run(target))
        assert context.ids.used == set()  # detaching gave the spec id back
    finally:
        clone.close()
    seen = coll.bss.regs_seen
    assert (seen.hits, seen.cnt, seen.errors) == (TIMES, 9, 0)
    assert s64(int(seen.args[0])) == -K
    assert bytes(seen.str).rstrip(b"\0").decode() == TEXT


def test_spec_ids_are_shared_by_equal_specs_and_given_back(coll: dynbpf.Collection, target: Target) -> None:
    """Two probes attached at once hold distinct spec ids (their cookies); detaching frees them for reuse."""
    regs, mem = coll.programs["regs"], coll.programs["mem"]
    regs.load()
    mem.load()
    if not supported_or_refused(regs, path=str(target.binary), provider="dynbpf", name="regs"):
        return
    ids = coll._usdt_spec_ids()
    with regs.attach(path=str(target.binary), provider="dynbpf", name="regs"):
        with mem.attach(path=str(target.binary)) as second:
            assert ids.used == {0, 1}
            with pytest.raises(AttachError, match=r"cannot pin .*spec ids"):
                second.pin("/sys/fs/bpf/dynbpf-usdt-never")
            finish(run(target))
        assert ids.used == {0}
        assert coll.bss.regs_seen.cnt == 9
        assert coll.bss.mem_seen.cnt == 4
    assert ids.used == set()


def test_failures_name_the_probe_and_what_the_file_has(coll: dynbpf.Collection, target: Target) -> None:
    prog = coll.programs["regs"]
    prog.load()
    with pytest.raises(AttachError) as missing:
        prog.attach(path=str(target.binary), provider="dynbpf", name="nope")
    message = str(missing.value)
    assert f"(usdt {target.binary}:dynbpf:nope)" in message
    assert (
        f"{target.binary} has no USDT probe dynbpf:nope; its probes: dynbpf:guarded, dynbpf:mem, dynbpf:regs" in message
    )
    with pytest.raises(AttachError, match=r"has no USDT probes \(no \.note\.stapsdt notes\)"):
        prog.attach(path="/bin/true", provider="p", name="n")
    with pytest.raises(AttachError, match="no target given"):
        prog.attach(path=str(target.binary))
    with pytest.raises(TypeError, match="unexpected target arguments symbol"):
        prog.attach(path=str(target.binary), provider="dynbpf", name="regs", symbol="main")
    assert coll._usdt_spec_ids().used == set()  # nothing held by the failed attaches
    assert prog.links == ()


SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_a_distribution_binary_s_probe_behind_a_semaphore(coll: dynbpf.Collection) -> None:
    """Debian's python3 has USDT probes, each behind a semaphore: python:gc__start's generation is a stack slot."""
    if not SYSTEM_PYTHON.exists() or not any(n.name == "gc__start" for n in read_notes(str(SYSTEM_PYTHON))):
        require(f"{SYSTEM_PYTHON} has no python:gc__start probe (a Python built without --with-dtrace)")
    prog = coll.programs["mem"]
    prog.load()
    if not supported_or_refused(prog, path=str(SYSTEM_PYTHON), provider="python", name="gc__start"):
        return
    (site,) = find_sites(str(SYSTEM_PYTHON), "python", "gc__start")
    assert site.semaphore_offset
    collect = "import gc, os; gc.collect(1); os._exit(0)"  # os._exit: no collection at shutdown after ours
    with prog.attach(path=str(SYSTEM_PYTHON), provider="python", name="gc__start"):
        subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", collect], check=True)
    seen = coll.bss.mem_seen
    assert seen.hits >= 1
    assert (seen.cnt, seen.errors) == (1, 0)
    assert seen.args[0] == 1  # the generation gc.collect(1) collected, the last collection of the process


def test_reload_moves_the_probe_to_the_new_program(coll: dynbpf.Collection, target: Target) -> None:
    """A usdt link cannot be updated in place: reload attaches the new program, then detaches the old link."""
    prog = coll.programs["regs"]
    prog.load()
    if not supported_or_refused(prog, path=str(target.binary), provider="dynbpf", name="regs"):
        return
    prog.attach(path=str(target.binary), provider="dynbpf", name="regs", cookie=1)
    old_id = prog.id
    prog.reload()
    assert prog.id != old_id
    (link,) = prog.links
    assert coll._usdt_spec_ids().used == {1}  # the new link's id was taken while the old one still held 0
    finish(run(target))
    seen = coll.bss.regs_seen
    assert (seen.hits, seen.cnt, seen.errors, seen.cookie) == (TIMES, 9, 0, 1)
    prog.detach()
    assert link.closed
    assert coll._usdt_spec_ids().used == set()


def test_links_made_are_detached_if_the_group_cannot_be_made(
    coll: dynbpf.Collection, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing half done: the uprobes an attach made go again when wrapping them fails (the hook fails it)."""
    from dynbpf._attach import usdt

    prog = coll.programs["regs"]
    prog.load()
    if not supported_or_refused(prog, path=str(target.binary), provider="dynbpf", name="regs"):
        return
    made: list[Link] = []

    def refuse(links: list[tuple[str, Link]], **_: object) -> UsdtLink:
        made.extend(link for _, link in links)
        raise RuntimeError("the group cannot be made")

    monkeypatch.setattr(usdt, "UsdtLink", refuse)
    with pytest.raises(RuntimeError, match="group cannot be made"):
        prog.attach(path=str(target.binary), provider="dynbpf", name="regs")
    assert made
    assert all(link.closed for link in made)  # detached, not leaked
    assert coll._usdt_spec_ids().used == set()  # the spec ids were given back
    assert prog.links == ()
