"""``dynbpf features``: the declared map, each variant's requirements put to this kernel, the variant it would
take and why, with the verifier asked too under ``--load``; the map from decl tags, a TOML file, or the TOML
beside the object."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dynbpf._cli.main import cli
from tests import kernel_state
from tests.bpfbuild import build
from tests.helpers import assert_schema

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

VARIANT = {
    "name": str,
    "programs": [str],
    "attach": {str: {str: (str, int)}},
    "requires": [{"requirement": str, "supported": bool, "how": str}],
    "verdict": str,
    "reason": str,
}
DECISION = {"hook": str, "variant": str, "outcome": str, "reason": str, "evidence": dict}
REPORT = {
    "object": str,
    "source": str,
    "features": [
        {
            "name": str,
            "hooks": [str],
            "best_effort": [str],
            "requires": [str],
            "would_run": bool,
            "missing_hooks": [str],
        }
    ],
    "hooks": [{"name": str, "features": [str], "variants": [VARIANT], "selected": (str, type(None)), "why": str}],
    "loaded": bool,
}

#: features_app.bpf.c's programs, as a TOML map (docs/features.md's Python example)
TOML = """
[features.seq]
hooks = ["getpgid"]

[features.ppid]
hooks = ["getppid"]
requires = ["seq"]

[hooks.getpgid]
variants = [{ programs = ["fexit_getpgid"], requires = ["trampolines"] }, "btf_getpgid", "tp_getpgid"]

[hooks.getppid]
variants = ["tp_getppid"]
"""


def dynbpf(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args), catch_exceptions=False)


def report(*args: str) -> dict[str, Any]:
    result = dynbpf("features", *args, "-j")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_decl_tags_and_the_variant_each_hook_would_take() -> None:
    data = report(str(build("features_decl")))
    assert_schema(data, REPORT)
    assert data["loaded"] is False
    assert data["source"] == "features_decl.bpf.o"
    assert [(f["name"], f["hooks"], f["requires"]) for f in data["features"]] == [
        ("process", ["exec"], []),
        ("files", ["exec", "open"], ["process"]),
    ]
    hooks = by_name(data["hooks"])
    assert [v["name"] for v in hooks["exec"]["variants"]] == ["exec_fexit", "exec_tp_btf", "tracepoint"]
    assert hooks["exec"]["variants"][2]["attach"] == {"exec_tp": {"category": "sched", "event": "sched_process_exec"}}
    for hook in data["hooks"]:  # the first variant meeting its requirements is selected, those before skipped
        verdicts = [v["verdict"] for v in hook["variants"]]
        passing = [all(r["supported"] for r in v["requires"]) for v in hook["variants"]]
        first = passing.index(True) if True in passing else None
        assert hook["selected"] == (hook["variants"][first]["name"] if first is not None else None)
        for i, variant in enumerate(hook["variants"]):
            if not passing[i]:
                assert verdicts[i] == "skipped"
                refused = next(r for r in variant["requires"] if not r["supported"])
                assert variant["reason"].startswith(f"{refused['requirement']} refused (")
            else:
                assert verdicts[i] == ("selected" if i == first else "fallback")
    for feature in data["features"]:
        assert feature["would_run"] == (not feature["missing_hooks"])
    assert by_name(data["features"])["files"]["would_run"] == (hooks["open"]["selected"] is not None)


def test_load_asks_the_verifier_and_leaves_nothing_loaded() -> None:
    obj = str(build("features_decl"))
    before = set(kernel_state.kernel_progs_named(("exec_", "exit_", "open_")))
    data = report(obj, "--load")
    assert_schema(data, {**REPORT, "hooks": [{**REPORT["hooks"][0], "decisions": [DECISION]}]})  # type: ignore[index]
    assert data["loaded"] is True
    for hook in data["hooks"]:
        chosen = [d["variant"] for d in hook["decisions"] if d["outcome"] == "chosen"]
        assert chosen == ([hook["selected"]] if hook["selected"] else [])
        if hook["selected"]:
            assert hook["why"] == f"{hook['selected']} loaded (the verifier accepted it)"
    assert kernel_state.eventually(lambda: set(kernel_state.kernel_progs_named(("exec_", "exit_", "open_"))) <= before)


def test_a_toml_map_given_or_beside_the_object(tmp_path: Path) -> None:
    toml = tmp_path / "app.toml"
    toml.write_text(TOML)
    given = report(str(build("features_app")), "--feature-map", str(toml))
    assert given["source"] == str(toml)
    assert [h["name"] for h in given["hooks"]] == ["getpgid", "getppid"]
    obj = tmp_path / "features_app.bpf.o"
    shutil.copy(build("features_app"), obj)
    (tmp_path / "features_app.features.toml").write_text(TOML)
    beside = report(str(obj))
    assert beside["source"] == str(tmp_path / "features_app.features.toml")
    assert beside["hooks"] == given["hooks"]


def test_text_names_each_choice_and_its_reason_within_80_columns() -> None:
    result = dynbpf("features", str(build("features_decl")))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "features_decl: features declared in features_decl.bpf.o"
    assert lines[1].split() == ["FEATURE", "HOOKS", "BEST", "EFFORT", "REQUIRES", "RUNS", "HERE"]
    assert any(line.startswith("hook exec (features: process, files): ") for line in lines)
    assert "  3. tracepoint [exec_tp]: " in result.stdout
    assert max(len(line) for line in lines) <= 80


def test_what_declares_no_features_or_a_broken_map_exits_2(tmp_path: Path) -> None:
    result = dynbpf("features", str(build("cli_tool")))
    assert result.exit_code == 2
    assert "declares no features: no dynbpf decl tags, and no cli_tool.features.toml beside it" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[features.seq]\nhook = ["getpgid"]\n')
    result = dynbpf("features", str(build("features_app")), "--feature-map", str(bad))
    assert result.exit_code == 2
    assert "bad.toml:2: feature 'seq': unknown key 'hook' (did you mean 'hooks'?)" in result.output
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(TOML.replace('"tp_getppid"', '"tp_getppid2"'))
    result = dynbpf("features", str(build("features_app")), "--feature-map", str(wrong))
    assert result.exit_code == 2
    assert "tp_getppid2" in result.output
