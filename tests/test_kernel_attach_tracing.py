"""The tracing family of attach kinds on the real kernel: each fires or takes effect, or is cleanly refused.

Programs of tests/bpf/tracing.bpf.c count only this process's runs and keep
what they saw and their bpf cookie. Every test decides from a probe: where
the running kernel has the capability (trampolines, BPF LSM, kprobes,
kprobe.multi...) it attaches, triggers the hook, checks the program's
counters and values, detaches and checks it stops; where the probe says
no (the 6.18 test machine refuses trampolines and LSM and has no kprobes;
6.1 has no kprobe.multi), it checks the clean refusal instead of skipping.
The trampoline kinds are triggered with BPF_PROG_TEST_RUN of a tracing
program, which calls bpf_fentry_test1..8 (fentry/fexit) or
bpf_modify_return_test (fmod_ret) in the kernel (net/bpf/test_run.c).
"""

from __future__ import annotations

import errno
import fnmatch
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import dynbpf
from dynbpf import ProgramState
from dynbpf._attach import attach
from dynbpf._attach.kprobe_multi import attachable_functions
from dynbpf._btf.kinds import Kind
from dynbpf._elf.sections import program_kind
from dynbpf._maps.map import btf_by_id
from dynbpf._probes import attach as attach_features
from dynbpf._probes.kernel import BPF_FUNC_GET_ATTACH_COOKIE
from dynbpf._probes.programs import helper
from dynbpf._sys import commands
from dynbpf._sys.constants import AttachType, ProgType
from dynbpf.errors import AttachError, DynbpfError, KernelUnsupported, NotFound, OptionError
from tests.bpfbuild import build
from tests.helpers import PACKET, XDP_DROP, XDP_PASS, kernel_lacks

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


@contextmanager
def opened() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("tracing"), constants={"target_tgid": os.getpid()}) as coll:
        yield coll


def load_and_attach(prog: dynbpf.Program, **target: object) -> object:
    prog.load()
    return prog.attach(**target)


def run_tracing(fd: int) -> int:
    """BPF_PROG_TEST_RUN of a tracing program: the kernel calls its test functions; the retval it reports."""
    return commands.prog_test_run(fd).retval


def bss(coll: dynbpf.Collection, name: str) -> int:
    return int(coll.bss[name])


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "seven"
    path.write_bytes(b"seven!\n")
    return path


def read_file(path: Path, size: int = 100) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


# --- raw tracepoints with cookies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "kind", "prefix"),
    [("trc_raw_tp_cookie", "raw_tp", "raw_tp"), ("trc_tp_btf_cookie", "tp_btf", "tp_btf")],
    ids=["raw_tp", "tp_btf"],
)
def test_raw_tp_and_tp_btf_with_cookies(program: str, kind: str, prefix: str, no_fd_leak: None) -> None:
    """Raw tracepoint programs may read a bpf cookie from 6.10 on (the helper probe says so); before, such a
    program does not load, which is the refusal checked there. tp_btf gained cookies in the same change."""
    cookies = helper(ProgType.RAW_TRACEPOINT, BPF_FUNC_GET_ATTACH_COOKIE)
    with opened() as coll:
        prog = coll.programs[program]
        if kernel_lacks(cookies, lambda: load_and_attach(prog, cookie=1)):
            return
        prog.load()
        with prog.attach(cookie=0x7AB) as link:
            assert link.kind == kind
            assert link.facts().kind == kind
            for _ in range(3):
                os.getpgid(0)
            assert (bss(coll, f"{prefix}_hits"), bss(coll, f"{prefix}_cookie")) == (3, 0x7AB)
        os.getpgid(0)
        assert bss(coll, f"{prefix}_hits") == 3


# --- fentry / fexit / fmod_ret on the kernel's test functions ------------------------------------


