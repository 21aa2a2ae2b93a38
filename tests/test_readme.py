"""The README's library example runs as written, against tests/bpf/readme_agent.bpf.c."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fd_leak: None) -> None:
    text = README.read_text()
    section = text[text.index("## As a library") :]
    code = section[section.index("```python\n") + len("```python\n") : section.index("```\n", 10)]
    assert '"agent.bpf.o"' in code
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # cache=True writes here, not to the user's cache
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace('"agent.bpf.o"', repr(str(build("readme_agent")))), "README.md", "exec"), {})
    assert out.getvalue().splitlines()[-1].startswith("0 {")  # target_tgid 1234 is no process here: no hits
    assert list((tmp_path / "dynbpf").glob("*.prepared"))
