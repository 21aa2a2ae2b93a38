"""``dynbpf run``: a tool without writing Python: load, attach, stream decoded events, print histograms.

Runs until Ctrl-C, SIGTERM or ``--duration``; then detaches and unloads
every program and frees every map (nothing is pinned), prints what it saw
and exits 0. Events print as they arrive, one line each (``-j``: one JSON
document per line, the stream a program reads); histograms every
``--interval`` seconds and once more at the end.
"""

from __future__ import annotations

import datetime
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from dynbpf._cli.common import bad_input, failures, json_option, note, print_json_line, say
from dynbpf._cli.opening import feature_map_option, object_options

if TYPE_CHECKING:
    from dynbpf._cli.opening import Request
    from dynbpf._elf.spec import ObjectSpec
    from dynbpf._features.model import FeatureMap
    from dynbpf._maps.events import EventLoop
    from dynbpf._runtime.collection import Collection
    from dynbpf._tools.histogram import Histogram

#: the map types ``--events`` reads
EVENT_MAPS = ("ringbuf", "perf_event_array")


class Stopped(BaseException):
    """SIGTERM arrived: unwind, freeing everything on the way, then exit 0."""


@dataclass(frozen=True, slots=True)
class EventSource:
    map: str
    record: str | None  # the BTF type records decode as; None: printed as hex


@dataclass(slots=True)
class Seen:
    """What ``run`` saw, for the summary."""

    events: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    undecoded: dict[str, int] = field(default_factory=dict)


