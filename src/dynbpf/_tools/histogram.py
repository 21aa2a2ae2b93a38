"""Log2 and linear histograms counted by BPF programs, read from their map and printed as the C tools print them.

A tool counts into a map and user space prints the distribution. The map
has one of three shapes, all read here:

- the key is the bucket (slot) index and the value its count: an array
  or hash of integers, or a per-CPU one whose values are summed;
- the key is a struct with the slot in one field (``slot`` by default)
  and the rest saying which histogram it belongs to (a disk, a process):
  one histogram per *section*;
- the value is the whole histogram, an array of counts (libbpf-tools'
  ``struct hist { __u32 slots[N]; }``), and the key is its section.

Log2 buckets follow libbpf-tools: slot ``i`` counts the values whose
integer log2 is ``i`` (``2**i .. 2**(i+1) - 1``), slot 0 also counting 0.
(BCC's ``bpf_log2l`` is one higher, so a BCC map's slot 0 holds only 0:
give :meth:`Histogram.log2` its counts from slot 1 on.) Linear buckets are
``base + i * step .. base + (i + 1) * step - 1``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dynbpf._maps.record import Record

if TYPE_CHECKING:
    from dynbpf._maps.map import Map

Kind = Literal["log2", "linear"]
KINDS: tuple[Kind, ...] = ("log2", "linear")

#: the most buckets a histogram read from a map may have: a larger slot index is not a histogram's
MAX_SLOTS = 1 << 16
#: the widest bar; the C tools draw 40 stars
MAX_STARS = 40
_MIN_RANGE_WIDTH = 10  # the C tools' %10d
_MIN_COUNT_WIDTH = 8  # and %-8d


@dataclass(frozen=True, slots=True)
class Bucket:
    """Values ``low`` to ``high`` (both included) were counted ``count`` times."""

    low: int
    high: int
    count: int


@dataclass(frozen=True, slots=True)
class Histogram:
    """A distribution of counts over log2 or linear buckets; :meth:`render` prints it, :meth:`as_dict` for JSON.

    ``counts[i]`` is the count of slot ``i``. ``section`` is what a
    sectioned map's key says this histogram is of (a disk name, a pid;
    None for the whole map), ``section_name`` what to call it in print.
    """

    kind: Kind
    counts: tuple[int, ...]
    unit: str = "value"
    step: int = 1
    base: int = 0
    section: Any = None
    section_name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"histogram kind must be 'log2' or 'linear', not {self.kind!r}")
        for i, count in enumerate(self.counts):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"histogram counts are whole numbers >= 0; slot {i} has {count!r}")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 1:
            raise ValueError(f"a linear histogram's step is a whole number >= 1, not {self.step!r}")

    # --- making one --------------------------------------------------------------------------

    @classmethod
    def log2(cls, counts: Iterable[int], *, unit: str = "value") -> Histogram:
        """A log2 histogram of ``counts`` (slot ``i`` counts ``2**i .. 2**(i+1) - 1``, slot 0 also 0)."""
        return cls("log2", tuple(counts), unit)

    @classmethod
    def linear(cls, counts: Iterable[int], *, step: int = 1, base: int = 0, unit: str = "value") -> Histogram:
        """A linear histogram of ``counts`` (slot ``i`` counts ``base + i*step .. base + (i+1)*step - 1``)."""
        return cls("linear", tuple(counts), unit, step, base)

    @classmethod
    def from_map(
        cls,
        source: Map | Mapping[Any, Any],
        *,
        kind: Kind = "log2",
        unit: str = "value",
        step: int = 1,
        base: int = 0,
        slot: str | None = None,
    ) -> Histogram:
        """The histogram a map holds, sections added together (see the module docstring for the shapes).

        ``slot`` names the key field holding the bucket index when the key
        is a struct (default: ``slot``). A per-CPU map's values are summed.
        """
        merged: list[int] = []
        for counts in _read(source, slot=slot).values():
            _add(merged, counts)
        return cls(kind, tuple(merged), unit, step, base)

    @classmethod
    def sections_from_map(
        cls,
        source: Map | Mapping[Any, Any],
        *,
        kind: Kind = "log2",
        unit: str = "value",
        step: int = 1,
        base: int = 0,
        slot: str | None = None,
    ) -> dict[Any, Histogram]:
        """One histogram per section of a map, in section order; ``{None: histogram}`` for a map without sections.

        A struct key's fields other than ``slot`` make the section (the
        field's value when there is one, else a tuple of ``(field, value)``);
        when values are arrays of counts, the key is the section.
        """
        out: dict[Any, Histogram] = {}
        sections = _read(source, slot=slot) or {None: []}  # an empty map: one empty histogram
        for key in _ordered(sections):
            name, section = key if key is not None else ("", None)
            out[section] = cls(kind, tuple(sections[key]), unit, step, base, section, name)
        return out

    # --- reading it -----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def buckets(self) -> tuple[Bucket, ...]:
        """Every bucket from slot 0 to the last one counted (none when nothing was)."""
        last = max((i for i, c in enumerate(self.counts) if c), default=-1)
        return tuple(Bucket(*self._bounds(i), self.counts[i]) for i in range(last + 1))

    def _bounds(self, i: int) -> tuple[int, int]:
        if self.kind == "log2":
            return (0 if i == 0 else 1 << i), (1 << (i + 1)) - 1
        low = self.base + i * self.step
        return low, low + self.step - 1

    def render(self, width: int = 80) -> str:
        """The C tools' text: ``low -> high : count |****|`` per bucket, each line at most ``width`` wide.

        Bars shrink to fit ``width`` (at most 40 stars, as the tools draw;
        at least one column, so a width too small for the numbers is
        exceeded). The ranges take 10 columns, more for larger values (two
        64-bit ranges need 60 columns at 80); linear buckets of step 1 show
        one value.
        """
        lines = [f"{self.section_name} = {_section_text(self.section_name, self.section)}"] if self.section_name else []
        buckets = self.buckets
        if not buckets:
            return "\n".join([*lines, f"{self.unit}: no counts"])
        digits = max(_MIN_RANGE_WIDTH, len(str(buckets[-1].high)), len(str(buckets[0].low)))
        single = self.kind == "linear" and self.step == 1
        ranges = [f"{b.low:>{digits}}" if single else f"{b.low:>{digits}} -> {b.high:<{digits}}" for b in buckets]
        span = len(ranges[0])
        most = max(b.count for b in buckets)
        count_width = max(_MIN_COUNT_WIDTH, len(str(most)))
        stars = max(1, min(MAX_STARS, width - (span + 3 + count_width + 1) - 2))
        indent = min(5, max(0, span - len(self.unit)))
        lines.append(f"{' ' * indent}{self.unit:<{span - indent}} : {'count':<{count_width}} distribution")
        for text, bucket in zip(ranges, buckets, strict=True):
            bar = "*" * (bucket.count * stars // most)
            lines.append(f"{text} : {bucket.count:<{count_width}} |{bar:<{stars}}|")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: kind, unit, step, base, section (and its name), total, and the buckets up to the last counted."""
        from dynbpf._tools.plain import plain

        return {
            "kind": self.kind,
            "unit": self.unit,
            "step": self.step,
            "base": self.base,
            "section": plain(self.section),
            "section_name": self.section_name,
            "total": self.total,
            "buckets": [{"low": b.low, "high": b.high, "count": b.count} for b in self.buckets],
        }


