"""Which kernel types a local type may stand for: CO-RE candidates.

A candidate has the local type's kind (a 32-bit and a 64-bit enum count as
one) and the same essential name, flavour suffixes ignored on both sides:
local ``task_struct___pre514`` finds the kernel's ``task_struct``, and would
also find a kernel type named ``task_struct___x``. vmlinux is searched
first; module BTF only when vmlinux has no candidate at all (libbpf's
``bpf_core_find_cands``).

Lookups use each Spec's name index, never a scan of the types. Kernel names
with a flavour separator are rare (a few dozen in vmlinux), so they are found
once per string table by scanning its bytes for ``___``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynbpf._btf.core_compat import essential_name
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.strings import StringTable
from dynbpf.errors import RelocationError

_ENUMS = (Kind.ENUM, Kind.ENUM64)


@dataclass(frozen=True, slots=True)
class Candidate:
    btf: Spec
    type_id: int


class CandidateFinder:
    """Candidate search over the kernel's BTF; ``modules`` is called only when vmlinux has no candidate."""

    def __init__(self, kernel: Spec, modules: Callable[[], Sequence[Spec]]) -> None:
        self._kernel = kernel
        self._modules = modules
        self._flavoured: dict[int, dict[str, tuple[str, ...]]] = {}  # by id() of a StringTable held below
        self._tables: list[StringTable] = []
        self._lock = threading.Lock()

    def find(self, name: str, kind: Kind) -> list[Candidate]:
        """Candidates for a local type called ``name`` of ``kind``, in libbpf's order (by id, vmlinux first)."""
        if not name:
            raise RelocationError("libbpf does not relocate anonymous types (no name to find kernel candidates by)")
        essential = essential_name(name)
        found = self._search(self._kernel, essential, kind, start=1)
        if found:
            return found
        for module in self._modules():
            found += self._search(module, essential, kind, start=module.first_id)
        return found

    def _search(self, spec: Spec, essential: str, kind: Kind, *, start: int) -> list[Candidate]:
        ids: set[int] = set()
        for name in (essential, *self._flavours(spec, essential)):
            for type_id in spec.find(name):
                if type_id < start:
                    continue
                k = spec.kind(type_id)
                if k == kind or (k in _ENUMS and kind in _ENUMS):
                    ids.add(type_id)
        return [Candidate(spec, i) for i in sorted(ids)]

    def _flavours(self, spec: Spec, essential: str) -> list[str]:
        """Names in ``spec`` (and its bases) whose essential part is ``essential`` but that carry a suffix."""
        out: list[str] = []
        s: Spec | None = spec
        while s is not None:
            out += self._index(s.strings).get(essential, ())
            s = s.base
        return out

    def _index(self, table: StringTable) -> dict[str, tuple[str, ...]]:
        index = self._flavoured.get(id(table))
        if index is None:
            with self._lock:
                index = self._flavoured.get(id(table))
                if index is None:
                    index = _flavour_index(table.own_bytes())
                    self._tables.append(table)  # keeps id(table) from being reused
                    self._flavoured[id(table)] = index
        return index


def _flavour_index(data: bytes) -> dict[str, tuple[str, ...]]:
    """Essential name → flavoured names, for every string in ``data`` with a flavour separator."""
    grouped: dict[str, set[str]] = {}
    pos = data.find(b"___")
    while pos >= 0:
        start = data.rfind(b"\0", 0, pos) + 1
        end = data.find(b"\0", pos)
        if end < 0:
            end = len(data)
        name = data[start:end].decode("utf-8", "surrogateescape")
        essential = essential_name(name)
        if essential != name:
            grouped.setdefault(essential, set()).add(name)
        pos = data.find(b"___", end)
    return {k: tuple(sorted(v)) for k, v in grouped.items()}
