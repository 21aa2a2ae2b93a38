"""Load many programs at once: threads verify while the GIL is released in the syscall.

The wall time of a parallel load is the longest worker's total, so the
programs are started longest-expected first (largest-processing-time
scheduling): the long ones overlap each other and the short ones fill the
gaps at the end, and the workers finish close together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from dynbpf.errors import DynbpfError

if TYPE_CHECKING:
    from dynbpf._runtime.program import Program


def load(
    programs: Sequence[Program],
    *,
    workers: int,
    cost: Callable[[Program], float],
    loaded: list[Program] | None = None,
) -> tuple[list[Program], dict[str, DynbpfError]]:
    """Load each program; return those this call loaded and the failures by name.

    A program another thread loaded first counts as neither. ``loaded``, if
    given, is filled as programs load, so that a caller interrupted
    (``KeyboardInterrupt``) still knows what this call loaded.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    order = sorted(programs, key=cost, reverse=True)
    loaded = [] if loaded is None else loaded
    failures: dict[str, DynbpfError] = {}

    def one(program: Program) -> None:
        try:
            if program.load():
                loaded.append(program)
        except DynbpfError as e:
            failures[program.name] = e

    if workers == 1 or len(order) <= 1:
        for program in order:
            one(program)
        return loaded, failures
    pool = ThreadPoolExecutor(max_workers=min(workers, len(order)), thread_name_prefix="dynbpf-load")
    try:
        for future in [pool.submit(one, p) for p in order]:
            future.result()
    except BaseException:
        # Ctrl-C (or any error here): schedule nothing more, wait only for the loads under way, and let
        # the caller see what they loaded (attached to the exception) so it can roll back
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return loaded, failures
