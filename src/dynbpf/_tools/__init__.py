"""What tools built on dynbpf need besides loading: histograms, names for stack addresses, wall-clock times.

The equivalents of BCC's ``ksym``/``sym`` and of turning
``bpf_ktime_get_ns()`` stamps into dates (docs/tools.md). It reads
``/proc`` and ELF files and never the runtime's state, so nothing below it
imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._tools.clock import KernelClock
    from dynbpf._tools.histogram import Histogram
    from dynbpf._tools.symbolize import StackFrame, Symbolizer

__all__ = ["Histogram", "KernelClock", "StackFrame", "Symbolizer"]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._tools.clock": ("KernelClock",),
            "dynbpf._tools.histogram": ("Histogram",),
            "dynbpf._tools.symbolize": ("StackFrame", "Symbolizer"),
        },
    )
