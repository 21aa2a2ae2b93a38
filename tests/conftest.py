"""The suite's hooks and shared fixtures (the helpers they use are in tests/helpers.py).

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

from dynbpf._elf import read
from dynbpf._elf.spec import ObjectSpec
from tests import helpers
from tests.bpfbuild import build

_state: dict[str, str | None] = {}

# Child processes get a pipe for stdout, which Python buffers unless told otherwise. A test reading a child's
# line as it comes must have the child flush it; with PYTHONUNBUFFERED inherited (some shells and CI runners
# set it) a missing flush passes here and hangs elsewhere (the kernel matrix's guests), so it is not inherited.
os.environ.pop("PYTHONUNBUFFERED", None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        if "bpf" not in _state:
            reason = helpers.bpf_usable()
            if reason is None:
                try:
                    helpers.mount_pseudo_filesystems()
                except Exception as e:
                    reason = f"cannot mount bpffs/tracefs: {e}"
            _state["bpf"] = reason
        helpers.require(_state["bpf"])
    for tool in ("clang", "bpftool", "llvm-objcopy"):
        if item.get_closest_marker(f"needs_{tool.replace('-', '_')}") is not None and shutil.which(tool) is None:
            helpers.require(f"{tool} is not installed (scripts/bootstrap.sh installs it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that boot a VM (the kernel matrix's smoke test) take minutes and may download a kernel:
    they run only when asked for with DYNBPF_VM_TESTS=1, and are deselected otherwise, not skipped,
    so that a CI run (where any skip fails) stays green without them."""
    if os.environ.get("DYNBPF_VM_TESTS") == "1":
        return
    vm = [item for item in items if item.get_closest_marker("vm") is not None]
    if vm:
        config.hook.pytest_deselected(items=vm)
        items[:] = [item for item in items if item.get_closest_marker("vm") is None]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if helpers.IN_CI and skipped:
        terminalreporter.write_line(f"CI=true: {len(skipped)} test(s) were skipped; failing the run", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if helpers.IN_CI and reporter is not None and reporter.stats.get("skipped") and session.exitstatus == 0:
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
    yield from helpers.fd_leak_check()


@pytest.fixture(autouse=True)
def _kernel_tests_leak_no_fd(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every kernel test is checked for leaked fds, whether or not it asks (it may ask, once)."""
    if request.node.get_closest_marker("kernel") is None or "no_fd_leak" in request.fixturenames:
        yield
        return
    yield from helpers.fd_leak_check()


@pytest.fixture(scope="module")
def globals_obj() -> ObjectSpec:
    """tests/bpf/globals.bpf.c read: its data sections' variables and their layout."""
    return read(build("globals"))
