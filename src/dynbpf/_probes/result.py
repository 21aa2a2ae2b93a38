"""Probe results and their per-process cache.

A probe answers one question about the running kernel by doing the smallest
real thing (load a two-instruction program, create a one-entry map, attach a
link) and records *how* it decided, so a user who is told "no" can see which
operation the kernel refused and with which errno.
"""

from __future__ import annotations

import errno as _errno
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from dynbpf._sys.constants import ENOTSUPP
from dynbpf.errors import KernelUnsupported


@dataclass(frozen=True)
class Support:
    """Whether the kernel supports ``name``; ``how`` is the evidence."""

    name: str
    supported: bool
    how: str
    transient: bool = False  # a refusal that may not hold a moment later (EAGAIN, ENOMEM): never cached

    def __bool__(self) -> bool:
        return self.supported

    def require(self) -> None:
        """Raise :class:`KernelUnsupported` naming the capability and the evidence."""
        if not self.supported:
            raise KernelUnsupported(self.name, self.how)


def outcome(err: int) -> str:
    """``ok`` or the errno name, as used in ``how`` strings."""
    if err == 0:
        return "ok"
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(err, f"errno {err}")


P = ParamSpec("P")
R = TypeVar("R")

_registry: list[Callable[[], None]] = []


def cached(fn: Callable[P, R]) -> Callable[P, R]:
    """Memoise a probe per process; concurrent callers of one key wait for one run."""
    cache: dict[object, R] = {}
    key_locks: dict[object, threading.Lock] = {}
    guard = threading.Lock()

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        key = (args, tuple(sorted(kwargs.items())))
        try:
            return cache[key]
        except KeyError:
            pass
        with guard:
            lock = key_locks.setdefault(key, threading.Lock())
        with lock:
            if key in cache:
                return cache[key]
            result = fn(*args, **kwargs)
            if not getattr(result, "transient", False):  # a passing refusal is asked again next time
                cache[key] = result
            return result

    def clear() -> None:
        with guard:
            cache.clear()
            key_locks.clear()

    _registry.append(clear)
    return wrapper


def clear_cache() -> None:
    """Forget every probe result (tests; a kernel module loaded since)."""
    for clear in _registry:
        clear()
