"""What ring buffer and perf buffer readers share: waiting, delivery, and closing while another thread polls.

A reader reads memory it maps from the kernel. Unmapping that memory while a
thread still reads it would crash the interpreter rather than raise, so every
call touching the mappings registers as a *user* of the reader, and
:meth:`Lifetime.close` releases nothing until the last user has left: it
marks the reader closing, wakes a poller blocked in ``epoll_wait`` through
an eventfd kept in the reader's epoll set, waits for it to return, and only
then unmaps and closes. A callback may close its own reader: the poll that
called it stops after that record and releases everything as it returns.

What is guaranteed, then: ``close()`` may be called from any thread at any
time, any number of times; it returns once everything is released (or, from
inside the reader's own callback, as soon as the running poll finishes). A
poll blocked in another thread returns promptly with what it has handled; a
poll started after ``close()`` raises :class:`~dynbpf.errors.StateError`.
Several threads may poll one reader; records are drained by one at a time,
each delivered once.
"""

from __future__ import annotations

import abc
import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from dynbpf._sys.closing import Closing
from dynbpf.errors import StateError

#: how long a wait lasts at most while the oldest record is still being written:
#: the kernel may skip the wake-up for it (see RingBuffer), so the reader looks again soon
BUSY_RETRY = 0.001

#: receives each record's raw bytes with the CPU it came from (0 for ring buffers)
Sink = Callable[[int, bytes], None]
Decode = Callable[[bytes], Any]


class Lifetime:
    """Who is using an object whose resources must outlive every call using them, and its closing."""

    __slots__ = ("_closing", "_done", "_release", "_released", "_state", "_users", "_wake", "what")

    def __init__(self, what: str, wake: Callable[[], None], release: Callable[[], None]) -> None:
        self.what = what
        self._wake = wake
        self._release = release
        self._state = threading.Condition(threading.Lock())
        self._users: set[int] = set()
        self._closing = False
        self._released = False
        self._done = False

    @property
    def closing(self) -> bool:
        return self._closing

    def enter(self) -> None:
        """Register the calling thread as a user; refused once closing, or from the object's own callback."""
        me = threading.get_ident()
        with self._state:
            if self._closing:
                raise StateError(f"{self.what} is closed")
            if me in self._users:
                raise StateError(f"{self.what} cannot be polled from its own callback")
            self._users.add(me)

    def leave(self) -> None:
        with self._state:
            self._users.discard(threading.get_ident())
            last = self._closing and not self._users and not self._released
            if last:
                self._released = True
        if last:
            self._finish()

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def close(self) -> None:
        """Release once no thread uses the object; see the module docstring for what callers may rely on."""
        me = threading.get_ident()
        with self._state:
            if not self._closing:
                self._closing = True
                self._wake()
            if me in self._users:
                return  # called from a callback: the poll running it releases on its way out
            mine = not self._users and not self._released
            if mine:
                self._released = True
            else:
                self._state.wait_for(lambda: self._done)
        if mine:
            self._finish()

    def _finish(self) -> None:
        try:
            self._release()
        finally:
            with self._state:
                self._done = True
                self._state.notify_all()


class Waiter:
    """An epoll set plus an eventfd that :meth:`wake` makes readable, so that closing interrupts a wait."""

    __slots__ = ("epoll", "wake_fd")

    def __init__(self) -> None:
        self.epoll = select.epoll()
        try:
            self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.epoll.register(self.wake_fd, select.EPOLLIN)
        except BaseException:
            self.epoll.close()
            raise

    def wake(self) -> None:
        os.eventfd_write(self.wake_fd, 1)

    def wait(self, timeout: float | None) -> None:
        self.epoll.poll(-1 if timeout is None else timeout)

    def close(self) -> None:
        self.epoll.close()
        os.close(self.wake_fd)


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def next_wait(deadline: float | None, busy: bool) -> float | None:
    """How long to block next: until the deadline, but briefly when a record is half-written."""
    left = remaining(deadline)
    if busy:
        return BUSY_RETRY if left is None else min(left, BUSY_RETRY)
    return left


