"""``dynbpf ctl`` run as a user runs it, against a real agent on the real kernel: ``disable``, ``set-constants``,
``maps``, ``links``, ``reload`` and ``reload-program``, each checked by what it changed in the kernel (links and
programs gone, a new constant seen in events and in ``.rodata``, a new program id and no event lost), by its
table (a pipe: 80 columns, no trailing blanks) and by the shape of its JSON; the mistakes a user makes (an
unknown application, feature, program or constant, a value its type cannot hold, a wrong command line) are
named, exit 1 (2 for the command line) and change nothing. And ``map_edits`` of the configuration reach the
kernel; a changed edit, at a reload, opens the application anew; a bad one is refused and the old one runs on.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import dynbpf
from dynbpf._sys import commands
from dynbpf._sys.commands import ObjKind
from dynbpf._sys.constants import MapType
from tests import kernel_state as ks
from tests.agent_run import ENV, Agent, app_config, command, start_agent
from tests.bpfbuild import build
from tests.helpers import assert_schema, numbered_getpgid, patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

#: a pipe's environment: no terminal width handed down, so the tables take a pipe's 80 columns
PIPE_ENV = {k: v for k, v in ENV.items() if k not in ("COLUMNS", "LINES")}

OPTIONAL_STR = (str, type(None))
MAP = {
    "name": str,
    "type": str,
    "key_size": int,
    "value_size": int,
    "max_entries": int,
    "exists": bool,
    "policy": OPTIONAL_STR,
    "pin": OPTIONAL_STR,
}
LINK = {"program": str, "id": int, "program_id": int, "kind": str, "description": str, "pinned": OPTIONAL_STR}
DECISION = {"hook": str, "variant": str, "outcome": str, "reason": str, "evidence": dict}
FEATURES_CHANGED = {"app": str, "features": {str: str}, "decisions": {str: [DECISION]}}
CONSTANTS_SET = {"app": str, "constants": {str: (int, str, bool)}, "reloaded": [str]}
RELOAD = {
    "time": float,
    "reason": str,
    "result": str,
    "started": [str],
    "changed": [str],
    "stopped": [str],
    "seconds": float,
}

#: cli_tool declares no features: a feature map of one, its getppid tracepoint (events carry the constants)
CLI_FEATURES = '[features.ppid]\nhooks = ["ppid"]\n\n[hooks.ppid]\nvariants = ["on_getppid"]\n'


def ctl(agent: Agent, *argv: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """``dynbpf ctl --socket S ARGS`` for each ARGS, as separate processes at once (as from a pipe)."""

    def one(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command("ctl", "--socket", agent.socket, *args),
            env=PIPE_ENV,
            capture_output=True,
            text=True,
            timeout=patience(30),
            check=False,
        )

    with ThreadPoolExecutor(len(argv)) as pool:
        return list(pool.map(one, argv))


def ok(agent: Agent, *args: str) -> str:
    (done,) = ctl(agent, args)
    assert done.returncode == 0, done.stderr
    assert not done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess[str], status: int, *says: str, one_line: bool = True) -> None:
    """Refused with exit ``status``, stderr saying each of ``says``: the agent's refusal on one line (unless an
    apply lists each hook's variants and why each failed), a wrong command line in click's usage lines."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert not done.stdout
    for text in says:
        assert text in done.stderr, done.stderr
    if status == 1:
        assert done.stderr.startswith("dynbpf: error: ")
        assert done.stderr.count("\n") == 1 or not one_line, done.stderr


def running(agent: Agent, app: str = "demo") -> tuple[dict[str, int], dict[str, int]]:
    """The app's loaded programs (name -> kernel id) and its links (kernel id -> program name), from the API."""
    progs = {p["name"]: p["id"] for p in agent.call("GET", f"/v1/apps/{app}/programs") if "id" in p}
    links = {link["id"]: link["program"] for link in agent.call("GET", f"/v1/apps/{app}/links")}
    return progs, links


def counters(agent: Agent) -> list[int]:
    """agent_app's counters: [0] getpgid events, [1] their weights, [2] getppid events."""
    return [e["value"] for e in agent.call("GET", "/v1/apps/demo/maps/counters")["entries"]]


def kernel_map(map_id: int) -> tuple[int, int]:
    """The kernel's own type and max_entries of map ``map_id`` (bpf_map_info), not the agent's word for them."""
    with commands.fd_by_id(ObjKind.MAP, map_id) as fd:
        info = commands.map_info(fd.raw)
    return int(info.type), int(info.max_entries)


