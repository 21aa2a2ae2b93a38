"""Replace some records of a BTF blob and append others, moving nothing that exists.

An object's BTF is referred to from outside itself: type ids by func_info,
CO-RE records and map definitions, string offsets by line_info (file names
and source lines). Whatever the loader changes before the kernel sees the
blob must keep every existing type at its id and the original string table
as a prefix of the new one. So types are replaced at their id, new types go
after the last one, and new strings after the last string. libbpf edits its
blob in place under the same constraint; every change it makes keeps a
record's length, and so do the ones made here.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Mapping, Sequence

from dynbpf._btf import records
from dynbpf._btf.errors import EncodingError
from dynbpf._btf.kinds import BTF_MAGIC, HEADER_SIZE
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Type
from dynbpf.errors import ObjectFormatError

_HEADER = struct.Struct("<HBBIIIII")


def rewrite(spec: Spec, replace: Mapping[int, Type], append: Sequence[Type] = ()) -> Spec:
    """``spec`` with the types in ``replace`` swapped in at their ids and ``append`` added after the last type."""
    stray = [type_id for type_id in replace if not spec.first_id <= type_id < len(spec)]
    if stray:
        raise ValueError(f"cannot replace types {stray}: not among this blob's own ids")
    writer = records.StringWriter(spec.strings)
    words: array[int] = array("I")
    for type_id in range(spec.first_id, len(spec)):
        t = replace.get(type_id)
        if t is None:
            words.extend(spec.record_words(type_id))  # unchanged: its record as it is, nothing decoded
        else:
            try:
                records.encode(t, writer.add, words)
            except EncodingError as e:  # values the object itself led to (sizes, offsets past 32 bits)
                raise ObjectFormatError(f"type [{type_id}] cannot be rewritten: {e}", section=spec.section) from None
    for t in append:
        records.encode(t, writer.add, words)
    if sys.byteorder != "little":
        words.byteswap()
    types = words.tobytes()
    strings = spec.strings.own_bytes() + writer.appended()
    header = _HEADER.pack(BTF_MAGIC, 1, 0, HEADER_SIZE, 0, len(types), len(types), len(strings))
    return Spec.parse(header + types + strings, base=spec.base, section=spec.section)
