"""``/proc/kallsyms``: where untyped ``__ksym`` externs (``extern const void x __ksym``) point.

An extern without a BTF type can only be resolved to an address, which the
kernel lists in kallsyms (data symbols only with ``CONFIG_KALLSYMS_ALL``).
The file is large (over 100k lines), so it is read at most once per
process, and only when an object has such an extern.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from dynbpf._sys import kallsyms
from dynbpf._sys.kallsyms import KALLSYMS
from dynbpf.errors import KernelUnsupported

_LLVM_SUFFIX = ".llvm."  # clang's ThinLTO renames promoted statics: name.llvm.<hash>


class Kallsyms(Mapping[str, int]):
    """Symbol name -> address, first listing first.

    A name can be listed more than once (static symbols of different
    files); when those listings disagree on the address the name is
    ambiguous and libbpf refuses to resolve it: see :meth:`addresses`.
    """

    __slots__ = ("_first", "_more")

    def __init__(self, first: dict[str, int], more: dict[str, tuple[int, ...]] | None = None) -> None:
        self._first = first
        self._more = more or {}

    def __getitem__(self, name: str) -> int:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def addresses(self, name: str) -> tuple[int, ...]:
        """Every distinct address ``name`` is listed at, first listing first; () if it is not listed."""
        first = self._first.get(name)
        if first is None:
            return ()
        return (first, *self._more.get(name, ()))


def parse_kallsyms(text: str) -> Kallsyms:
    """Parse kallsyms lines (``address type name [module]``); ``ValueError`` names a malformed line.

    Like libbpf, a data symbol renamed by ThinLTO (``foo.llvm.123``) also
    answers to its original name.
    """
    first: dict[str, int] = {}
    more: dict[str, tuple[int, ...]] = {}
    for address, kind, name, _ in kallsyms.parse(text):
        names = [name]
        if kind == "d" and _LLVM_SUFFIX in name:
            names.append(name[: name.index(_LLVM_SUFFIX)])
        for n in names:
            known = first.setdefault(n, address)
            if known != address and address not in more.get(n, ()):
                more[n] = (*more.get(n, ()), address)
    return Kallsyms(first, more)


_lock = threading.Lock()
_cache: list[Kallsyms] = []


def read_kallsyms() -> Kallsyms:
    """The running kernel's symbols, parsed once per process.

    Addresses read as 0 when ``kptr_restrict`` hides them from this process.
    """
    if _cache:
        return _cache[0]
    with _lock:
        if not _cache:
            try:
                _cache.append(parse_kallsyms(kallsyms.read_text()))
            except OSError as e:
                raise KernelUnsupported("kernel symbols", f"reading {KALLSYMS}: {e.strerror}") from None
            except ValueError as e:
                raise KernelUnsupported("kernel symbols", f"{KALLSYMS}: {e}") from None
        return _cache[0]


def clear_cache() -> None:
    with _lock:
        _cache.clear()


__all__ = ["KALLSYMS", "Kallsyms", "parse_kallsyms", "read_kallsyms"]
