"""The agent's metrics, in Prometheus' text format (prometheus_client), read fresh at every scrape.

Nothing is kept between scrapes: each one reads the applications' status
(the kernel's ``run_cnt``/``run_time_ns`` per program, counted while the
agent holds ``BPF_ENABLE_STATS``), counts map entries and reads the event
counters. The names are listed in docs/agent.md, "Metrics".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dynbpf.errors import DynbpfError

if TYPE_CHECKING:
    from dynbpf._agent.apps import RunningApp
    from dynbpf._agent.events import Counts

FEATURE_STATES = ("enabled", "paused", "disabled")
HOOK_STATES = ("enabled", "paused", "detached", "failed", "off")
PROGRAM_STATES = ("attached", "loaded", "not loaded")


class AgentCollector(Collector):
    def __init__(
        self,
        apps: Callable[[], Mapping[str, RunningApp]],
        events: Callable[[], Mapping[tuple[str, str], Counts]],
        reloads: Callable[[], Mapping[str, int]],
    ) -> None:
        self._apps = apps
        self._events = events
        self._reloads = reloads

    def collect(self) -> Iterator[Metric]:
        app_l, prog_l = ["app"], ["app", "program"]
        runs = CounterMetricFamily("dynbpf_program_runs", "Runs of the program (kernel run_cnt)", labels=prog_l)
        run_time = CounterMetricFamily(
            "dynbpf_program_run_time_seconds", "Time spent in the program (kernel run_time_ns)", labels=prog_l
        )
        verify = GaugeMetricFamily(
            "dynbpf_program_verification_seconds", "Verification time of the program's last load", labels=prog_l
        )
        prog_state = GaugeMetricFamily("dynbpf_program_state", "1 for the program's state", labels=[*prog_l, "state"])
        feature_state = GaugeMetricFamily(
            "dynbpf_feature_state", "1 for the feature's effective state", labels=["app", "feature", "state"]
        )
        hook_state = GaugeMetricFamily("dynbpf_hook_state", "1 for the hook's state", labels=["app", "hook", "state"])
        open_s = GaugeMetricFamily(
            "dynbpf_app_open_seconds", "Time to open the object (read, prepare, eager maps)", labels=app_l
        )
        apply_s = GaugeMetricFamily("dynbpf_app_apply_seconds", "Duration of the last feature apply", labels=app_l)
        entries = GaugeMetricFamily("dynbpf_map_entries", "Entries in a hash-like map", labels=["app", "map"])
        stats = GaugeMetricFamily("dynbpf_stats_enabled", "1 while the kernel counts program runs (BPF_ENABLE_STATS)")
        stats_on = False
        for name, app in self._apps().items():
            try:
                status = app.status()
                counted = app.entry_counts()
            except DynbpfError:
                continue  # closed meanwhile (a reload replaced it)
            stats_on = stats_on or status["stats"]
            open_s.add_metric([name], app.open_seconds)
            apply_s.add_metric([name], app.apply_seconds)
            for feature, f in status["features"].items():
                for state in FEATURE_STATES:
                    feature_state.add_metric([name, feature, state], float(f["state"] == state))
            for hook, h in status["hooks"].items():
                for state in HOOK_STATES:
                    hook_state.add_metric([name, hook, state], float(h["state"] == state))
            for program, p in status["programs"].items():
                for state in PROGRAM_STATES:
                    prog_state.add_metric([name, program, state], float(p["state"] == state))
                if "run_cnt" in p:
                    runs.add_metric([name, program], p["run_cnt"])
                    run_time.add_metric([name, program], p["run_time_ns"] / 1e9)
                if p["verification_ms"] is not None:
                    verify.add_metric([name, program], p["verification_ms"] / 1000)
            for map_name, count in counted.items():
                entries.add_metric([name, map_name], count)
        stats.add_metric([], float(stats_on))
        read = CounterMetricFamily("dynbpf_events_read", "Records read from an event map", labels=["app", "map"])
        lost = CounterMetricFamily(
            "dynbpf_events_lost", "Records the kernel could not write (perf buffers)", labels=["app", "map"]
        )
        dropped = CounterMetricFamily(
            "dynbpf_events_dropped", "Records read but not delivered to a slow client", labels=["app", "map"]
        )
        for (app_name, map_name), counts in self._events().items():
            read.add_metric([app_name, map_name], counts.read)
            lost.add_metric([app_name, map_name], counts.lost)
            dropped.add_metric([app_name, map_name], counts.dropped)
        reloads = CounterMetricFamily("dynbpf_config_reloads", "Configuration reloads", labels=["result"])
        for result, count in self._reloads().items():
            reloads.add_metric([result], count)
        yield from (runs, run_time, verify, prog_state, feature_state, hook_state, open_s, apply_s, entries, stats)
        yield from (read, lost, dropped, reloads)


def registry(collector: AgentCollector) -> CollectorRegistry:
    """A registry of the agent's metrics only (not the process-wide default one)."""
    out = CollectorRegistry(auto_describe=False)
    out.register(collector)
    return out