def demo(*extra: str, **features: str) -> str:
    """agent_app as application ``demo``, with ``extra`` lines in its table."""
    return app_config("demo", build("agent_app"), features=features, extra=extra)


def unwatched(directory: Path, text: str) -> str:
    """``text`` under an [agent] table that watches no file: only ``dynbpf ctl reload`` reads it again."""
    return f'[agent]\nsocket = "{directory}/agent.sock"\nwatch_interval = 0\n\n' + text


def follow(agent: Agent, *args: str) -> tuple[threading.Thread, list[subprocess.CompletedProcess[str]]]:
    """``dynbpf ctl ARGS`` (an events follower) in a thread, once the agent counts it; its result lands in the list."""
    out: list[subprocess.CompletedProcess[str]] = []
    followers = agent.status()["agent"]["followers"]
    thread = threading.Thread(target=lambda: out.extend(ctl(agent, args)))
    thread.start()
    agent.wait_for(lambda: agent.status()["agent"]["followers"] == followers + 1)
    return thread, out


def events(thread: threading.Thread, out: list[subprocess.CompletedProcess[str]]) -> list[dict[str, Any]]:
    thread.join(patience(20))
    (done,) = out
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["record"] for line in done.stdout.splitlines()]


def table_lines(text: str) -> list[str]:
    """A table printed for a pipe: its lines, checked to fit 80 columns with no trailing blanks."""
    lines = text.splitlines()
    assert lines
    assert max(len(line) for line in lines) <= 80, text
    assert all(line == line.rstrip() for line in lines), text
    assert not any(c in text for c in "┃━│─┏…"), text  # plain text, nothing cut
    return lines


# --- disable -----------------------------------------------------------------------------------


def test_ctl_disable_unloads_a_features_programs_and_removes_their_links(tmp_path: Path) -> None:
    with start_agent(tmp_path, demo(seq="enabled", ppid="enabled")) as agent:
        progs, links = running(agent)
        assert set(progs) == {"tp_getpgid", "tp_getppid"}
        assert set(links) <= ks.kernel_link_ids()
        mistakes = ctl(
            agent,
            ("disable", "demo", "sq"),
            ("disable", "nope", "seq"),
            ("disable", "demo", "seq", "sq"),  # one apply for all: the known one is not disabled either
            ("disable", "demo"),
        )
        refused(mistakes[0], 1, "(404)", "application 'demo' has no feature 'sq'; did you mean 'seq'?")
        refused(mistakes[1], 1, "(404)", "the agent has no application 'nope' (applications: demo)")
        refused(mistakes[2], 1, "application 'demo' has no feature 'sq'")
        refused(mistakes[3], 2, "Missing argument 'FEATURES...'")
        assert running(agent) == (progs, links)
        assert set(links) <= ks.kernel_link_ids()

        assert ok(agent, "disable", "demo", "seq").endswith("demo: seq disabled\n")
        (pgid_link,) = (link for link, prog in links.items() if prog == "tp_getpgid")
        assert pgid_link not in ks.kernel_link_ids()  # detached in the kernel ...
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [progs["tp_getpgid"]]))  # ... and unloaded
        now, now_links = running(agent)
        assert now == {"tp_getppid": progs["tp_getppid"]}  # the other feature's program untouched
        assert set(now_links.values()) == {"tp_getppid"}
        assert {f: s["state"] for f, s in agent.status("demo")["features"].items()} == {
            "seq": "disabled",
            "ppid": "enabled",
        }
        numbered_getpgid(0)  # nothing counts it any more
        os.getppid()
        values = counters(agent)
        assert values[0] == 0
        assert values[2] >= 1

        answer = json.loads(ok(agent, "disable", "demo", "ppid", "-j"))
        assert_schema(answer, FEATURES_CHANGED)
        assert (answer["app"], answer["features"]) == ("demo", {"ppid": "disabled"})
        assert running(agent) == ({}, {})
        assert not set(links) & ks.kernel_link_ids()
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, progs.values()))


# --- set-constants -----------------------------------------------------------------------------


