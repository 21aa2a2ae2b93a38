"""Capability probes: evidence on every answer, caching, and bpftool as the oracle."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynbpf import KernelUnsupported
from dynbpf import _probes as features
from dynbpf._cli.main import cli
from dynbpf._probes.result import Support
from dynbpf._sys.constants import ProgType
from tests.helpers import at_once

pytestmark = pytest.mark.kernel

#: bpftool skips these outside `full` mode because they write to the kernel log
BPFTOOL_SKIPPED_HELPERS = {"bpf_trace_printk", "bpf_trace_vprintk", "bpf_probe_write_user"}
#: the message newer kernels use to refuse a helper for a program type; Debian's libbpf 1.1
#: (inside bpftool 7.1) only knows "invalid func" / "unknown func", so it counts these as available
NEW_REFUSAL = "program of this type cannot use helper"
#: program types libbpf cannot probe helpers for (they need an attach target: its helper probe answers
#: EOPNOTSUPP), so bpftool lists none for them even where the kernel loads them (fentry on 6.1+)
BPFTOOL_UNPROBED_TYPES = {"tracing", "ext", "lsm", "struct_ops"}


@cache
def ours() -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["probe", "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


@cache
def bpftool() -> dict[str, Any]:
    out = subprocess.run(["bpftool", "feature", "probe", "kernel", "-j"], check=True, capture_output=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


@cache
def bpftool_helper_names() -> set[str]:
    """Helpers bpftool 7.1 knows: the uapi header it was built from (same source as linux-libc-dev)."""
    header = Path("/usr/include/linux/bpf.h").read_text()
    names = {f"bpf_{n}" for n in re.findall(r"^\s*FN\((\w+)", header, re.MULTILINE)}
    return names - {"bpf_unspec"}


def test_every_answer_carries_evidence() -> None:
    data = ours()
    for section in ("program_types", "map_types", "btf", "kernel_features", "attach"):
        assert data[section], section
        for name, entry in data[section].items():
            assert isinstance(entry["supported"], bool)
            assert len(entry["how"]) > 10, f"{section}.{name} has no evidence"
    assert data["kernel"]["release"]
    assert sum(len(h) for h in data["helpers"].values()) > 1000


@pytest.mark.needs_bpftool
def test_program_types_agree_with_bpftool() -> None:
    mine, theirs = ours()["program_types"], bpftool()["program_types"]
    compared = 0
    for key, value in theirs.items():
        name = key.removeprefix("have_").removesuffix("_prog_type")
        entry = mine[name]
        compared += 1
        if name == "tracing" and value is False and entry["supported"]:
            # documented difference (docs/probes.md): libbpf asks only "does fentry load?"
            assert "fentry" in entry["how"], entry["how"]
            assert "-> ok" in entry["how"], entry["how"]
            continue
        assert entry["supported"] == value, f"{name}: ours {entry}, bpftool {value}"
    assert compared >= 30


@pytest.mark.needs_bpftool
def test_map_types_agree_with_bpftool() -> None:
    mine, theirs = ours()["map_types"], bpftool()["map_types"]
    for key, value in theirs.items():
        name = key.removeprefix("have_").removesuffix("_map_type")
        assert mine[name]["supported"] == value, f"{name}: ours {mine[name]}, bpftool {value}"
    assert len(theirs) >= 30


@pytest.mark.needs_bpftool
def test_helpers_agree_with_bpftool() -> None:
    mine, theirs = ours()["helpers"], bpftool()["helpers"]
    known = bpftool_helper_names() - BPFTOOL_SKIPPED_HELPERS
    types = {
        key.removesuffix("_available_helpers"): set(names)
        for key, names in theirs.items()
        if bpftool()["program_types"].get(f"have_{key.removesuffix('_available_helpers')}_prog_type")
    }
    pairs = newly_refused = 0
    for pt, available in types.items():
        if pt in BPFTOOL_UNPROBED_TYPES and not available:
            continue  # bpftool's silence, not the kernel's answer
        if pt not in mine:
            assert pt in ("struct_ops",), f"no helper probes for {pt}"
            continue
        for name in known:
            entry = mine[pt][name]
            pairs += 1
            if name in available and not entry["supported"]:
                assert NEW_REFUSAL in entry["how"], f"{pt}/{name}: ours {entry}, bpftool: available"
                newly_refused += 1
            else:
                assert entry["supported"] == (name in available), f"{pt}/{name}: ours {entry}, bpftool disagrees"
    assert pairs > 5000
    assert newly_refused < pairs


def test_support_require_raises_with_evidence() -> None:
    with pytest.raises(KernelUnsupported) as exc:
        Support("frobnication", False, "BPF_FROB -> EINVAL").require()
    assert "frobnication" in str(exc.value)
    assert "BPF_FROB -> EINVAL" in str(exc.value)
    Support("x", True, "ok").require()


def test_probes_are_cached_and_thread_safe() -> None:
    features.clear_cache()
    results = at_once(lambda: features.prog_type(ProgType.XDP), threads=8)
    assert len(results) == 8
    assert all(r is results[0] for r in results)
    assert results[0].supported


def test_probe_command_prints_every_section() -> None:
    result = CliRunner().invoke(cli, ["probe", "--no-helpers"])
    assert result.exit_code == 0, result.output
    for title in ("Program types", "Map types", "BTF", "Verifier and runtime", "Attach kinds"):
        assert title in result.output
    for attach_kind in ("trampolines", "kprobe", "uprobe", "struct_ops_assoc"):
        assert attach_kind in result.output


def test_iterator_targets_are_probed_one_by_one() -> None:
    """Iterators in general and each target are separate answers; a missing target says so."""
    from dynbpf._probes import attach

    task = attach.iterator_target("task")
    assert task.supported == attach.iterators().supported, (task, attach.iterators())
    assert "bpf_iter_task" in task.how
    missing = attach.iterator_target("no_such_target")
    assert not missing.supported
    assert missing.how == "no bpf_iter_no_such_target in kernel BTF"
    assert attach.iterator_target("task") is task  # cached per target
    elem = attach.iterator_target("bpf_map_elem")
    # what the kernel says for this target is what a real program gets (tests/test_kernel_attach.py)
    assert elem.how.endswith("-> ok") == elem.supported


def test_probe_says_when_it_is_not_privileged(monkeypatch: pytest.MonkeyPatch) -> None:
    """As non-root every row read "no" with nothing saying why (issue 13 item 12)."""
    import json

    from click.testing import CliRunner

    from dynbpf._cli.main import cli

    monkeypatch.setattr("dynbpf._cli.main.os.geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["probe", "-j", "--no-helpers"], catch_exceptions=False)
    assert "not running as root (uid 1000)" in result.stderr
    assert json.loads(result.stdout)["privileged"] is False
