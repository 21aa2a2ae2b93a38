"""The suite's own rule: kernel tests skip locally but fail under CI=true when BPF is unusable."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFTEST = (ROOT / "tests" / "conftest.py").read_text()

KERNEL_TEST = """
import os
import pytest

pytestmark = pytest.mark.kernel

def test_needs_kernel():
    assert True
"""

# Pretend to be an unprivileged user: the prerequisite check must notice.
NOT_ROOT = "import os\nos.geteuid = lambda: 1000\n"


@pytest.fixture(autouse=True)
def _this_checkout_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copied conftest imports tests.helpers and dynbpf: this checkout's, from the pytester directory too."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST + "\n" + NOT_ROOT)
    pytester.makeini("[pytest]\nmarkers =\n    kernel: kernel test\n")
    pytester.makepyfile(test_k=KERNEL_TEST)
    return pytester


def test_kernel_test_skips_with_reason_outside_ci(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "")
    result = suite.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*kernel tests need root*"])


def test_kernel_test_fails_loudly_in_ci(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess()
    result.assert_outcomes(errors=1)  # failed in set-up, before the test body ran
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*CI=true and a kernel-test prerequisite is missing: kernel tests need root*"])


def test_any_skip_fails_a_ci_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_s="import pytest\n\ndef test_s():\n    pytest.skip('no reason')\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*1 test(s) were skipped; failing the run*"])


def test_the_fd_leak_check_sees_a_leak_even_at_the_number_the_listing_used() -> None:
    """The check listed /proc/self/fd with an fd of its own; a leak reusing that number went unseen."""
    import os

    from tests.helpers import fd_leak_check

    check = fd_leak_check()
    next(check)
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # the lowest free number: the listing's, just freed
    try:
        with pytest.raises(AssertionError, match="file descriptors leaked"):
            next(check)
    finally:
        os.close(fd)


def test_a_capability_the_kernel_lacks_is_checked_not_skipped() -> None:
    """Under CI=true any skip fails the run, so a test of a capability some kernels lack (tcx on 6.1)
    checks the refusal there instead: kernel_lacks says whether to go on, after checking it."""
    from dynbpf._probes.result import Support
    from dynbpf.errors import KernelUnsupported, VerifierError
    from tests.helpers import kernel_lacks

    lacking = Support("frobnication", False, "BPF_FROB -> EINVAL")
    attempts: list[str] = []

    def refused() -> None:
        attempts.append("refused")
        lacking.require()

    assert kernel_lacks(lacking, refused)
    assert not kernel_lacks(Support("frobnication", True, "BPF_FROB -> ok"), refused)
    assert attempts == ["refused"]  # a kernel with the capability goes on to the test itself
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        kernel_lacks(lacking, lambda: None)  # the probe said no, yet it worked: a wrong probe fails the test

    def refused_for_another_reason() -> None:
        raise KernelUnsupported("frobnication", "BPF_FROB -> EPERM")

    with pytest.raises(AssertionError):
        kernel_lacks(lacking, refused_for_another_reason)  # dynbpf's refusal must carry the probe's evidence

    def verifier_refuses(errno_: int) -> Callable[[], None]:
        def load() -> None:
            raise VerifierError("frob", errno_, "0: (85) call unknown#999\nunknown func\n")

        return load

    assert kernel_lacks(lacking, verifier_refuses(errno.EINVAL))  # the probe's own refusal, met at load
    assert kernel_lacks(Support("frobnication", False, "BPF_FROB -> ENOTSUPP"), verifier_refuses(524))
    with pytest.raises(AssertionError, match="the probe met another refusal"):
        kernel_lacks(lacking, verifier_refuses(errno.EACCES))  # a verifier complaint of another kind