# --- reading a map ---------------------------------------------------------------------------------

SectionKey = tuple[str, Any] | None


def _read(source: Map | Mapping[Any, Any], *, slot: str | None) -> dict[SectionKey, list[int]]:
    """Counts per section (None: the map has no sections), slots summed over keys and CPUs."""
    per_cpu = bool(getattr(source, "per_cpu", False))
    name = getattr(source, "name", None)
    what = f"map {name!r}" if isinstance(name, str) else "the map"
    sections: dict[SectionKey, list[int]] = {}
    for key, value in source.items():
        counts = _value_counts(value, per_cpu, what)
        if isinstance(counts, list):  # the value is a whole histogram; the key says whose
            _add(sections.setdefault(_whole_key_section(key), []), counts)
            continue
        index, section = _slot_of(key, slot, what)
        if index >= MAX_SLOTS:
            raise ValueError(
                f"{what}: slot {index} is not a bucket index (a histogram has at most {MAX_SLOTS} buckets); "
                "is this a histogram's map?"
            )
        bucket = sections.setdefault(section, [])
        _add(bucket, [0] * index + [counts])
    return sections


def _value_counts(value: Any, per_cpu: bool, what: str) -> int | list[int]:
    """A value as one count, or as a list of counts (a whole histogram); per-CPU values summed."""
    if per_cpu and isinstance(value, list):
        parts = [_value_counts(v, False, what) for v in value]
        if all(isinstance(p, int) for p in parts):
            return sum(p for p in parts if isinstance(p, int))
        total: list[int] = []
        for p in parts:
            _add(total, p if isinstance(p, list) else [p])
        return total
    if isinstance(value, Record):
        arrays = [v for _, v in value._items() if isinstance(v, list)]
        if "slots" in value._fields and isinstance(value["slots"], list):
            arrays = [value["slots"]]
        if len(arrays) == 1:
            return [_count(v, what) for v in arrays[0]]
        only = value._values[0] if len(value._fields) == 1 else None
        if isinstance(only, int) and not isinstance(only, bool):
            return only
        raise ValueError(
            f"{what}: a value {value._type_name} is neither one count nor one array of counts "
            f"(fields: {', '.join(value._fields)})"
        )
    if isinstance(value, list):
        return [_count(v, what) for v in value]
    return _count(value, what)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bytes) and len(value) <= 8:  # a map without BTF: the kernel's little-endian integer
        return int.from_bytes(value, "little")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: {value!r} is not a count (an integer)")
    return operator.index(value)