def test_fentry_fexit_on_test_functions_with_cookies(no_fd_leak: None) -> None:
    with opened() as coll:
        fentry, fexit = coll.programs["trc_fentry_test1"], coll.programs["trc_fexit_test2"]
        if kernel_lacks(attach_features.trampolines(), lambda: load_and_attach(fentry, cookie=1)):
            return
        fentry.load()
        fexit.load()
        with fentry.attach(cookie=0xF1) as entry_link, fexit.attach(cookie=0xF2) as exit_link:
            assert (entry_link.kind, exit_link.kind) == ("fentry", "fexit")
            assert entry_link.description.startswith("fentry bpf_fentry_test1 (BTF id ")
            assert (entry_link.facts().kind, exit_link.facts().kind) == ("fentry", "fexit")
            assert fentry.state is ProgramState.ATTACHED
            assert run_tracing(fentry.fd) == 0  # bpf_fentry_test1(1) .. bpf_fentry_test8 ran
            assert (bss(coll, "fentry_test_hits"), bss(coll, "fentry_test_arg")) == (1, 1)
            assert bss(coll, "fentry_test_cookie") == 0xF1
            assert (bss(coll, "fexit_test_hits"), bss(coll, "fexit_test_ret")) == (1, 5)  # bpf_fentry_test2(2, 3)
            assert bss(coll, "fexit_test_cookie") == 0xF2
        run_tracing(fentry.fd)
        assert (bss(coll, "fentry_test_hits"), bss(coll, "fexit_test_hits")) == (1, 1)
        assert fentry.state is ProgramState.LOADED


def test_fmod_ret_changes_the_return_value(no_fd_leak: None) -> None:
    """fmod_ret returning nonzero skips bpf_modify_return_test and becomes its return value (where the
    kernel lets fmod_ret modify it; elsewhere the verifier's refusal names the function).

    BPF_PROG_TEST_RUN of a fmod_ret program reports ``side effects << 16 | sum of returns``; the
    side effect is the function's ``*b += 1``, which a skipped function does not do.
    """
    with opened() as coll:
        fmod, fexit = coll.programs["trc_fmod_ret"], coll.programs["trc_fexit_modify"]
        if kernel_lacks(attach_features.trampolines(), lambda: load_and_attach(fmod)):
            return
        if not attach_features.modify_return().supported:
            # which functions fmod_ret may modify is the kernel's list (error injection, its fmodret id
            # set): Debian's 6.1 leaves this one out, and the refusal must say so, naming the function
            with pytest.raises(dynbpf.VerifierError, match=r"bpf_modify_return_test\(\) is not modifiable"):
                fmod.load()
            assert fmod.state is ProgramState.PREPARED
            return
        fmod.load()
        fexit.load()
        baseline = run_tracing(fmod.fd)
        with fexit.attach():
            with fmod.attach() as link:
                assert link.kind == "fmod_ret"
                assert link.facts().kind == "fmod_ret"
                run_tracing(fmod.fd)  # returns 0: the function runs as usual
                assert bss(coll, "fmod_ret_hits") == 1
                natural = bss(coll, "fexit_modify_ret")
                coll.bss.fmod_ret_value = 1234
                modified = run_tracing(fmod.fd)
                assert bss(coll, "fmod_ret_hits") == 2
                assert bss(coll, "fexit_modify_ret") == 1234  # fexit sees the replaced return value
                assert modified >> 16 == (baseline >> 16) - 1  # the function's side effect did not happen
                assert modified & 0xFFFF == ((baseline & 0xFFFF) - natural + 1234) & 0xFFFF
            assert run_tracing(fmod.fd) == baseline
            assert bss(coll, "fexit_modify_ret") == natural
        assert bss(coll, "fmod_ret_hits") == 2


# --- fentry / fexit on a kernel function -------------------------------------------------------


