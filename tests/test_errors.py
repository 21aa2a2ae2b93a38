"""Error messages name the command, the errno and what to do."""

from __future__ import annotations

import errno

import pytest

from dynbpf._sys import syscall
from dynbpf._sys.constants import ENOTSUPP, Cmd
from dynbpf.errors import KernelUnsupported, ObjectFormatError, SyscallError, VerifierError


def test_syscall_error_text() -> None:
    err = syscall.error_for(Cmd.PROG_LOAD, errno.E2BIG, "program 'x'")
    text = str(err)
    assert text.startswith("BPF_PROG_LOAD failed: E2BIG")
    assert "program 'x'" in text
    assert "older than the feature" in text
    assert err.errno == errno.E2BIG
    assert err.command == "BPF_PROG_LOAD"


def test_enotsupp_is_named() -> None:
    assert "ENOTSUPP" in str(SyscallError("BPF_MAP_CREATE", ENOTSUPP, syscall.hint(Cmd.MAP_CREATE, ENOTSUPP)))


def test_eperm_hint_for_unprivileged_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscall.os, "geteuid", lambda: 1000)
    assert "CAP_BPF" in syscall.hint(Cmd.PROG_LOAD, errno.EPERM)


def test_eperm_hint_for_root_names_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscall.os, "geteuid", lambda: 0)
    monkeypatch.setattr(syscall, "_read", lambda path: None)
    assert "trampoline" in syscall.hint(Cmd.PROG_LOAD, errno.EPERM)
    assert "RLIMIT_MEMLOCK" in syscall.hint(Cmd.MAP_CREATE, errno.EPERM)


def test_verifier_error_keeps_whole_log_and_shows_tail() -> None:
    log = "\n".join(f"line {i}" for i in range(100))
    err = VerifierError("handle_exec", errno.EACCES, log)
    assert err.log == log
    assert err.program == "handle_exec"
    assert "line 99" in str(err)
    assert "line 10\n" not in str(err)


def test_object_format_error_names_where() -> None:
    assert str(ObjectFormatError("bad", section=".BTF", offset=16)) == "bad (section '.BTF', offset 0x10)"


def test_kernel_unsupported_says_how() -> None:
    err = KernelUnsupported("BPF trampolines", "fentry load -> EPERM")
    assert "BPF trampolines" in str(err)
    assert "fentry load -> EPERM" in str(err)