def test_ctl_set_constants_reads_json_else_a_string_and_the_program_runs_with_it(tmp_path: Path) -> None:
    """cli_tool's getppid events carry its constants ``label`` (char[8]) and ``bias`` (the event's ``arg``)."""
    (tmp_path / "cli.features.toml").write_text(CLI_FEATURES)
    extra = [
        'feature_map = "cli.features.toml"',
        f"constants = {{ target_tgid = {os.getpid()} }}",
        'events = { events = "struct event" }',
    ]
    config = app_config("cli", build("cli_tool"), features={"ppid": "enabled"}, extra=extra)
    with start_agent(tmp_path, config) as agent:

        def rodata() -> dict[str, Any]:
            (entry,) = agent.call("GET", "/v1/apps/cli/maps/.rodata")["entries"]
            return dict(entry["value"])

        (first,) = running(agent, "cli")[0].values()
        before = rodata()
        assert (before["label"], before["bias"], before["target_tgid"]) == ("none", 0, os.getpid())
        mistakes = ctl(
            agent,
            ("set-constants", "cli", "label=x", "bias=-1", "lable=x"),  # one change for all: none is set
            ("set-constants", "nope", "label=x"),
            ("set-constants", "cli", "target_tgid=abc"),  # not JSON: sent as the string, which a u32 is not
            ("set-constants", "cli", "label=42"),  # JSON first: the number 42, which a char[8] is not
            ("set-constants", "cli", "label"),
        )
        refused(mistakes[0], 1, "(404): object 'cli_tool' has no read-only global 'lable'; did you mean 'label'?")
        refused(mistakes[1], 1, "(404)", "the agent has no application 'nope' (applications: cli)")
        refused(mistakes[2], 1, "(400)", "target_tgid: expected an integer for unsigned int, got str 'abc'")
        refused(mistakes[3], 1, "(400)", "label: expected bytes or str for char[8], got int")
        refused(mistakes[4], 2, "'label' is not NAME=VALUE")
        assert running(agent, "cli")[0] == {"on_getppid": first}  # not reloaded
        assert rodata() == before
        assert agent.status("cli")["constants"] == {"target_tgid": os.getpid()}

        answer = json.loads(ok(agent, "-j", "set-constants", "cli", "label=hello", "bias=-5", "emit_events=true"))
        assert_schema(answer, CONSTANTS_SET)
        assert answer["constants"] == {"label": "hello", "bias": -5, "emit_events": True}  # a string, JSON, JSON
        assert answer["reloaded"] == ["on_getppid"]
        (second,) = running(agent, "cli")[0].values()
        assert second != first
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [first]))
        assert rodata() == before | {"label": "hello", "bias": -5}
        thread, out = follow(agent, "-j", "events", "cli", "-n", "1")
        os.getppid()
        (record,) = events(thread, out)
        assert (record["label"], record["arg"], record["pid"]) == ("hello", -5, os.getpid())  # what the kernel ran

        assert ok(agent, "set-constants", "cli", 'label="42"') == "cli: constants set; reloaded on_getppid\n"
        assert rodata()["label"] == "42"  # a JSON string: the text, not the number
        assert agent.status("cli")["constants"] == {
            "target_tgid": os.getpid(),
            "label": "42",
            "bias": -5,
            "emit_events": True,
        }


# --- maps and links ----------------------------------------------------------------------------


