"""Wall-clock times for the timestamps BPF programs take.

BPF programs stamp events with the kernel's own clocks, never with the
wall clock, which jumps:

| helper | clock |
|---|---|
| ``bpf_ktime_get_ns()``, ``bpf_ktime_get_coarse_ns()`` | ``CLOCK_MONOTONIC`` (stops while the machine is suspended) |
| ``bpf_ktime_get_boot_ns()`` | ``CLOCK_BOOTTIME`` (monotonic, counting suspended time too) |
| ``bpf_ktime_get_tai_ns()`` | ``CLOCK_TAI`` (the wall clock without leap seconds) |

Each differs from ``CLOCK_REALTIME`` by an offset, measured here by
reading the real-time clock on both sides of the other one, the tightest
of a few tries. The offset holds until the wall clock is stepped (NTP, an
administrator) or, for ``CLOCK_MONOTONIC``, the machine is suspended;
:meth:`KernelClock.measure` takes it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from types import MappingProxyType
from typing import Literal

ClockName = Literal["monotonic", "boottime", "tai"]
_CLOCKS: dict[ClockName, int] = {
    "monotonic": time.CLOCK_MONOTONIC,
    "boottime": time.CLOCK_BOOTTIME,
    "tai": time.CLOCK_TAI,
}
_TRIES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class KernelClock:
    """Converts BPF timestamps to wall-clock ``datetime``s (see the module docstring for which helper uses which).

    ``tz``: the time zone of the results (default UTC; None: the local
    one). ``datetime`` keeps microseconds; :meth:`realtime_ns` keeps the
    nanoseconds.
    """

    def __init__(self, tz: tzinfo | None = UTC) -> None:
        self.tz = tz
        self._lock = threading.Lock()
        self._offsets: dict[ClockName, int] = {}
        self._errors: dict[ClockName, int] = {}
        self.measure()

    def measure(self) -> None:
        """Take every clock's offset to the wall clock again (after the wall clock was stepped, or a suspend)."""
        offsets: dict[ClockName, int] = {}
        errors: dict[ClockName, int] = {}
        for name, clock in _CLOCKS.items():
            best: tuple[int, int] | None = None
            for _ in range(_TRIES):
                before = time.clock_gettime_ns(time.CLOCK_REALTIME)
                reading = time.clock_gettime_ns(clock)
                after = time.clock_gettime_ns(time.CLOCK_REALTIME)
                if best is None or after - before < best[1]:
                    best = ((before + after) // 2 - reading, after - before)
            assert best is not None
            offsets[name], errors[name] = best[0], (best[1] + 1) // 2
        with self._lock:
            self._offsets, self._errors = offsets, errors

    @property
    def offsets(self) -> Mapping[ClockName, int]:
        """Nanoseconds to add to each clock's reading to get ``CLOCK_REALTIME``'s, as last measured."""
        with self._lock:
            return MappingProxyType(dict(self._offsets))

    @property
    def uncertainty(self) -> Mapping[ClockName, int]:
        """Half the window each offset was measured in, in nanoseconds: how far off it may be."""
        with self._lock:
            return MappingProxyType(dict(self._errors))

    def realtime_ns(self, stamp: int, clock: ClockName = "monotonic") -> int:
        """``stamp`` of ``clock`` as nanoseconds since the epoch (``CLOCK_REALTIME``)."""
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            raise TypeError(f"a BPF timestamp is an int of nanoseconds, not {stamp!r}")
        with self._lock:
            offset = self._offsets.get(clock)
        if offset is None:
            raise ValueError(f"clock={clock!r}: one of {', '.join(_CLOCKS)}")
        return stamp + offset

    def monotonic(self, stamp: int) -> datetime:
        """When ``bpf_ktime_get_ns()`` (or ``bpf_ktime_get_coarse_ns()``) read ``stamp``."""
        return self._datetime(self.realtime_ns(stamp, "monotonic"))

    def boottime(self, stamp: int) -> datetime:
        """When ``bpf_ktime_get_boot_ns()`` read ``stamp``."""
        return self._datetime(self.realtime_ns(stamp, "boottime"))

    def tai(self, stamp: int) -> datetime:
        """When ``bpf_ktime_get_tai_ns()`` read ``stamp``."""
        return self._datetime(self.realtime_ns(stamp, "tai"))

    def _datetime(self, realtime_ns: int) -> datetime:
        utc = _EPOCH + timedelta(microseconds=realtime_ns // 1000)
        return utc.astimezone(self.tz)


__all__ = ["ClockName", "KernelClock"]
