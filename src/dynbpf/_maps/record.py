"""Decoded structs and unions: read-only records with attribute access.

A record class is made per BTF struct (:func:`record_type`), so ``repr``
reads like the C type and ``isinstance`` can tell kinds apart. Records are
immutable like named tuples: :meth:`Record._replace` returns a changed copy
and remembers which fields changed, so that encoding a union (or a struct
with an anonymous union) writes the changed alternative last and it wins
over the stale views of the same bytes.

Fields whose names cannot be attributes (C allows members called
``_asdict`` or ``__class__`` no more than Python does, but BTF can say
anything) are still reachable as ``record["name"]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Self


class Record:
    """Base of every record class; see the module docstring."""

    __slots__ = ("_touched", "_values")

    _fields: ClassVar[tuple[str, ...]] = ()
    _index: ClassVar[Mapping[str, int]] = {}
    _type_name: ClassVar[str] = "record"

    _values: tuple[Any, ...]
    _touched: frozenset[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{self._type_name} takes {len(fields)} fields, got {len(args)} positional values")
        values = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in self._index:
                raise TypeError(f"{self._type_name} has no field {name!r}")
            if name in values:
                raise TypeError(f"{self._type_name}: field {name!r} given twice")
            values[name] = value
        missing = [f for f in fields if f not in values]
        if missing:
            raise TypeError(f"{self._type_name}: missing field(s) {', '.join(missing)}")
        object.__setattr__(self, "_values", tuple(values[f] for f in fields))
        object.__setattr__(self, "_touched", frozenset())

    @classmethod
    def _make(cls, values: tuple[Any, ...], touched: frozenset[str] = frozenset()) -> Self:
        record = cls.__new__(cls)
        object.__setattr__(record, "_values", values)
        object.__setattr__(record, "_touched", touched)
        return record

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[self._index[name]]
        except KeyError:
            raise KeyError(f"{self._type_name} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._type_name} records are read-only; use _replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self._type_name} records are read-only")

    def _asdict(self) -> dict[str, Any]:
        """Field names to values (nested records stay records)."""
        return dict(zip(self._fields, self._values, strict=True))

    def _replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied; encoding writes changed fields after the others."""
        values = list(self._values)
        for name, value in changes.items():
            index = self._index.get(name)
            if index is None:
                raise TypeError(f"{self._type_name} has no field {name!r}")
            values[index] = value
        return self._make(tuple(values), self._touched | changes.keys())

    def _items(self) -> Iterator[tuple[str, Any]]:
        return zip(self._fields, self._values, strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self._type_name == other._type_name and self._fields == other._fields and self._values == other._values

    def __hash__(self) -> int:
        return hash((self._type_name, self._fields, self._values))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self._items())
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(f"{self._type_name} records are made per BTF type and cannot be pickled; use _asdict()")


def _field_property(index: int) -> property:
    def get(self: Record) -> Any:
        return self._values[index]

    return property(get)


def record_type(type_name: str, fields: tuple[str, ...]) -> type[Record]:
    """A new record class for a struct or union with these field names (in order, unique).

    ``type_name`` is the C spelling (``struct event``); the class is named
    after the tag, or ``anon_struct``/``anon_union`` for anonymous types.
    """
    word, _, tag = type_name.partition(" ")
    class_name = tag if tag.isidentifier() else f"anon_{word}"
    namespace: dict[str, Any] = {
        "__slots__": (),
        "_fields": fields,
        "_index": {name: i for i, name in enumerate(fields)},
        "_type_name": type_name,
    }
    for i, name in enumerate(fields):
        if name.isidentifier() and not name.startswith("__") and not hasattr(Record, name):
            namespace[name] = _field_property(i)
    return type(class_name, (Record,), namespace)
