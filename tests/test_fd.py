"""Fd ownership semantics (no kernel needed: pipes stand in for BPF objects)."""

from __future__ import annotations

import os

import pytest

from dynbpf._sys.fd import Fd
from dynbpf.errors import StateError


def pipe_fd() -> tuple[Fd, int]:
    r, w = os.pipe()
    return Fd(r, "pipe"), w


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_close_is_idempotent_and_closes_once() -> None:
    fd, w = pipe_fd()
    raw = fd.raw
    fd.close()
    assert fd.closed
    assert not is_open(raw)
    # the number may be reused by someone else now; a second close must not touch it
    r2, w2 = os.pipe()
    fd.close()
    assert is_open(r2)
    for x in (w, r2, w2):
        os.close(x)


def test_context_manager_and_closed_access() -> None:
    fd, w = pipe_fd()
    with fd as same:
        assert same is fd
        assert fd.fileno() == fd.raw == int(fd.__index__())
    with pytest.raises(StateError, match="closed"):
        _ = fd.raw
    os.close(w)


def test_dup_is_independent_cloexec_and_above_stdio() -> None:
    fd, w = pipe_fd()
    with fd, fd.dup() as copy:
        assert copy.raw != fd.raw
        assert copy.raw >= 3
        assert not os.get_inheritable(copy.raw)
        fd.close()
        assert is_open(copy.raw)
    os.close(w)


def test_release_transfers_ownership() -> None:
    fd, w = pipe_fd()
    raw = fd.release()
    assert fd.closed
    assert is_open(raw)
    with pytest.raises(StateError):
        fd.release()
    os.close(raw)
    os.close(w)


def dropped_unclosed() -> tuple[int, int]:
    fd, w = pipe_fd()
    return fd.raw, w  # the Fd dies here without close()


def test_garbage_collected_fd_warns_and_is_closed() -> None:
    with pytest.warns(ResourceWarning, match="unclosed pipe fd") as record:
        raw, w = dropped_unclosed()
    assert f"fd {raw} " in str(record[0].message)
    assert not is_open(raw)
    os.close(w)


def test_negative_fd_rejected() -> None:
    with pytest.raises(ValueError, match="invalid file descriptor"):
        Fd(-1)


def test_a_forgotten_fd_is_closed_even_when_its_warning_is_an_error() -> None:
    """The suite turns ResourceWarning into an error: the finaliser must close first, then warn (issue 13 §7)."""
    import warnings

    raw = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    fd = Fd(raw, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(ResourceWarning, match="unclosed test fd"):
            fd.__del__()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(raw)
