"""One wait for many event readers: ring buffers and perf buffers polled together.

Each reader's :meth:`~dynbpf._maps.reader.EventReader.fileno` is an epoll fd
that becomes readable when that reader may have records, so the loop keeps
one epoll set of those fds (epoll sets nest) plus its own wake-up eventfd.
:meth:`EventLoop.poll` drains every reader whenever it wakes — a drain of
an empty reader is a few memory reads — and so never depends on which
readiness report arrived first.

The loop owns the readers added to it: closing the loop closes them. A
reader closed on its own is dropped from the loop at its next poll. Closing
follows the readers' rules (:mod:`dynbpf._maps.reader`): any thread, any
time, also from a callback.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Iterable

from dynbpf._maps.reader import EventReader, Lifetime, Waiter, next_wait
from dynbpf._sys.closing import Closing
from dynbpf.errors import StateError


class EventLoop(Closing):
    """Polls several readers at once and hands each one's records to its own callback."""

    def __init__(self, readers: Iterable[EventReader] = ()) -> None:
        self._lock = threading.Lock()
        self._readers: dict[int, tuple[EventReader, int]] = {}  # id(reader) -> (reader, its fd when added)
        self._waiter = Waiter()
        self._life = Lifetime("event loop", self._waiter.wake, self._release)
        try:
            for reader in readers:
                self.add(reader)
        except BaseException:
            self._life.close()
            raise

    @property
    def readers(self) -> tuple[EventReader, ...]:
        with self._lock:
            return tuple(reader for reader, _ in self._readers.values())

    @property
    def closed(self) -> bool:
        return self._life.closing

    def fileno(self) -> int:
        """An epoll fd readable when any reader may have records."""
        return self._waiter.epoll.fileno()

    def add(self, reader: EventReader) -> None:
        """Poll ``reader`` too (it needs a callback); the loop closes it when closed itself."""
        reader._require_callback()
        with self._life.use(), self._lock:
            if id(reader) in self._readers:
                raise ValueError(f"{reader!r} is polled by this loop already: each reader is added once")
            fd = reader.fileno()
            self._waiter.epoll.register(fd, select.EPOLLIN)
            self._readers[id(reader)] = (reader, fd)

    def remove(self, reader: EventReader) -> None:
        """Stop polling ``reader``; it stays open and is the caller's again."""
        with self._life.use(), self._lock:
            entry = self._readers.pop(id(reader), None)
            if entry is not None and not reader.closed:
                with contextlib.suppress(OSError):
                    self._waiter.epoll.unregister(entry[1])

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds (None: no limit) until some reader has records, then dispatch them all.

        Returns how many records the callbacks received; 0 after a timeout or
        when another thread closed the loop during the wait. A callback that
        raises ends the poll; the other readers' records wait for the next.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._life.use():
            while True:
                count, busy = self._service()
                wait = next_wait(deadline, busy)
                if count or self._life.closing or wait == 0:
                    return count
                self._waiter.wait(wait)

    def _service(self) -> tuple[int, bool]:
        count, busy = 0, False
        for reader in self.readers:
            if self._life.closing:
                break
            try:
                n, b = reader._service()
            except StateError:
                if not reader.closed:
                    raise
                with self._lock:
                    # its epoll fd is closed, which took it out of our set: do not unregister by number
                    self._readers.pop(id(reader), None)
                continue
            count += n
            busy = busy or b
        return count, busy

    def close(self) -> None:
        """Close the loop and every reader in it; safe from any thread and from callbacks."""
        self._life.close()

    def _release(self) -> None:
        with self._lock:
            readers = [reader for reader, _ in self._readers.values()]
            self._readers.clear()
        try:
            for reader in readers:
                reader.close()
        finally:
            self._waiter.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._readers)} readers"
        return f"<EventLoop {state}>"