def test_fentry_fexit_on_a_kernel_function(small_file: Path, no_fd_leak: None) -> None:
    with opened() as coll:
        fentry, fexit = coll.programs["trc_fentry_read"], coll.programs["trc_fexit_read"]
        if kernel_lacks(attach_features.trampolines(), lambda: load_and_attach(fentry)):
            return
        fentry.load()
        fexit.load()
        with fentry.attach(), fexit.attach():
            assert read_file(small_file, 100) == b"seven!\n"
            assert (bss(coll, "fentry_read_hits"), bss(coll, "fentry_read_count")) == (1, 100)
            assert (bss(coll, "fexit_read_hits"), bss(coll, "fexit_read_ret")) == (1, 7)
        read_file(small_file)
        assert (bss(coll, "fentry_read_hits"), bss(coll, "fexit_read_hits")) == (1, 1)


# --- LSM ------------------------------------------------------------------------------------------


def denies_opening_until_detached(
    coll: dynbpf.Collection,
    prog: dynbpf.Program,
    small_file: Path,
    tmp_path: Path,
    *,
    counter: str,
    kind: str,
    **attach: object,
) -> None:
    """Attached, ``prog`` makes opening ``small_file``, and only it, fail with EPERM (counted in ``counter``);
    detached, the file opens again."""
    other = tmp_path / "other"
    other.write_bytes(b"x")
    coll.bss.deny_ino = small_file.stat().st_ino
    prog.load()
    with prog.attach(**attach) as link:
        assert (link.kind, link.facts().kind) == (kind, kind)
        with pytest.raises(PermissionError) as denied:
            read_file(small_file)
        assert denied.value.errno == errno.EPERM
        assert bss(coll, counter) == 1
        assert read_file(other) == b"x"  # only that file
    assert read_file(small_file) == b"seven!\n"
    assert bss(coll, counter) == 1


@pytest.mark.parametrize(("program", "counter"), [("trc_lsm_deny", "lsm_denied"), ("trc_lsm_s_deny", "lsm_s_denied")])
def test_lsm_denies_opening_a_file_until_detached(
    program: str, counter: str, small_file: Path, tmp_path: Path, no_fd_leak: None
) -> None:
    with opened() as coll:
        prog = coll.programs[program]
        if kernel_lacks(attach_features.lsm(), lambda: load_and_attach(prog)):
            return
        denies_opening_until_detached(coll, prog, small_file, tmp_path, counter=counter, kind="lsm")


def test_fmod_ret_on_a_security_function_denies_opening_a_file(
    small_file: Path, tmp_path: Path, no_fd_leak: None
) -> None:
    """fmod_ret may modify any ``security_*`` kernel function, error injection or not: returning -EPERM
    from ``security_file_open`` denies the open without BPF LSM, with its bpf cookie, until detached."""
    with opened() as coll:
        prog = coll.programs["trc_fmod_ret_deny"]
        if kernel_lacks(attach_features.trampolines(), lambda: load_and_attach(prog)):
            return
        denies_opening_until_detached(
            coll, prog, small_file, tmp_path, counter="fmod_denied", kind="fmod_ret", cookie=0xF7
        )
        assert bss(coll, "fmod_deny_cookie") == 0xF7


# --- kprobes, syscall probes ---------------------------------------------------------------------


def test_kprobe_and_kretprobe_with_cookies(small_file: Path, no_fd_leak: None) -> None:
    with opened() as coll:
        kprobe, kretprobe = coll.programs["trc_kprobe_read"], coll.programs["trc_kretprobe_read"]
        if kernel_lacks(attach_features.kprobes(), lambda: load_and_attach(kprobe)):
            return
        kprobe.load()
        kretprobe.load()
        with kprobe.attach(cookie=0xA1) as entry, kretprobe.attach(cookie=0xA2) as ret:
            assert (entry.kind, entry.description) == ("kprobe", "kprobe vfs_read")
            assert (ret.kind, ret.description) == ("kretprobe", "kretprobe vfs_read")
            # attaching the kretprobe read the kprobe PMU's sysfs files: count from here
            hits = (bss(coll, "kprobe_hits"), bss(coll, "kretprobe_hits"))
            read_file(small_file, 50)
            assert (bss(coll, "kprobe_hits") - hits[0], bss(coll, "kprobe_count")) == (1, 50)
            assert (bss(coll, "kretprobe_hits") - hits[1], bss(coll, "kretprobe_ret")) == (1, 7)
            assert (bss(coll, "kprobe_cookie"), bss(coll, "kretprobe_cookie")) == (0xA1, 0xA2)
            hits = (bss(coll, "kprobe_hits"), bss(coll, "kretprobe_hits"))
        read_file(small_file)
        assert (bss(coll, "kprobe_hits"), bss(coll, "kretprobe_hits")) == hits
        with kprobe.attach(function="vfs_write", cookie=3) as other:
            assert other.description == "kprobe vfs_write"
        with pytest.raises(AttachError, match=r"\(kprobe dynbpf_no_such_function\): "):
            kprobe.attach(function="dynbpf_no_such_function")
        assert kprobe.state is ProgramState.LOADED