def test_ctl_maps_and_links_show_the_kernels_objects_as_tables_and_json(tmp_path: Path, pin_root: str) -> None:
    """A pinned map's path is the widest cell: the table folds it to stay within a pipe's 80 columns."""
    config = demo(f'pin_root = "{pin_root}"', 'map_policies = { counters = "pinned" }', seq="enabled", ppid="paused")
    with start_agent(tmp_path, config) as agent:
        progs, _ = running(agent)
        maps_text, links_text, maps_json, links_json, *mistakes = ctl(
            agent,
            ("maps", "demo"),
            ("links", "demo"),
            ("-j", "maps", "demo"),
            ("links", "demo", "-j"),
            ("maps", "nope"),
            ("links",),
        )
        for done in (maps_text, links_text, maps_json, links_json):
            assert done.returncode == 0, done.stderr
        refused(mistakes[0], 1, "(404)", "the agent has no application 'nope' (applications: demo)")
        refused(mistakes[1], 2, "Missing argument 'APP'")

        maps = json.loads(maps_json.stdout)
        assert_schema([m for m in maps if m["exists"]], [{**MAP, "id": int}])
        assert_schema([m for m in maps if not m["exists"]], [MAP])
        by_name = {m["name"]: m for m in maps}
        assert set(by_name) == {"events", "seen", "counters", "by_pid", ".rodata", ".bss"}
        for m in maps:
            if m["exists"]:
                assert kernel_map(m["id"]) == (MapType[m["type"].upper()], m["max_entries"])
        assert by_name["counters"]["policy"] == "pinned"
        pin = by_name["counters"]["pin"]
        assert pin == os.path.join(pin_root, "counters")
        with commands.obj_get(pin) as fd:
            assert commands.map_info(fd.raw).id == by_name["counters"]["id"]

        lines = table_lines(maps_text.stdout)
        assert lines[0] == "demo: maps"
        assert lines[1].split() == ["NAME", "TYPE", "MAX", "POLICY", "EXISTS", "ID", "PIN"]
        rows = {line.split()[0]: line.split() for line in lines[2:] if not line.startswith(" ")}
        assert set(rows) == set(by_name)  # every name whole, one row each
        for name, row in rows.items():
            m = by_name[name]
            shown = [m["type"], str(m["max_entries"]), m["policy"], str(m["exists"]), str(m.get("id", "-"))]
            assert row[1:6] == shown, row
            assert row[6:] == ["-"] or m["pin"] is not None, row
        folded = [line.strip() for line in lines[2:] if line.startswith(" ")]
        assert folded  # the pin path is wider than the room left: folded in its column, the rest stays
        assert rows["counters"][6] + "".join(folded) == pin

        links = json.loads(links_json.stdout)
        assert_schema(links, [LINK])
        (link,) = links  # ppid is paused: loaded, not attached
        assert (link["program"], link["program_id"], link["kind"]) == ("tp_getpgid", progs["tp_getpgid"], "tracepoint")
        assert link["description"] == "tracepoint syscalls/sys_enter_getpgid"
        assert link["id"] in ks.kernel_link_ids()
        title, header, row = table_lines(links_text.stdout)
        assert (title, header.split()) == ("demo: links", ["PROGRAM", "ID", "PROGRAM", "ID", "HOOK"])
        assert row.split() == ["tp_getpgid", str(link["id"]), str(link["program_id"]), *link["description"].split()]


# --- reload and reload-program ------------------------------------------------------------------


def test_ctl_reload_applies_the_changed_file_or_says_where_it_is_wrong(tmp_path: Path) -> None:
    with start_agent(tmp_path, unwatched(tmp_path, demo(seq="enabled", ppid="disabled"))) as agent:
        assert ok(agent, "reload") == "configuration unchanged\n"
        progs, links = running(agent)
        good = agent.config.read_text()
        agent.config.write_text(good.replace('ppid = "disabled"', 'ppid = "enabled"'))
        answer = json.loads(ok(agent, "reload", "-j"))
        assert_schema(answer, RELOAD)
        assert (answer["reason"], answer["result"], answer["changed"]) == ("API", "applied", ["demo"])
        assert (answer["started"], answer["stopped"]) == ([], [])
        now, now_links = running(agent)
        assert now["tp_getpgid"] == progs["tp_getpgid"]  # changed in place: the unchanged feature not touched
        assert ks.alive(ObjKind.PROG, [now["tp_getppid"]]) == {now["tp_getppid"]}
        assert set(now_links) > set(links)
        assert set(now_links) <= ks.kernel_link_ids()

        agent.config.write_text(good.replace('ppid = "disabled"', 'ppid = "enabled"\nbogus = "enabled"'))
        bad, extra_argument = ctl(agent, ("reload",), ("reload", "demo"))
        refused(bad, 1, f"(400): {agent.config}:11: apps.demo.features.bogus: agent_app has no feature 'bogus'")
        refused(extra_argument, 2, "unexpected extra argument (demo)")  # reload takes no APP: reload-program does
        assert running(agent) == (now, now_links)
        last = agent.status()["agent"]["last_reload"]
        assert (last["result"], last["reason"]) == ("refused", "API")


