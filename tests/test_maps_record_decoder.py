"""record_decoder: event records decoded by a BTF type named as users write it (no kernel needed)."""

from __future__ import annotations

import struct

import pytest

from dynbpf._btf import Spec
from dynbpf._btf.types import Int, IntEncoding, Member, Struct, Typedef, Union
from dynbpf._maps import CodecError
from dynbpf._maps.codec import record_decoder, record_type_id

U32 = Int("unsigned int", 4, IntEncoding.NONE, 0, 32)


def test_record_decoder_finds_types_by_tag_bare_name_or_id() -> None:
    spec = Spec.from_types(
        [
            U32,
            Struct("event", 8, (Member("pid", 1, 0), Member("cpu", 1, 32))),
            Typedef("event_t", 2),
            Union("either", 4, (Member("a", 1, 0), Member("b", 1, 0))),
        ]
    )
    data = struct.pack("<II", 7, 3)
    for name in ("struct event", "event", "  struct   event ", 2, "event_t"):
        record = record_decoder(spec, name)(data)
        assert (record.pid, record.cpu) == (7, 3), name
    assert record_decoder(spec, "event")(data + b"pad!").pid == 7
    with pytest.raises(CodecError, match="takes 8 bytes, the record has 12"):
        record_decoder(spec, "event", exact=True)(data + b"pad!")
    with pytest.raises(CodecError, match="takes 8 bytes, the record has 4"):
        record_decoder(spec, "event")(data[:4])
    assert record_type_id(spec, "union either") == 4
    with pytest.raises(CodecError, match="no type 'struct either'"):
        record_type_id(spec, "struct either")
    with pytest.raises(CodecError, match="no type 'missing'"):
        record_type_id(spec, "missing")
    with pytest.raises(CodecError, match=r"no type \[9\]"):
        record_type_id(spec, 9)


def test_record_decoder_bare_names_prefer_typedefs_and_refuse_ambiguity() -> None:
    spec = Spec.from_types(
        [
            U32,
            Struct("ev", 4, (Member("a", 1, 0),)),
            Union("ev", 4, (Member("b", 1, 0),)),
            Struct("ev2", 4, (Member("c", 1, 0),)),
            Typedef("ev2", 3),
        ]
    )
    with pytest.raises(CodecError, match=r"ambiguous.*struct ev, union ev"):
        record_type_id(spec, "ev")
    assert record_type_id(spec, "struct ev") == 2
    assert record_type_id(spec, "ev2") == 5  # as in C: the bare name is the typedef
    assert record_decoder(spec, "ev2")(bytes(4)).b == 0
