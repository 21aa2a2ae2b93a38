"""``/proc/kallsyms``, the kernel's symbol table, parsed in one place for all its readers.

Untyped ``__ksym`` externs resolve names to addresses through it, the
kprobe attachers look functions up in it, and stack symbolisation turns
addresses back into names. Each line is ``address type name [module]``:
the type is ``nm``'s letter (``t``/``T`` text, ``d``/``D`` data...), and
symbols of modules (and of BPF programs, module ``bpf``) carry the module
in brackets. The file has over 100k lines, so callers that need it more
than once keep what they parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

KALLSYMS = "/proc/kallsyms"
#: nm's letters of code symbols
TEXT = frozenset("tT")


class KernelSymbol(NamedTuple):
    address: int  # 0 for every symbol when kptr_restrict hides addresses from this process
    type: str
    name: str
    module: str  # "" for the kernel image itself


def read_text(path: str = KALLSYMS) -> str:
    """The file's text (``OSError`` if it cannot be read); names are bytes, kept by surrogateescape."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def parse(text: str) -> Iterator[KernelSymbol]:
    """The symbols listed in ``text``, in order; ``ValueError`` names a malformed line."""
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 3)
        if not parts:
            continue
        try:
            address = int(parts[0], 16)
            kind, name = parts[1], parts[2]
        except (ValueError, IndexError):
            raise ValueError(f"line {number} is not 'address type name': {line[:80]!r}") from None
        module = parts[3].strip().removeprefix("[").removesuffix("]") if len(parts) == 4 else ""
        yield KernelSymbol(address, kind, name, module)


__all__ = ["KALLSYMS", "TEXT", "KernelSymbol", "parse", "read_text"]