def test_ctl_reload_program_loads_it_anew_and_no_event_is_lost(tmp_path: Path) -> None:
    config = demo('events = { events = "struct event" }', seq="enabled", ppid="disabled")
    with start_agent(tmp_path, config) as agent:
        progs, links = running(agent)
        old = progs["tp_getpgid"]
        thread, out = follow(agent, "-j", "events", "demo", "-n", "4")
        numbered_getpgid(0)
        numbered_getpgid(1)
        said = ok(agent, "reload-program", "demo", "tp_getpgid")
        numbered_getpgid(2)
        numbered_getpgid(3)
        assert [record["seq"] for record in events(thread, out)] == [0, 1, 2, 3]
        now, now_links = running(agent)
        new = now["tp_getpgid"]
        assert said == f"demo/tp_getpgid: program id {old} -> {new}\n"
        assert new != old
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, [old]))
        assert ks.alive(ObjKind.PROG, [new]) == {new}
        assert list(now_links.values()) == ["tp_getpgid"]
        assert set(now_links) <= ks.kernel_link_ids()
        assert not set(links) & ks.kernel_link_ids()  # a tracepoint's link is made anew, the old one goes
        assert counters(agent)[0] == 4

        mistakes = ctl(
            agent,
            ("reload-program", "demo", "tp_getpgdi"),
            ("reload-program", "nope", "tp_getpgid"),
            ("reload-program", "demo", "tp_getppid"),  # its feature is disabled: nothing loaded to reload
            ("reload-program", "demo"),
        )
        refused(mistakes[0], 1, "(404)", "application 'demo' has no program 'tp_getpgdi'; did you mean 'tp_getpgid'?")
        refused(mistakes[1], 1, "(404)", "the agent has no application 'nope' (applications: demo)")
        refused(mistakes[2], 1, "(409)", "tp_getppid")
        refused(mistakes[3], 2, "Missing argument 'PROGRAM'")
        assert running(agent) == (now, now_links)


# --- map_edits ---------------------------------------------------------------------------------


def test_a_configured_map_edit_reaches_the_kernel_and_a_changed_one_opens_the_application_anew(
    tmp_path: Path,
) -> None:
    obj = build("agent_app")
    assert dynbpf.read(obj).maps["by_pid"].max_entries == 1024  # what the object says; the edit says more

    def config(edit: str) -> str:
        return unwatched(tmp_path, demo(seq="enabled") + f"[apps.demo.map_edits.by_pid]\n{edit}\n")

    def by_pid() -> dict[str, Any]:
        (m,) = (m for m in json.loads(ok(agent, "-j", "maps", "demo")) if m["name"] == "by_pid")
        return dict(m)

    with start_agent(tmp_path, config("max_entries = 4096")) as agent:
        first = by_pid()
        assert (first["type"], first["max_entries"]) == ("hash", 4096)
        assert kernel_map(first["id"]) == (MapType.HASH, 4096)
        progs, _ = running(agent)
        numbered_getpgid(0)
        assert agent.call("GET", "/v1/apps/demo/maps/by_pid")["entries"] == [{"key": os.getpid(), "value": 1}]

        agent.config.write_text(config('max_entries = 2048\ntype = "lru_hash"'))
        assert ok(agent, "reload") == "configuration applied (started: demo)\n"  # opened anew, not changed in place
        second = by_pid()
        assert second["id"] != first["id"]
        assert (second["type"], second["max_entries"]) == ("lru_hash", 2048)
        assert kernel_map(second["id"]) == (MapType.LRU_HASH, 2048)
        assert ks.eventually(lambda: not ks.alive(ObjKind.MAP, [first["id"]]))
        assert ks.eventually(lambda: not ks.alive(ObjKind.PROG, progs.values()))
        now, now_links = running(agent)
        assert set(now) == {"tp_getpgid"}
        numbered_getpgid(1)  # the new programs count, in the new map
        assert agent.call("GET", "/v1/apps/demo/maps/by_pid")["entries"] == [{"key": os.getpid(), "value": 1}]

        agent.config.write_text(config("max_entires = 1"))
        (typo,) = ctl(agent, ("reload",))
        refused(typo, 1, "(400)", "apps.demo.map_edits.by_pid.max_entires: unknown key (did you mean 'max_entries'?)")
        assert f"{agent.config}:12: " in typo.stderr
        agent.config.write_text(config("max_entries = 0"))  # a hash map of no entries: the kernel refuses it
        (empty,) = ctl(agent, ("reload",))
        says = ("(409)", "application 'demo'", "BPF_MAP_CREATE failed: EINVAL", "map 'by_pid'")
        refused(empty, 1, *says, one_line=False)  # with each hook's variants and why each failed
        assert by_pid() == second  # the old one runs on, as it was
        assert running(agent) == (now, now_links)
        assert agent.status()["agent"]["reloads"] == {"applied": 1, "unchanged": 0, "refused": 2}
