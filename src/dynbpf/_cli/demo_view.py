"""What ``dynbpf demo`` shows: a live status view while it runs, and its summary at the end.

On a terminal the view is redrawn in place (rich's ``Live``), with the
demo's messages printed above it; piped or in a file it is plain lines,
a status every few seconds, so a log of the run reads in order. Both fit
in 80 columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import IO, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

#: seconds between two status lines when the view is not a terminal
PLAIN_EVERY = 3.0
KINDS = ("exec", "exit", "open", "connect")
#: a hook's decisions that passed a variant over for the next (docs/features.md, "Choosing a variant")
_PASSED_OVER = frozenset({"skipped", "rejected", "attach-failed"})


@dataclass(frozen=True, slots=True)
class Frame:
    """One refresh: ``who`` answers (the agent, or why none does), the application's ``status`` if it did."""

    elapsed: float
    phase: str
    who: str
    counts: dict[str, int]
    rates: dict[str, float]
    status: dict[str, Any] | None


class View:
    def __init__(self, *, stream: IO[str], duration: float) -> None:
        self.console = Console(file=stream, highlight=False)
        self.stream = stream
        self.duration = duration
        self.live: Live | None = None
        self.last_plain = 0.0

    def __enter__(self) -> View:
        if self.console.is_terminal:
            self.live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False)
            self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def say(self, text: str) -> None:
        """A message, in order with the status (above the live view on a terminal)."""
        if self.live is not None:
            self.live.console.print(escape(text), soft_wrap=True)
        else:
            click.echo(text, file=self.stream)

    def agent_ready(self, number: int, pid: int, seconds: float, status: dict[str, Any]) -> None:
        adopted = (status.get("adoption") or {}).get("programs", [])
        verified = ", ".join(
            f"{name} {p['verification_ms']:.1f} ms"
            for name, p in status["programs"].items()
            if p.get("verification_ms") is not None and name not in adopted
        )
        opened, applied = status["open_seconds"] * 1000, status["apply_seconds"] * 1000
        self.say(
            f"agent {number} (pid {pid}) answers after {seconds:.2f} s: opened in {opened:.1f} ms,"
            f" features applied in {applied:.1f} ms (verified: {verified or 'nothing'}"
            + (f"; adopted: {', '.join(adopted)}" if adopted else "")
            + ")"
        )
        for hook, state in status["hooks"].items():  # a variant passed over is the kernel speaking: say why
            passed = [d for d in state.get("decisions", []) if d["outcome"] in _PASSED_OVER]
            if state["variant"] is not None and passed:
                why = "; ".join(f"{d['variant']} {d['outcome']}: {d['reason']}" for d in passed)
                self.say(f"  {hook} runs {state['variant']} ({why})")

    def switched(self, record: dict[str, Any]) -> None:
        programs = ", ".join(
            f"{name} {'kept id ' + str(p['id']) if p['before'] == p['id'] else 'loaded as id ' + str(p['id'])}"
            for name, p in record["programs"].items()
        )
        self.say(
            f"  {record['feature']}: {record['from']} -> {record['to']} in {record['seconds'] * 1000:.1f} ms"
            f" ({programs or 'no program'})"
        )

    def restarted(self, restart: dict[str, Any]) -> None:
        before, after = restart["programs_before"], restart["programs_after"]
        if restart["adopted"]:
            how = f"adopted {len(restart['adopted'])} of {len(before)} programs (same kernel ids)"
        else:
            how = "adopted no program: it loaded its own"
        moved = ", ".join(f"{p} {before[p]}->{after[p]}" for p in before if p in after and after[p] != before[p])
        self.say(
            f"restart took {restart['seconds']:.2f} s; the new agent {how}"
            + (f" ({moved})" if moved else "")
            + f"; {restart['counted_with_no_agent']} events counted while no agent ran"
        )

    def show(self, frame: Frame) -> None:
        if self.live is not None:
            self.live.update(_panel(frame, self.duration))
            return
        now = time.monotonic()
        if now - self.last_plain < PLAIN_EVERY:
            return
        self.last_plain = now
        for line in _plain(frame):
            click.echo(line, file=self.stream)


