"""Metrics scraped from the agent (its socket and its localhost port) and parsed with prometheus_client."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_run import Agent, app_config, start_agent
from tests.bpfbuild import build
from tests.helpers import numbered_getpgid, patience

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels (sorted), as Prometheus would read them."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics[name, tuple(sorted(labels.items()))]


def scrape(agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(agent.call("GET", "/metrics"))


def test_metrics_count_runs_events_states_and_entries(tmp_path: Path) -> None:
    port = free_port()
    config = f'[agent]\nsocket = "{tmp_path}/agent.sock"\nmetrics_port = {port}\n\n'
    config += app_config(
        "demo",
        build("agent_app"),
        features={"seq": "enabled", "ppid": "paused"},
        extra=['events = { events = "struct event" }'],
    )
    with start_agent(tmp_path, config) as agent:
        before = scrape(agent)
        assert value(before, "dynbpf_stats_enabled") == 1
        for seq in range(7):
            numbered_getpgid(seq)
        agent.wait_for(lambda: value(scrape(agent), "dynbpf_events_read_total", app="demo", map="events") == 7)
        m = scrape(agent)
        runs = value(m, "dynbpf_program_runs_total", app="demo", program="tp_getpgid")
        assert runs - value(before, "dynbpf_program_runs_total", app="demo", program="tp_getpgid") >= 7
        assert value(m, "dynbpf_program_run_time_seconds_total", app="demo", program="tp_getpgid") > 0
        assert 0 < value(m, "dynbpf_program_verification_seconds", app="demo", program="tp_getpgid") < 10
        assert value(m, "dynbpf_program_state", app="demo", program="tp_getpgid", state="attached") == 1
        assert value(m, "dynbpf_program_state", app="demo", program="tp_getppid", state="loaded") == 1
        assert value(m, "dynbpf_feature_state", app="demo", feature="ppid", state="paused") == 1
        assert value(m, "dynbpf_feature_state", app="demo", feature="ppid", state="enabled") == 0
        assert value(m, "dynbpf_hook_state", app="demo", hook="getpgid", state="enabled") == 1
        assert value(m, "dynbpf_map_entries", app="demo", map="by_pid") >= 1
        assert value(m, "dynbpf_events_lost_total", app="demo", map="events") == 0
        assert value(m, "dynbpf_app_open_seconds", app="demo") > 0
        assert value(m, "dynbpf_app_apply_seconds", app="demo") > 0
        agent.call("POST", "/v1/apps/demo/features/seq", {"state": "disabled"})
        m = scrape(agent)
        assert value(m, "dynbpf_hook_state", app="demo", hook="getpgid", state="off") == 1
        assert value(m, "dynbpf_program_state", app="demo", program="tp_getpgid", state="not loaded") == 1
        assert ("dynbpf_program_runs_total", (("app", "demo"), ("program", "tp_getpgid"))) not in m
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=patience(10)) as response:
            over_tcp = samples(response.read().decode())
        assert value(over_tcp, "dynbpf_hook_state", app="demo", hook="getpgid", state="off") == 1
        text = agent.ctl("metrics")
        assert text.returncode == 0
        assert value(samples(text.stdout), "dynbpf_events_read_total", app="demo", map="events") == 7
        as_json = agent.ctl("metrics", "-j")  # the same samples, each family with its type and help
        assert as_json.returncode == 0, as_json.stderr
        families = {f["name"]: f for f in json.loads(as_json.stdout)}
        read = families["dynbpf_events_read"]
        assert (read["type"], read["help"]) == ("counter", "Records read from an event map")
        assert {"name": "dynbpf_events_read_total", "labels": {"app": "demo", "map": "events"}, "value": 7.0} in read[
            "samples"
        ]
        assert os.path.exists(agent.socket)