def test_ksyscall_and_kretsyscall_resolve_the_syscall_prefix(no_fd_leak: None) -> None:
    """ksyscall/getpgid probes the kernel's entry point of getpgid: the arch wrapper (``__x64_sys_getpgid``)
    where the kernel has syscall wrappers (libbpf's rule), and BPF_KSYSCALL reads the arguments through it."""
    from dynbpf._attach.kprobe import syscall_prefix

    with opened() as coll:
        entry, ret = coll.programs["trc_ksyscall_getpgid"], coll.programs["trc_kretsyscall_getpgid"]
        if kernel_lacks(attach_features.kprobes(), lambda: load_and_attach(entry)):
            return
        entry.load()
        ret.load()
        function = syscall_prefix() + "getpgid"
        assert any(line.split()[2] == function for line in Path("/proc/kallsyms").read_text().splitlines())
        with entry.attach(cookie=0x51) as a, ret.attach(cookie=0x52) as b:
            assert (a.kind, a.description) == ("ksyscall", f"ksyscall {function}")
            assert (b.kind, b.description) == ("kretsyscall", f"kretsyscall {function}")
            assert a.facts().kind == "kprobe" or a.facts().kind == "perf_event"  # perf link details are 6.6+
            pgid = os.getpgid(os.getpid())
            assert (bss(coll, "ksyscall_hits"), bss(coll, "ksyscall_arg")) == (1, os.getpid())
            assert (bss(coll, "kretsyscall_hits"), bss(coll, "kretsyscall_ret")) == (1, pgid)
            assert (bss(coll, "ksyscall_cookie"), bss(coll, "kretsyscall_cookie")) == (0x51, 0x52)
        os.getpgid(0)
        assert (bss(coll, "ksyscall_hits"), bss(coll, "kretsyscall_hits")) == (1, 1)


# --- kprobe.multi, kretprobe.multi, kprobe.session ------------------------------------------------


def kernel_address(name: str) -> int:
    for line in Path("/proc/kallsyms").read_text().splitlines():
        address, _type, symbol = line.split()[:3]
        if symbol == name:
            return int(address, 16)
    raise LookupError(name)


