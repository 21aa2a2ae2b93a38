"""Event record types named by the user, found in the object's BTF or else in its DWARF.

BTF holds only the types a global, a map or a function signature reaches;
the record struct of a typical tool is a local variable, so with ``-g`` it
is in the DWARF alone (docs/events.md, "Record types from DWARF"). The BTF
is asked first; the DWARF is read (once, on first need) only when the BTF
lacks the name, and both are decoded by the same codecs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dynbpf._btf.spec import Spec
from dynbpf._elf.dwarf import DEBUG_INFO
from dynbpf._elf.spec import ObjectSpec
from dynbpf._maps.codec import ReadableBuffer, find_record_type, record_decoder, record_type_id
from dynbpf._maps.errors import CodecError
from dynbpf.errors import OptionError


def record_type(obj: ObjectSpec, record: str | int) -> tuple[Spec, int]:
    """The types ``record`` is found in (the object's BTF, else its DWARF's) and its id there.

    An id is a BTF id. A name is looked up as :func:`~dynbpf._maps.codec.record_type_id`
    does, in the BTF first.
    """
    what = f"record={record!r}"
    btf = obj.btf
    if isinstance(record, int) and not isinstance(record, bool):
        if btf is None:
            raise OptionError(f"{what}: object {obj.name!r} has no BTF, so type ids mean nothing")
        return btf, record_type_id(btf, record)
    if not isinstance(record, str):
        raise TypeError(f"record= takes a type's name or BTF id, not {type(record).__name__}")
    if btf is not None:
        found = find_record_type(btf, record)
        if found is not None:
            return btf, found
    if obj.dwarf is None:
        if btf is None:
            raise OptionError(
                f"{what}: object {obj.name!r} has no BTF and no DWARF ({DEBUG_INFO}) to decode records by type "
                "(compile it with -g)"
            )
        raise CodecError(
            "",
            f"{what}: object {obj.name!r} has no type {_spelled(record)!r} in its BTF, and no DWARF "
            f"({DEBUG_INFO}) to look in (compile it with -g and keep the debug sections)",
        )
    dwarf = obj.dwarf.spec()
    found = find_record_type(dwarf, record)
    if found is None:
        raise CodecError(
            "", f"{what}: object {obj.name!r} has no type {_spelled(record)!r}, neither in its BTF nor in its DWARF"
        )
    return dwarf, found


def decoder(
    obj: ObjectSpec, record: str | int, *, exact: bool = False, strings: bool = False
) -> Callable[[ReadableBuffer], Any]:
    """:func:`~dynbpf._maps.codec.record_decoder` for a type of ``obj``, from its BTF or its DWARF."""
    spec, type_id = record_type(obj, record)
    return record_decoder(spec, type_id, exact=exact, strings=strings)


def _spelled(name: str) -> str:
    return " ".join(name.split())
