"""The event maps the agent reads, and the clients that follow them.

Each configured ring or perf buffer has one reader, polled from the event
loop whenever its epoll fd is readable, so the ring is drained whether
anyone listens or not. Records go to every subscriber whose filter takes
them, through a bounded queue: a client that does not keep up loses
records (counted as dropped, per subscriber and per map), never the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynbpf._maps.reader import EventReader
from dynbpf._runtime.collection import Collection
from dynbpf._sys.constants import MapType
from dynbpf._tools.plain import plain

log = logging.getLogger("dynbpf.agent")

QUEUE = 4096  # records a subscriber may lag behind before it loses some


@dataclass(slots=True)
class Counts:
    read: int = 0
    lost: int = 0  # the kernel could not write them (perf buffers report it; ring buffers do not)
    dropped: int = 0  # read, but a subscriber's queue was full


@dataclass(eq=False, slots=True)
class Subscriber:
    """One client's view of the events: which app (and maps), and what waits for it."""

    app: str
    maps: frozenset[str]  # empty: every event map of the app
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    dropped: int = 0

    def takes(self, app: str, map_name: str) -> bool:
        return app == self.app and (not self.maps or map_name in self.maps)


class Hub:
    """Readers of every running application's event maps, and the subscribers they feed; loop thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.readers: dict[tuple[str, str], EventReader] = {}
        self.counts: dict[tuple[str, str], Counts] = {}
        self.subscribers: set[Subscriber] = set()

    def start(self, app: str, collection: Collection, events: dict[str, str]) -> None:
        """Read ``events`` (map -> record type, "" for bytes) of ``app``'s collection from now on."""
        for map_name, record in events.items():
            key = (app, map_name)
            counts = self.counts.setdefault(key, Counts())
            deliver = self._deliver(app, map_name, counts)
            reader: EventReader
            if collection.spec.maps[map_name].type == MapType.PERF_EVENT_ARRAY:
                reader = collection.perf_buffer(
                    map_name, record=record or None, callback=_per_cpu(deliver), lost_callback=_losses(counts)
                )
            else:
                reader = collection.ring_buffer(map_name, record=record or None, callback=deliver)
            self.readers[key] = reader
            self.loop.add_reader(reader.fileno(), self._drain, key, reader)

    def stop(self, app: str, maps: frozenset[str] | None = None, *, ended: str = "") -> None:
        """Stop reading ``app``'s event maps (those in ``maps``; all by default); ``ended`` tells its subscribers."""
        for key in [k for k in self.readers if k[0] == app and (maps is None or k[1] in maps)]:
            reader = self.readers.pop(key)
            self.loop.remove_reader(reader.fileno())
            reader.close()
        if ended:
            for sub in [s for s in self.subscribers if s.app == app]:
                self._end(sub, ended)

    def reading(self, app: str) -> frozenset[str]:
        return frozenset(m for a, m in self.readers if a == app)

    def subscribe(self, app: str, maps: frozenset[str]) -> Subscriber:
        sub = Subscriber(app, maps)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def close(self, reason: str) -> None:
        for app in {a for a, _ in self.readers}:
            self.stop(app)
        for sub in list(self.subscribers):
            self._end(sub, reason)

    def _deliver(self, app: str, map_name: str, counts: Counts) -> Callable[[Any], None]:
        def deliver(record: Any) -> None:
            counts.read += 1
            targets = [s for s in self.subscribers if s.takes(app, map_name)]
            if not targets:
                return
            event = {"app": app, "map": map_name, "time": time.time(), "record": plain(record)}
            for sub in targets:
                if not self._put(sub, event):
                    counts.dropped += 1

        return deliver

    def _put(self, sub: Subscriber, event: dict[str, Any]) -> bool:
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            sub.dropped += 1
            return False
        return True

    def _end(self, sub: Subscriber, reason: str) -> None:
        """Tell ``sub`` its stream is over (making room for it: what it had not read yet is lost anyway)."""
        self.subscribers.discard(sub)
        while True:
            try:
                sub.queue.put_nowait({"end": reason})
                return
            except asyncio.QueueFull:
                sub.queue.get_nowait()
                sub.dropped += 1

    def _drain(self, key: tuple[str, str], reader: EventReader) -> None:
        try:
            reader.consume()
        except Exception as e:  # a record that does not decode: the ring moved past it; say so and go on
            log.warning("event not delivered", extra={"fields": {"app": key[0], "map": key[1], "error": str(e)}})


def _per_cpu(deliver: Callable[[Any], None]) -> Callable[[int, Any], None]:
    return lambda _cpu, record: deliver(record)


def _losses(counts: Counts) -> Callable[[int, int], None]:
    def lost(_cpu: int, count: int) -> None:
        counts.lost += count

    return lost
