"""Every ``python`` code block of the README and docs/ runs, against the fixtures it names.

A block opens ``"<fixture>.bpf.o"``: ``agent.bpf.o`` is tests/bpf/docs_agent.bpf.c (the agent the
docs describe), any other name the fixture of that name. Blocks that are not code to run (signatures)
are fenced ``text``. A block that stops running fails here, so the docs cannot drift from the API.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
OBJECT = re.compile(r'"([A-Za-z0-9_]+)\.bpf\.o"')


def _blocks() -> list[object]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            out.append(pytest.param(doc, m.group(1), id=f"{doc.relative_to(ROOT)}#{i + 1}"))
    return out


@pytest.mark.parametrize(("doc", "code"), _blocks())
def test_the_example_runs(
    doc: Path, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fd_leak: None
) -> None:
    fixture = {"agent": "docs_agent"}

    def path_of(m: re.Match[str]) -> str:
        return repr(str(build(fixture.get(m.group(1), m.group(1)))))

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # cache=True writes here
    runnable = OBJECT.sub(path_of, code)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(runnable, str(doc.relative_to(ROOT)), "exec"), {"cache_dir": tmp_path / "cache"})


def test_every_doc_has_its_examples_collected() -> None:
    assert len(_blocks()) >= 10
