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
    from dynbpf.runtime.program import Program


def load(
    programs: Sequence[Program], *, workers: int, cost: Callable[[Program], float]
) -> tuple[list[Program], dict[str, DynbpfError]]:
    """Load each program; return those this call loaded and the failures by name.

    A program another thread loaded first counts as neither.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    order = sorted(programs, key=cost, reverse=True)
    loaded: list[Program] = []
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
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(order)), thread_name_prefix="dynbpf-load") as pool:
            for future in [pool.submit(one, p) for p in order]:
                future.result()
    return loaded, failures