def _slot_of(key: Any, slot: str | None, what: str) -> tuple[int, SectionKey]:
    if isinstance(key, Record):
        field = slot or "slot"
        if field not in key._fields:
            raise ValueError(
                f"{what}: the key {key._type_name} has no field {field!r} holding the bucket index "
                f"(fields: {', '.join(key._fields)}); name it with slot="
            )
        rest = [(name, value) for name, value in key._items() if name != field]
        return _count(key[field], what), _section(rest)
    if slot is not None:
        raise ValueError(f"{what}: slot={slot!r} names a key field, but the keys are not structs")
    return _count(key, what), None


def _whole_key_section(key: Any) -> SectionKey:
    if isinstance(key, Record):
        return _section(list(key._items()))
    return ("key", key)


def _section(fields: Sequence[tuple[str, Any]]) -> SectionKey:
    kept = [(name, value) for name, value in fields if not name.startswith("__pad")]
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    return ", ".join(name for name, _ in kept), tuple(kept)


def _add(into: list[int], counts: Sequence[int]) -> None:
    if len(counts) > len(into):
        into.extend([0] * (len(counts) - len(into)))
    for i, count in enumerate(counts):
        into[i] += count


def _ordered(sections: Mapping[SectionKey, list[int]]) -> list[SectionKey]:
    keys = list(sections)
    try:
        return sorted(keys, key=lambda k: (k is not None, k[1] if k is not None else 0))
    except TypeError:  # sections of mixed or unordered kinds: the map's order
        return keys


def _section_text(name: str, section: Any) -> str:
    from dynbpf._tools.plain import plain

    if ", " in name:  # several key fields: (field, value) pairs
        return ", ".join(f"{field}={plain(item)}" for field, item in section)
    return str(plain(section))