def test_kprobe_multi_by_pattern_symbols_and_addresses_with_cookies(small_file: Path, no_fd_leak: None) -> None:
    with opened() as coll:
        prog = coll.programs["trc_kprobe_multi"]
        if kernel_lacks(attach_features.kprobe_multi(), lambda: load_and_attach(prog)):
            return
        prog.load()

        def by_cookie() -> list[int]:
            return [int(v) for v in coll.bss.multi_by_cookie]

        with prog.attach() as link:  # the section's pattern vfs_rea? is vfs_read alone
            assert (link.kind, link.description) == ("kprobe.multi", "kprobe.multi vfs_rea? (1 functions)")
            assert link.facts().kind == "kprobe.multi"
            read_file(small_file)
            assert bss(coll, "multi_hits") == 1
            assert by_cookie() == [1, 0, 0, 0]
        with prog.attach(symbols=["vfs_write", "vfs_read"], cookies=[2, 1]) as link:
            assert link.description == "kprobe.multi symbols (2 functions)"
            # bpf_link_info reports the count from 6.6 on
            assert link.facts().description in ("kprobe.multi (2 functions)", "kprobe.multi")
            read_file(small_file)
            with open(os.devnull, "wb", buffering=0) as null:
                null.write(b"x")
            assert by_cookie() == [1, 1, 1, 0]
        with prog.attach(addrs=[kernel_address("vfs_read")], cookies=[3]):
            read_file(small_file)
            assert by_cookie() == [1, 1, 1, 1]
        read_file(small_file)
        assert bss(coll, "multi_hits") == 4
        with pytest.raises(AttachError, match=r"no attachable kernel function matches 'dynbpf_nope\*'"):
            prog.attach(pattern="dynbpf_nope*")
        with pytest.raises(AttachError, match=r"2 cookies for 1 functions"):
            prog.attach(symbols=["vfs_read"], cookies=[1, 2])
        with pytest.raises(AttachError, match=r"give one of pattern=, symbols= or addrs=, not pattern and symbols"):
            prog.attach(pattern="vfs_read", symbols=["vfs_read"])
        with pytest.raises(AttachError, match=r"'trc_kprobe_multi' \(kprobe.multi symbols \(1 functions\)\): "):
            prog.attach(symbols=["dynbpf_no_such_function"])
        assert prog.state is ProgramState.LOADED


def test_kretprobe_multi_sees_the_return_value(small_file: Path, no_fd_leak: None) -> None:
    with opened() as coll:
        prog = coll.programs["trc_kretprobe_multi"]
        if kernel_lacks(attach_features.kprobe_multi(), lambda: load_and_attach(prog)):
            return
        prog.load()
        with prog.attach() as link:
            assert link.kind == "kretprobe.multi"
            assert link.facts().kind in ("kretprobe.multi", "kprobe.multi")  # flags reported from 6.6 on
            read_file(small_file)
            assert (bss(coll, "kretmulti_hits"), bss(coll, "kretmulti_ret")) == (1, 7)
        read_file(small_file)
        assert bss(coll, "kretmulti_hits") == 1


def test_kprobe_session_runs_on_entry_and_return(small_file: Path, no_fd_leak: None) -> None:
    with opened() as coll:
        prog = coll.programs["trc_kprobe_session"]
        if kernel_lacks(attach_features.kprobe_session(), lambda: load_and_attach(prog)):
            return
        prog.load()
        with prog.attach() as link:
            assert link.kind == "kprobe.session"
            read_file(small_file)
            assert bss(coll, "session_runs") == 2  # on entry, and on return since the entry run returned 0
            coll.bss.session_skip_return = 1
            read_file(small_file)
            assert bss(coll, "session_runs") == 3  # on entry only
            with pytest.raises(AttachError, match="retprobe= does not apply"):
                prog.attach(retprobe=True)
        read_file(small_file)
        assert bss(coll, "session_runs") == 3


def test_kprobe_multi_patterns_match_each_attachable_function_once() -> None:
    """The list patterns are matched over: ftrace's (or kallsyms' text symbols where ftrace's cannot be read),
    each name once, without ftrace's placeholders for functions it could not resolve."""
    names = attachable_functions()
    assert "vfs_read" in names
    assert len(names) == len(set(names))
    assert not [n for n in names if n.startswith("__ftrace_invalid_address__")]
    assert "vfs_read" in [n for n in names if fnmatch.fnmatchcase(n, "vfs_rea?")]


