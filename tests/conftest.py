"""Test set-up shared by the whole suite.

Kernel tests need root and a kernel that loads BPF. Outside CI they are
skipped with the reason when that is missing; under CI=true a missing
prerequisite fails the test instead, and any skip at all fails the run, so a
green CI always means the kernel tests really ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _bpf_usable() -> str | None:
    """None if BPF programs can be loaded here, else why not."""
    if os.geteuid() != 0:
        return "kernel tests need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    try:
        from dynbpf._asm.insn import return_imm
        from dynbpf._probes.trial import load
        from dynbpf._sys.constants import ProgType

        trial = load(ProgType.SOCKET_FILTER, return_imm(0))
    except Exception as e:  # any failure to even try means "unusable", with the reason
        return f"cannot issue bpf(2): {e}"
    with trial:
        if not trial.ok:
            return f"the kernel refused a two-instruction socket filter ({trial.result})"
    return None


def _mount_pseudo_filesystems() -> None:
    """Tests pin objects and look up tracepoint ids: mount bpffs and tracefs if absent."""
    from dynbpf._sys import fs

    fs.ensure_bpffs(mount_if_missing=True)
    fs.tracefs_root(mount_if_missing=True)


def require(reason: str | None) -> None:
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a kernel-test prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


_state: dict[str, str | None] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        if "bpf" not in _state:
            reason = _bpf_usable()
            if reason is None:
                try:
                    _mount_pseudo_filesystems()
                except Exception as e:
                    reason = f"cannot mount bpffs/tracefs: {e}"
            _state["bpf"] = reason
        require(_state["bpf"])
    for tool in ("clang", "bpftool", "llvm-objcopy"):
        if item.get_closest_marker(f"needs_{tool.replace('-', '_')}") is not None and shutil.which(tool) is None:
            require(f"{tool} is not installed (scripts/bootstrap.sh installs it)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if IN_CI and skipped:
        terminalreporter.write_line(f"CI=true: {len(skipped)} test(s) were skipped; failing the run", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if IN_CI and reporter is not None and reporter.stats.get("skipped") and session.exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture
def pin_root() -> Iterator[str]:
    """A private directory on bpffs for a test's pins, removed (with its pins) afterwards."""
    from tests import stress_driver

    root = stress_driver.new_pin_root(0)
    yield root
    stress_driver.remove_pins(root)


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves file descriptors open."""
    yield from _fd_leak_check()


@pytest.fixture(autouse=True)
def _kernel_tests_leak_no_fd(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every kernel test is checked for leaked fds, whether or not it asks (it may ask, once)."""
    if request.node.get_closest_marker("kernel") is None or "no_fd_leak" in request.fixturenames:
        yield
        return
    yield from _fd_leak_check()


def _fd_leak_check() -> Iterator[None]:
    before = _open_fds()
    yield
    leaked = {fd: what for fd, what in _open_fds().items() if before.get(fd) != what}
    assert not leaked, f"file descriptors leaked: {leaked}"


def _open_fds() -> dict[str, str]:
    """Open fds and what they name; not the one listing the directory (it is closed by the time it is read),
    which would otherwise hide a leak that reuses its number."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        what = _describe(fd)
        if what is not None:
            out[fd] = what
    return out


def _describe(fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # the fd used to list the directory itself