@click.command()
@object_options
@click.option(
    "--features",
    "features",
    multiple=True,
    metavar="F[,F...]",
    help="Enable these features of the object's feature map instead of loading programs one by one.",
)
@feature_map_option
@click.option(
    "--events",
    "events",
    multiple=True,
    metavar="MAP[=TYPE]",
    help="Print each record of a ring buffer or perf event array, decoded as BTF TYPE (e.g. events=event).",
)
@click.option("--hist", "hists", multiple=True, metavar="MAP", help="Print the histogram MAP holds every interval.")
@click.option("--hist-kind", type=click.Choice(["log2", "linear"]), default="log2", show_default=True)
@click.option("--hist-step", type=click.IntRange(min=1), default=1, show_default=True, help="Linear buckets' width.")
@click.option("--hist-unit", default="value", show_default=True, help="What the histograms count (their header).")
@click.option("--slot", metavar="FIELD", help="The key field holding the bucket index, for struct keys (default slot).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, metavar="S")
@click.option("--duration", type=click.FloatRange(min=0), metavar="S", help="Stop after S seconds (default: Ctrl-C).")
@json_option
def run(
    *,
    obj: str,
    programs: tuple[str, ...],
    consts: tuple[str, ...],
    edits: tuple[str, ...],
    workers: int | None,
    features: tuple[str, ...],
    feature_toml: str | None,
    events: tuple[str, ...],
    hists: tuple[str, ...],
    hist_kind: str,
    hist_step: int,
    hist_unit: str,
    slot: str | None,
    interval: float,
    duration: float | None,
    as_json: bool,
) -> None:
    """Load and attach OBJ's programs (or --features), stream --events, print --hist; Ctrl-C frees everything.

    Nothing is pinned: stopping (Ctrl-C, SIGTERM, --duration) detaches and
    unloads every program and frees every map, and the exit status is 0.
    """
    from dynbpf._cli import opening

    with failures():
        req = opening.request(obj, programs, consts, edits, workers)
        wanted = [f.strip() for item in features for f in item.split(",") if f.strip()]
        fmap = None
        if wanted or feature_toml is not None:
            if programs:
                raise bad_input("give programs (-p) or features (--features), not both", option="--features")
            if not wanted:
                raise bad_input("name the features to enable with --features", option="--feature-map")
            fmap = _feature_map(req, wanted, feature_toml)
        sources = _event_sources(req.spec, events)
        _check_histograms(req.spec, hists)
        runner = Runner(
            req,
            fmap,
            wanted,
            sources,
            hists,
            hist=dict(kind=hist_kind, step=hist_step, unit=hist_unit, slot=slot),
            interval=interval,
            duration=duration,
            as_json=as_json,
        )
        runner.run()


def _feature_map(req: Request, wanted: list[str], toml: str | None) -> FeatureMap:
    from dynbpf._cli import opening

    fmap = opening.feature_map(req.spec, req.path, toml)
    if fmap is None:
        raise bad_input(
            f"{req.path} declares no features (no dynbpf decl tags, no {req.spec.name}.features.toml beside it); "
            "give --feature-map TOML",
            option="--features",
        )
    fmap.check(req.spec.programs)
    for name in wanted:
        fmap.closure(name)  # an unknown feature: FeatureMapError naming the close ones
    return fmap


def _event_sources(spec: ObjectSpec, items: tuple[str, ...]) -> list[EventSource]:
    from dynbpf._maps.codec import record_type_id
    from dynbpf._maps.errors import CodecError
    from dynbpf._sys.constants import MapType, type_name
    from dynbpf.errors import NotFound

    out = []
    for item in items:
        name, _, record = item.partition("=")
        if name not in spec.maps:
            raise bad_input(str(NotFound(f"object {spec.name!r}", "map", name, spec.maps)), option=f"--events {item}")
        kind = type_name(MapType, spec.maps[name].type)
        if kind not in EVENT_MAPS:
            raise bad_input(f"map {name!r} is a {kind} map, not a ring buffer or perf event array", option="--events")
        if record:
            if spec.btf is None:
                raise bad_input(f"object {spec.name!r} has no BTF to decode {record!r} with", option="--events")
            try:
                record_type_id(spec.btf, record)
            except CodecError as e:
                raise bad_input(f"{item}: {e.args[0] if e.args else e}", option="--events") from None
        out.append(EventSource(name, record or None))
    return out


def _check_histograms(spec: ObjectSpec, names: tuple[str, ...]) -> None:
    from dynbpf._sys.constants import MapType, type_name
    from dynbpf.errors import NotFound

    for name in names:
        if name not in spec.maps:
            raise bad_input(str(NotFound(f"object {spec.name!r}", "map", name, spec.maps)), option=f"--hist {name}")
        kind = type_name(MapType, spec.maps[name].type)
        if kind in ("ringbuf", "perf_event_array", "queue", "stack", "bloom_filter", "user_ringbuf", "arena"):
            raise bad_input(f"map {name!r} is a {kind} map, which holds no histogram", option="--hist")


class Runner:
    """One ``dynbpf run``: what it was asked, and the loop that prints."""

    def __init__(
        self,
        req: Request,
        fmap: FeatureMap | None,
        features: list[str],
        sources: list[EventSource],
        hists: tuple[str, ...],
        *,
        hist: dict[str, Any],
        interval: float,
        duration: float | None,
        as_json: bool,
    ) -> None:
        self.req, self.fmap, self.features, self.sources, self.hists = req, fmap, features, sources, hists
        self.hist, self.interval, self.duration, self.as_json = hist, interval, duration, as_json
        self.seen = Seen()

    def run(self) -> None:
        started = time.monotonic()
        reason = "duration"
        with _sigterm_raises():
            try:
                with self.req.open() as coll:
                    self._run(coll)
            except Stopped:
                reason = "SIGTERM"
            except KeyboardInterrupt:
                reason = "SIGINT"
        self._stopped(reason, time.monotonic() - started)

    def _run(self, coll: Collection) -> None:
        from dynbpf._features.application import Application

        if self.fmap is None:
            self._watch(coll, self._load(coll), None)
            return
        with Application(coll, self.fmap, workers=self.req.workers) as app:
            decisions = app.apply(dict.fromkeys(self.features, "enabled"))
            names = [p for hook in app.status()["hooks"].values() if hook["variant"] for p in hook["programs"]]
            self._watch(coll, names, decisions)

    def _load(self, coll: Collection) -> list[str]:
        from dynbpf._cli import opening
        from dynbpf._cli.common import Failure

        names = list(self.req.programs)
        failed = opening.load(coll, names, workers=self.req.workers, progress=not self.as_json)
        if failed:
            raise Failure(opening.failure_report(failed))
        for name in names:
            coll.programs[name].attach()
        return names

    def _start(self, coll: Collection, names: list[str], decisions: dict[str, Any] | None) -> None:
        programs: list[dict[str, Any]] = []
        for name in names:
            program = coll.programs[name]
            links = [link.description for link in program.links]
            programs.append({"name": name, "id": program.id, "links": links})
        if self.as_json:
            started: dict[str, Any] = {"type": "started", "object": coll.spec.name, "programs": programs}
            if decisions is not None:
                started["features"] = self.features
                started["decisions"] = decisions
            print_json_line(started)
            return
        note(f"running {coll.spec.name} (Ctrl-C stops it, detaches and frees everything):")
        for p in programs:
            note(f"  {p['name']}: {'; '.join(p['links']) or 'not attached'}")
        for source in self.sources:
            if source.record is None:
                note(f"records of {source.map} print as hex: give their type, --events {source.map}=TYPE")

    # --- the loop ------------------------------------------------------------------------------------

    def _watch(self, coll: Collection, names: list[str], decisions: dict[str, Any] | None) -> None:
        """Open the readers, say it started (every record from now on is seen), loop until stopped."""
        from dynbpf._maps.events import EventLoop

        with EventLoop() as loop:
            for source in self.sources:
                loop.add(self._reader(coll, source))
            for name in self.hists:  # a map that holds no histogram is refused now, not at the first print
                try:
                    self._histograms(coll, name)
                except ValueError as e:
                    raise bad_input(str(e), option=f"--hist {name}") from None
            self._start(coll, names, decisions)
            try:
                self._loop(coll, loop if self.sources else None)
            finally:
                with _signals_held():
                    if self.sources:
                        loop.poll(timeout=0)  # what arrived before the stop still prints
                    self._print_histograms(coll)

    def _loop(self, coll: Collection, loop: EventLoop | None) -> None:
        now = time.monotonic()
        deadline = now + self.duration if self.duration is not None else None
        next_print = now + self.interval if self.hists else None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            waits = [0.5]
            if deadline is not None:
                waits.append(deadline - now)
            if next_print is not None:
                waits.append(next_print - now)
            wait = max(0.0, min(waits))
            if loop is not None:
                loop.poll(timeout=wait)
            else:
                time.sleep(wait)
            if next_print is not None and time.monotonic() >= next_print:
                if deadline is None or next_print < deadline:  # the last one prints at the end
                    self._print_histograms(coll)
                while next_print <= time.monotonic():
                    next_print += self.interval

    def _reader(self, coll: Collection, source: EventSource) -> Any:
        from dynbpf._sys.constants import MapType

        decode = self._decoder(coll, source)
        self.seen.events[source.map] = 0
        if coll.spec.maps[source.map].type == MapType.RINGBUF:
            return coll.ring_buffer(source.map, callback=lambda raw: self._event(source.map, None, raw, decode))
        self.seen.lost[source.map] = 0
        return coll.perf_buffer(
            source.map,
            callback=lambda cpu, raw: self._event(source.map, cpu, raw, decode),
            lost_callback=lambda cpu, count: self._lost(source.map, cpu, count),
        )

    def _decoder(self, coll: Collection, source: EventSource) -> Any:
        if source.record is None or coll.spec.btf is None:
            return None
        from dynbpf._maps.codec import record_decoder

        return record_decoder(coll.spec.btf, source.record)

    def _event(self, name: str, cpu: int | None, raw: bytes, decode: Any) -> None:
        from dynbpf._maps.errors import CodecError
        from dynbpf._tools.plain import flat, plain

        self.seen.events[name] += 1
        record: Any = "0x" + bytes(raw).hex()
        if decode is not None:
            try:
                record = plain(decode(raw))
            except CodecError:
                self.seen.undecoded[name] = self.seen.undecoded.get(name, 0) + 1  # too short: shown as hex
        if self.as_json:
            print_json_line({"type": "event", "map": name, "cpu": cpu, "record": record})
            return
        head = f"{name}" if cpu is None else f"{name} cpu {cpu}"
        fields = flat(record) if isinstance(record, dict) else [("", record)]
        say(f"{head}: " + " ".join(f"{k}={v}" if k else str(v) for k, v in fields))

    def _lost(self, name: str, cpu: int, count: int) -> None:
        self.seen.lost[name] += count
        if self.as_json:
            print_json_line({"type": "lost", "map": name, "cpu": cpu, "count": count})
        else:
            note(f"{name}: {count} records lost on cpu {cpu} (the ring was full)")

    def _print_histograms(self, coll: Collection) -> None:
        from dynbpf._cli.common import Failure, console

        stamp = datetime.datetime.now().astimezone()
        for name in self.hists:
            try:
                shown = self._histograms(coll, name)
            except ValueError as e:
                raise Failure(f"--hist {name}: {e}") from None
            if self.as_json:
                print_json_line(
                    {
                        "type": "histogram",
                        "map": name,
                        "time": stamp.isoformat(timespec="milliseconds"),
                        "histograms": [h.as_dict() for h in shown.values()],
                    }
                )
                continue
            width = console().width
            say(f"\n{stamp:%H:%M:%S} {name}")
            say("\n\n".join(h.render(width=width) for h in shown.values()))

    def _histograms(self, coll: Collection, name: str) -> dict[Any, Histogram]:
        from dynbpf._tools.histogram import Histogram

        return Histogram.sections_from_map(coll.maps[name], **self.hist)

    def _stopped(self, reason: str, seconds: float) -> None:
        if self.as_json:
            print_json_line(
                {
                    "type": "stopped",
                    "reason": reason,
                    "seconds": round(seconds, 3),
                    "events": self.seen.events,
                    "lost": self.seen.lost,
                    "undecoded": self.seen.undecoded,
                }
            )
            return
        counts = ", ".join(f"{n} from {m}" for m, n in self.seen.events.items())
        lost = sum(self.seen.lost.values())
        why = {"duration": "--duration reached", "SIGTERM": "SIGTERM", "SIGINT": "Ctrl-C"}[reason]
        note(
            f"stopped ({why}) after {seconds:.1f} s"
            + (f": events {counts}" if counts else "")
            + (f", {lost} lost" if lost else "")
        )
        note("every program was detached and unloaded, every map freed")


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (so every ``with`` frees what it holds); the old handler comes back after."""

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise Stopped()

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def _signals_held() -> Iterator[None]:
    """The last drain and print run to the end: a signal now waits until they are done."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