def _programs_by_state(status: dict[str, Any]) -> str:
    states: dict[str, int] = {}
    for p in status["programs"].values():
        states[p["state"]] = states.get(p["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(states.items()))


def _rate_line(counts: dict[str, int], rates: dict[str, float]) -> str:
    total = sum(rates.values())
    each = " ".join(f"{k} {rates[k]:.0f}" for k in KINDS)
    return f"{total:.0f} events/s ({each}); {sum(counts.values())} counted"


def _plain(frame: Frame) -> list[str]:
    status = frame.status
    lines = [f"[{frame.elapsed:5.1f} s] {frame.phase} ({frame.who})"]
    if status is not None:
        features = ", ".join(f"{f} {s['state']}" for f, s in status["features"].items())
        lines.append(f"          features: {features}")
        lines.append(f"          programs: {_programs_by_state(status)}")
    lines.append(f"          {_rate_line(frame.counts, frame.rates)}")
    return lines


def _panel(frame: Frame, duration: float) -> Group:
    status, counts, rates = frame.status, frame.counts, frame.rates
    head = Text.assemble(
        ("dynbpf demo ", "bold"),
        f"{frame.elapsed:5.1f} s of ~{duration + 6:.0f}  {frame.who}\n",
        (frame.phase, "cyan"),
    )
    parts: list[Any] = [head]
    if status is not None:
        features = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
        for column in ("FEATURE", "STATE", "HOOKS"):
            features.add_column(column)
        for name, f in status["features"].items():
            features.add_row(name, f["state"], ", ".join(f["hooks"]))
        programs = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
        for column in ("PROGRAM", "STATE", "ID", "VERIFIED", "RUNS"):
            programs.add_column(column)
        for name, p in status["programs"].items():
            verified = p.get("verification_ms")
            programs.add_row(
                name,
                p["state"],
                str(p.get("id", "-")),
                "-" if verified is None else f"{verified:.1f} ms",
                str(p.get("run_cnt", "-")),
            )
        parts += [
            Text(""),
            features,
            Text(""),
            programs,
            Text(
                f"programs: {_programs_by_state(status)}; opened in {status['open_seconds'] * 1000:.1f} ms, "
                f"last apply {status['apply_seconds'] * 1000:.1f} ms"
            ),
        ]
    events = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
    events.add_column("EVENTS")
    for k in (*KINDS, "all"):
        events.add_column(k.upper(), justify="right")
    events.add_row("per second", *(f"{rates[k]:.0f}" for k in KINDS), f"{sum(rates.values()):.0f}")
    events.add_row("counted", *(str(counts[k]) for k in KINDS), str(sum(counts.values())))
    parts += [Text(""), events]
    return Group(*parts)


# --- the summary ---------------------------------------------------------------------------------------


def print_summary(s: dict[str, Any]) -> None:
    """The summary as text: what ``-j`` prints as JSON, in sentences."""
    out = click.echo
    how = "completed" if s["completed"] else f"stopped early ({s['interrupted'] or 'failed'})"
    out(f"\nsummary: {how} after {s['seconds']:.1f} s")
    ev = s["events"]
    out(
        f"  events counted: {sum(ev['before_restart'].values())} before the restart, "
        f"{sum(ev['during_restart'].values())} during it, {sum(ev['after_restart'].values())} after; "
        f"{sum(ev['total'].values())} in all ({', '.join(f'{k} {n}' for k, n in ev['total'].items())})"
    )
    if s["load"]:
        load = s["load"]
        out(f"  load (pid {load['pid']}): {load['exec']} execs, {load['open']} opens, {load['connect']} connects")
    for sw in s["switches"]:
        effect = "took effect" if sw["took_effect"] else "DID NOT take effect"
        out(
            f"  switch: {sw['feature']} {sw['from']} -> {sw['to']} in {sw['seconds'] * 1000:.1f} ms, {effect} "
            f"({sw['kind']} events: {sw['counted_before']} before, {sw['counted_after']} after)"
        )
    r = s["restart"]
    if r:
        out(
            f"  restart: {r['seconds']:.2f} s from SIGTERM to the new agent's answer, "
            f"{r['no_agent_seconds']:.2f} s of it with no agent; meanwhile the pins held "
            f"{r['pins_while_stopped']['prog']} programs, {r['pins_while_stopped']['link']} links, "
            f"{r['pins_while_stopped']['map']} maps and {r['counted_with_no_agent']} events were counted"
        )
        adopted = ", ".join(r["adopted"]) or "none"
        out(
            f"  programs adopted by the new agent (the same kernel ids): {adopted} (of {len(r['programs_before'])});"
            f" loaded anew: {', '.join(r['loaded_anew']) or 'none'}"
        )
        if r["reported"] is not None:
            rep = r["reported"]
            not_adopted = "; ".join(f"{p}: {why}" for p, why in rep["not_adopted"].items())
            out(
                f"  the agent reports adopting programs {', '.join(rep['programs']) or 'none'}, maps "
                f"{', '.join(rep['maps']) or 'none'}"
                + (f"; not adopted: {not_adopted}" if not_adopted else "")
                + (f"; refused: {rep['refused']}" if rep["refused"] else "")
            )
        out(f"  counters: {'the same pinned map went on counting' if r['counts_map_kept'] else 'a NEW map'}")
    if s["longest_pause_seconds"] is not None:
        out(f"  longest stretch without a counted exec while the load ran: {s['longest_pause_seconds']:.2f} s")
    for i, a in enumerate(s["agents"], 1):
        if a["ready_seconds"] is not None:
            out(
                f"  agent {i} (pid {a['pid']}): answered after {a['ready_seconds']:.2f} s, opened in "
                f"{a['open_seconds'] * 1000:.1f} ms, applied in {a['apply_seconds'] * 1000:.1f} ms; "
                f"exit status {a['exit_status']}"
            )
    c = s["cleanup"]
    if c:
        left = ", ".join(f"{x['kind']} {x['id']}" for x in c["left"]) or "nothing"
        out(
            f"  cleanup: agents stopped: {'yes' if c['agents_stopped'] else 'NO'}; {c['pins_removed']} pins removed "
            f"with {c['pin_root']}; the kernel freed {c['freed']} programs, links and maps; left: {left}"
        )
    failed = [name for name, ok in s["checks"].items() if not ok]
    out("checks: " + ("all passed" if not failed else "FAILED: " + ", ".join(failed)))