def test_kprobe_multi_targets_are_checked_on_any_kernel() -> None:
    """What is wrong with the request itself is said before the kernel is asked (so on any kernel)."""
    multi, bare = program_kind("kprobe.multi/vfs_read"), program_kind("kprobe.multi")
    with pytest.raises(
        AttachError, match=r"\(kprobe.multi\): give one of pattern=, symbols= or addrs=, not pattern and addrs"
    ):
        attach(multi, 0, name="p", pattern="vfs_*", addrs=[1])
    with pytest.raises(
        AttachError, match=r"no target given: name it in the section \(SEC\(\"kprobe.multi/<pattern>\"\)\)"
    ):
        attach(bare, 0, name="p")
    with pytest.raises(AttachError, match=r"a kprobe\.session program runs on entry and return already"):
        attach(program_kind("kprobe.session/vfs_read"), 0, name="p", retprobe=True)
    with pytest.raises(TypeError, match=r"unexpected target arguments function \(accepted: pattern, symbols, addrs"):
        attach(multi, 0, name="p", function="vfs_read")


def test_kprobe_multi_refusal_comes_before_anything_is_opened(no_fd_leak: None) -> None:
    """Where kprobe.multi links are missing, attach raises KernelUnsupported with the probe's evidence; where
    they exist, a bad target still fails as an AttachError naming program, kind and target."""
    with opened() as coll:
        prog = coll.programs["trc_kprobe_multi"]
        support = attach_features.kprobe_multi()
        if not support:
            kind = coll.spec.programs["trc_kprobe_multi"].kind
            with pytest.raises(KernelUnsupported) as exc:
                attach(kind, 0, name="refused")
            assert exc.value.capability.startswith("kprobe.multi links (needed to attach program 'refused'")
            assert exc.value.how == support.how
            return
        prog.load()
        refused = r"cannot attach program 'trc_kprobe_multi' \(kprobe.multi addrs \(1 functions\)\): "
        with pytest.raises(AttachError, match=refused):
            prog.attach(addrs=[1])


# --- fentry / fexit on a BPF program, freplace ----------------------------------------------------


def func_btf_id(prog_fd: int, name: str) -> int:
    """The id of function ``name`` in the BTF a loaded program carries (what attach_btf_id must name)."""
    btf = btf_by_id(int(commands.prog_info(prog_fd).btf_id))
    (type_id,) = btf.find(name, Kind.FUNC)
    return type_id


def test_fentry_fexit_and_freplace_on_a_bpf_program_through_clone(no_fd_leak: None) -> None:
    with opened() as coll:
        target = coll.programs["trc_target"]
        target.load()
        assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_PASS
        main_id = func_btf_id(target.fd, "trc_target")
        verdict_id = func_btf_id(target.fd, "trc_verdict")
        fentry, fexit, replace = (coll.programs[n] for n in ("trc_prog_fentry", "trc_prog_fexit", "trc_replace"))

        def clone_fentry() -> object:
            with fentry.clone(attach_prog_fd=target.fd, attach_btf_id=main_id):
                return None

        if kernel_lacks(attach_features.trampolines(), clone_fentry):
            return
        with (
            fentry.clone(attach_prog_fd=target.fd, attach_btf_id=main_id) as entry_fd,
            fexit.clone(attach_prog_fd=target.fd, attach_btf_id=main_id) as exit_fd,
            attach(fentry.prepared.kind, entry_fd.raw, name="trc_prog_fentry", cookie=9) as entry,
            attach(fexit.prepared.kind, exit_fd.raw, name="trc_prog_fexit") as exit_link,
        ):
            assert (entry.kind, exit_link.kind) == ("fentry", "fexit")
            assert (entry.facts().kind, exit_link.facts().kind) == ("fentry", "fexit")
            assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_PASS
            assert (bss(coll, "prog_fentry_hits"), bss(coll, "prog_fexit_hits")) == (1, 1)
            assert bss(coll, "prog_fexit_ret") == XDP_PASS
            assert bss(coll, "prog_fentry_cookie") == 9
            with (
                replace.clone(attach_prog_fd=target.fd, attach_btf_id=verdict_id) as replace_fd,
                attach(replace.prepared.kind, replace_fd.raw, name="trc_replace") as replaced,
            ):
                assert replaced.kind == "freplace"
                assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_DROP
                assert bss(coll, "prog_fexit_ret") == XDP_DROP  # fexit of the caller sees the replaced verdict
            assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_PASS
        commands.prog_test_run(target.fd, data_in=PACKET)
        assert (bss(coll, "prog_fentry_hits"), bss(coll, "prog_fexit_hits")) == (3, 3)


