"""Every ``python`` code block of the README and docs/ runs, against the fixtures it names.

A block opens ``"<fixture>.bpf.o"``: ``agent.bpf.o`` is tests/bpf/docs_agent.bpf.c (the agent the
docs describe), any other name the fixture of that name. Every other block is marked illustrative by
its fence: ``text`` (output, signatures, commands shown with what they print), ``sh`` (commands to
type), ``c`` (BPF C), ``toml`` (a feature map or the agent's configuration; tests/test_features_declare.py
and tests/test_agent_config.py read them), ``ini`` and ``yaml`` (docs/deploy.md's unit file and
manifests, checked by tests/test_agent_config.py); a bare fence is refused, so no block is left
unrun by accident. A block that stops running fails here, so
the docs cannot drift from the API; a command shown may not write into the repository (a benchmark's
``--json``/``--plot`` output goes elsewhere, then is copied on purpose).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from tests.bpfbuild import build

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
FENCE = re.compile(r"^```(.*?)\n(.*?)^```$", re.S | re.M)
OBJECT = re.compile(r'"([A-Za-z0-9_]+)\.bpf\.o"')
#: fences of blocks that are shown, not run (toml, ini, yaml: test_features_declare and test_agent_config check them)
ILLUSTRATIVE = {"text", "sh", "c", "toml", "ini", "yaml"}
#: options of the commands the docs show whose argument is a file written (--plot: the second one)
WRITES = {"--json": 0, "--plot": 1, "-o": 0, "--out": 0, "--output": 0, ">": 0, ">>": 0}


def _blocks() -> list[object]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            out.append(pytest.param(doc, m.group(1), id=f"{doc.relative_to(ROOT)}#{i + 1}"))
    return out


@pytest.mark.kernel
@pytest.mark.needs_clang
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


def test_every_block_is_run_or_marked_illustrative() -> None:
    """A bare fence (or ``py``, ``python3``) was neither run here nor said to be only shown."""
    unmarked = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) != "python" and m.group(1) not in ILLUSTRATIVE:
                line = text[: m.start()].count("\n") + 1
                unmarked.append(f"{doc.relative_to(ROOT)}:{line}: ```{m.group(1)}")
        assert len(BLOCK.findall(text)) == sum(m.group(1) == "python" for m in FENCE.finditer(text)), doc
    assert not unmarked, f"fence each block python (run here) or one of {sorted(ILLUSTRATIVE)}: {unmarked}"


def _commands(text: str) -> list[str]:
    """The commands a doc shows: ``$ `` lines of its blocks (with their continuations), and inline
    ``python -m ...`` spans."""
    out = []
    for m in FENCE.finditer(text):
        lines = iter(m.group(2).splitlines())
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    command = command[:-1] + next(lines, "")
                out.append(command)
    out += re.findall(r"`([^`]*python -m [^`]*)`", FENCE.sub("", text))
    return out


def written_paths(command: str) -> list[str]:
    """The files ``command`` writes, by the options in WRITES (shell comments dropped)."""
    words = shlex.split(command, comments=True)
    return [words[i + 1 + WRITES[w]] for i, w in enumerate(words) if w in WRITES and i + 1 + WRITES[w] < len(words)]


def test_written_paths_are_found() -> None:
    assert written_paths("python -m bench.x --json a.json --plot in.json out.png > log  # --json c") == [
        "a.json",
        "out.png",
        "log",
    ]


def test_commands_shown_never_write_into_the_repository() -> None:
    """Copying a benchmark command from the docs overwrote committed results (docs/img/*.json, *.png)."""
    inside = []
    for doc in DOCS:
        commands = _commands(doc.read_text())
        for command in commands:
            for path in written_paths(command):
                target = Path(path) if Path(path).is_absolute() else ROOT / path  # the docs' commands run at the root
                if target.resolve().is_relative_to(ROOT):
                    inside.append(f"{doc.relative_to(ROOT)}: {command.strip()}")
    assert not inside, inside
    assert any(written_paths(c) for c in _commands((ROOT / "docs" / "benchmarks.md").read_text()))