class EventReader(Closing, abc.ABC):
    """Base of :class:`~dynbpf._maps.ringbuf.RingBuffer` and :class:`~dynbpf._maps.perfbuf.PerfBuffer`.

    Three ways to read: ``poll``/``consume`` hand records to the callback
    given at construction; ``read`` returns them; iterating yields them until
    the reader is closed. ``decode`` turns each record's bytes into the value
    handed out (bytes when absent). A callback or ``decode`` that raises
    stops the poll and the exception propagates; that record counts as
    consumed (it is not delivered again), the ones after it wait for the
    next poll.
    """

    def __init__(self, what: str, decode: Decode | None) -> None:
        self._decode = decode
        self._drain_lock = threading.Lock()
        self._waiter = Waiter()
        self._closers: list[Callable[[], object]] = []
        self._life = Lifetime(what, self._waiter.wake, self._release_all)

    # --- what subclasses provide -------------------------------------------------------

    @abc.abstractmethod
    def _drain(self, sink: Sink) -> tuple[int, bool]:
        """Hand every complete record written so far to ``sink``; return (records, a record is half-written)."""

    @abc.abstractmethod
    def _deliver(self, cpu: int, value: Any) -> None:
        """Pass one decoded record to the callback (ring buffers and perf buffers call it differently)."""

    @abc.abstractmethod
    def _has_callback(self) -> bool: ...

    @abc.abstractmethod
    def _release(self) -> None:
        """Unmap and close what the subclass set up; must cope with a partly built reader."""

    # --- public -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (the release may still be finishing in a polling thread)."""
        return self._life.closing

    def fileno(self) -> int:
        """An epoll fd, readable when records may be waiting (or the reader was closed).

        For selectors and asyncio: ``loop.add_reader(rb.fileno(), rb.consume)``.
        """
        if self._waiter.epoll.closed:
            raise StateError(f"{self._life.what} is closed")
        return self._waiter.epoll.fileno()

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds (None: no limit) for records, then hand all there are to the callback.

        Returns how many records were delivered: 0 after a timeout, or when
        another thread closed the reader during the wait.
        """
        self._require_callback()
        return self._run(timeout, self._dispatch)

    def consume(self) -> int:
        """Hand the records already written to the callback, without waiting."""
        return self.poll(0)

    def read(self, timeout: float | None = None) -> list[Any]:
        """The records there are, waiting up to ``timeout`` seconds for the first; the callback is not called."""
        out: list[Any] = []
        self._run(timeout, lambda cpu, raw: out.append(self._value(raw)))
        return out

    def __iter__(self) -> Iterator[Any]:
        """Records as they come, blocking between them; ends when the reader is closed."""
        while True:
            try:
                batch = self.read()
            except StateError:
                if self.closed:
                    return
                raise
            yield from batch

    def close(self) -> None:
        """Stop delivering, unmap the buffers and close every fd; safe from any thread, repeatable."""
        self._life.close()

    def on_close(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` once the reader has released everything (owners use it to let go of the map)."""
        self._closers.append(fn)

    # --- shared machinery ---------------------------------------------------------------

    def _value(self, raw: bytes) -> Any:
        return raw if self._decode is None else self._decode(raw)

    def _dispatch(self, cpu: int, raw: bytes) -> None:
        self._deliver(cpu, self._value(raw))

    def _require_callback(self) -> None:
        if not self._has_callback():
            raise StateError(f"{self._life.what} has no callback: use read() or iterate over it")

    def _drain_once(self, sink: Sink) -> tuple[int, bool]:
        with self._drain_lock:
            return self._drain(sink)

    def _run(self, timeout: float | None, sink: Sink) -> int:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._life.use():
            while True:
                count, busy = self._drain_once(sink)
                wait = next_wait(deadline, busy)
                if count or self._life.closing or wait == 0:
                    return count
                self._waiter.wait(wait)

    def _service(self) -> tuple[int, bool]:
        """One drain to the callback for an :class:`~dynbpf._maps.events.EventLoop`; StateError once closed."""
        with self._life.use():
            return self._drain_once(self._dispatch)

    def _release_all(self) -> None:
        try:
            self._release()
        finally:
            self._waiter.close()
            closers, self._closers = self._closers, []
            for fn in closers:
                fn()

    def _init_failed(self) -> None:
        """Undo a constructor that raised half-way."""
        self._life.close()