def test_bare_fentry_section_needs_its_target_at_load(no_fd_leak: None) -> None:
    """``SEC("fentry")`` names no target: it prepares, and loading it without one is the kernel's refusal."""
    with opened() as coll:
        prog = coll.programs["trc_prog_fentry"]
        assert prog.prepared.attach_btf_id == 0
        assert prog.prepared.expected_attach_type == AttachType.TRACE_FENTRY
        with pytest.raises(DynbpfError):
            prog.load()
        assert prog.state is not ProgramState.LOADED


def test_fentry_fexit_and_freplace_on_a_bpf_program_through_open_options(no_fd_leak: None) -> None:
    """``attach_targets=`` (libbpf's bpf_program__set_attach_target) names the target program and function at
    open: every load of those programs is verified against it, and attach() needs nothing more."""
    with opened() as owner:
        target = owner.programs["trc_target"]
        target.load()
        targets = {
            "trc_prog_fentry": (target, "trc_target"),
            "trc_prog_fexit": (target.fd, "trc_target"),
            "trc_replace": (target, "trc_verdict"),
        }

        @contextmanager
        def hooking() -> Iterator[dynbpf.Collection]:
            with dynbpf.open(build("tracing"), constants={"target_tgid": os.getpid()}, attach_targets=targets) as c:
                yield c

        def load_fentry() -> object:
            with hooking() as c:
                return c.programs["trc_prog_fentry"].load()

        if kernel_lacks(attach_features.trampolines(), load_fentry):
            return
        with hooking() as coll:
            fentry, fexit, replace = (coll.programs[n] for n in ("trc_prog_fentry", "trc_prog_fexit", "trc_replace"))
            for prog in (fentry, fexit, replace):
                prog.load()
            main_id = func_btf_id(target.fd, "trc_target")
            with fentry.attach(cookie=5) as entry, fexit.attach() as exit_link:
                assert entry.description == f"fentry (BTF id {main_id})"
                assert exit_link.facts().kind == "fexit"
                assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_PASS
                assert (bss(coll, "prog_fentry_hits"), bss(coll, "prog_fexit_ret")) == (1, XDP_PASS)
                assert bss(coll, "prog_fentry_cookie") == 5
                with replace.attach() as replaced:
                    assert replaced.kind == "freplace"
                    assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_DROP
                    assert bss(coll, "prog_fexit_ret") == XDP_DROP
                fentry.reload()  # verified against the same target again
                assert fentry.state is ProgramState.LOADED or fentry.state is ProgramState.ATTACHED
            assert commands.prog_test_run(target.fd, data_in=PACKET).retval == XDP_PASS


def test_attach_targets_are_checked_at_open(no_fd_leak: None) -> None:
    with opened() as owner:
        target = owner.programs["trc_target"]

        def opening(**targets: object) -> None:
            with dynbpf.open(build("tracing"), attach_targets=targets):
                pass

        with pytest.raises(OptionError, match=r"'trc_prog_fentry'\]: the target program must be loaded"):
            opening(trc_prog_fentry=(target, "trc_target"))
        target.load()
        with pytest.raises(NotFound, match="trc_nope"):
            opening(trc_nope=(target, "trc_target"))
        with pytest.raises(OptionError, match=r"program 'trc_target' \(section 'xdp'\) cannot hook a BPF program"):
            opening(trc_target=(target, "trc_target"))
        with pytest.raises(OptionError, match=r"has no function 'trc_nope' \(its functions: .*trc_verdict"):
            opening(trc_prog_fentry=(target, "trc_nope"))
        with pytest.raises(OptionError, match=r"takes \(target program, function name\)"):
            opening(trc_prog_fentry=target)
        with pytest.raises(OptionError, match="is not a loaded BPF program"):
            opening(trc_prog_fentry=(0, "trc_target"))
