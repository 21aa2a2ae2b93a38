"""``dynbpf inspect`` on the fixtures: what it reports, as JSON, tables and disassembly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynbpf._cli.main import cli
from tests.bpfbuild import build

DYNBPF = str(Path(sys.executable).parent / "dynbpf")

pytestmark = [pytest.mark.needs_clang]


def inspect_json(name: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["inspect", "--json", str(build(name))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_j_is_json_too_and_a_disassembly_comes_as_lines() -> None:
    obj = str(build("tailcalls"))
    assert json.loads(CliRunner().invoke(cli, ["inspect", "-j", obj]).output) == inspect_json("tailcalls")
    text = CliRunner().invoke(cli, ["inspect", obj, "--disasm", "xdp_dispatch"], catch_exceptions=False).output
    lines = CliRunner().invoke(cli, ["inspect", obj, "--disasm", "xdp_dispatch", "-j"], catch_exceptions=False).output
    assert json.loads(lines) == {"program": "xdp_dispatch", "lines": text.rstrip("\n").splitlines()}


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_tail_call_programs_and_their_prog_array() -> None:
    info = inspect_json("tailcalls")
    progs = by_name(info["programs"])
    assert set(progs) == {"xdp_stage_parse", "xdp_stage_count", "xdp_stage_drop", "xdp_dispatch", "socket_dispatch"}
    parse = progs["xdp_stage_parse"]
    assert parse["subprograms"] == ["jump"]
    assert "xdp_stages" in parse["maps"]  # used only through the subprogram
    assert parse["instructions_with_subprograms"] > parse["instructions"]
    stages = by_name(info["maps"])["xdp_stages"]
    assert stages["type"] == "prog_array"
    assert [(c["slot"], c["target"]) for c in stages["initial_contents"]] == [
        (0, "xdp_stage_parse"),
        (1, "xdp_stage_count"),
        (3, "xdp_stage_drop"),
    ]
    assert set(stages["used_by"]) == {"xdp_stage_parse", "xdp_dispatch"}


def test_maps_of_maps_and_btf_types() -> None:
    maps = by_name(inspect_json("maps")["maps"])
    outer = maps["outer_by_slot"]
    assert outer["type"] == "array_of_maps"
    assert [(c["slot"], c["target"]) for c in outer["initial_contents"]] == [(0, "inner_a"), (2, "inner_b")]
    assert outer["inner"]["type"] in ("array", "hash")
    assert maps["pinned_totals"]["pinning"] == "by_name"
    assert maps["seen_pids"]["type"] == "bloom_filter"
    assert maps["sparse_events"]["flags"] == ["no_prealloc"]
    assert maps["exec_count"]["key"]["type"] is not None
    assert maps["last_event"]["key"]["type"] is None  # declared by size only


def test_struct_ops_slots_globals_and_externs() -> None:
    info = inspect_json("struct_ops")
    reno = by_name(info["maps"])["dynbpf_reno"]
    assert reno["type"] == "struct_ops"
    assert reno["value"]["type"] == "struct tcp_congestion_ops"
    assert set(reno["struct_ops_slots"].values()) == {"dyn_init", "dyn_ssthresh", "dyn_cong_avoid", "dyn_undo_cwnd"}
    assert "dyn_link_init" in by_name(info["maps"])["dynbpf_reno_link"]["struct_ops_slots"].values()
    externs = by_name(inspect_json("externs")["externs"])
    assert {e["kind"] for e in externs.values()} == {"kconfig", "ksym", "kfunc"}
    variables = inspect_json("globals")["variables"]
    assert {v["section"] for v in variables} >= {".data", ".rodata", ".bss", ".data.custom", ".rodata.tables"}


def test_core_relocations_are_counted() -> None:
    progs = by_name(inspect_json("core")["programs"])
    assert progs["core_fork"]["core_relocations"] > 0
    assert progs["core_putname"]["target"] is not None


def test_tables_name_everything() -> None:
    runner = CliRunner(env={"COLUMNS": "220"})
    result = runner.invoke(cli, ["inspect", str(build("subprogs"))], catch_exceptions=False)
    assert result.exit_code == 0
    names = ("openat_count", "openat_score", "openat_loop", "xdp_bucket", "xdp_walk", "buckets", "Global variables")
    for name in names:
        assert name in result.output


def test_disassembly_annotates_maps_helpers_and_source() -> None:
    result = CliRunner().invoke(
        cli, ["inspect", str(build("tailcalls")), "--disasm", "xdp_dispatch"], catch_exceptions=False
    )
    assert result.exit_code == 0
    out = result.output
    assert "r2 = 0 ll\t; map xdp_stages" in out
    assert "call 12\t; tail_call" in out
    assert "; tailcalls.bpf.c:" in out
    assert out.rstrip().endswith("exit")


def test_disassembly_follows_subprograms() -> None:
    out = (
        CliRunner()
        .invoke(cli, ["inspect", str(build("tailcalls")), "--disasm", "xdp_stage_parse"], catch_exceptions=False)
        .output
    )
    assert "xdp_stage_parse (xdp+" in out
    assert "jump (.text+0x0):" in out


def test_errors_are_one_line_and_exit_nonzero(tmp_path: Path) -> None:
    obj = str(build("arith"))
    proc = subprocess.run([DYNBPF, "inspect", obj, "--disasm", "nope"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "no program 'nope'" in proc.stderr
    assert "xdp_len_mod" in proc.stderr
    bad = tmp_path / "bad.o"
    bad.write_bytes(build("arith").read_bytes()[:200])
    proc = subprocess.run([DYNBPF, "inspect", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("dynbpf: error:")
    assert "Traceback" not in proc.stderr


def test_what_the_object_says_is_escaped_before_it_reaches_the_terminal() -> None:
    """A Latin-1 byte in a source line stopped a strict UTF-8 terminal; an escape sequence drove the terminal."""
    from tests.bpfbuild import CFLAGS, compile_source

    source = (
        b'#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nchar LICENSE[] SEC("license") = "GPL";\n'
        b'SEC("xdp") int odd(void *ctx) { return 2; /* \x1b[31mred\x1b[0m caf\xe9 */ }\n'
    )
    flags = [f for f in CFLAGS if f != "-Werror"]  # the comment's byte is not UTF-8: clang may warn
    obj = compile_source(source, "odd", flags=flags)
    env = {"PYTHONIOENCODING": "utf-8:strict", "PATH": "/usr/bin:/bin"}
    for args in (["--disasm", "odd"], []):
        run = subprocess.run(
            [sys.executable, "-c", "from dynbpf._cli.main import main; main()", "inspect", *args, str(obj)],
            capture_output=True,
            env=env,
            check=False,
        )
        assert run.returncode == 0, run.stderr.decode(errors="replace")
        assert b"\x1b[31m" not in run.stdout  # the object's escape sequence is shown, not sent
        if args:
            assert b"\\x1b[31mred\\x1b[0m caf\\xe9" in run.stdout


def test_the_readmes_disassembly_is_what_inspect_prints() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("$ ./run.sh inspect tailcalls.bpf.o --disasm xdp_dispatch\n")
    shown = readme[start:].split("\n", 1)[1].split("```", 1)[0]
    result = CliRunner().invoke(cli, ["inspect", str(build("tailcalls")), "--disasm", "xdp_dispatch"])
    assert result.output.rstrip("\n") == shown.rstrip("\n")
