"""record_decoder: event records decoded by a BTF type named as users write it (no kernel needed)."""

from __future__ import annotations

import struct

import pytest

from dynbpf._btf import Spec
from dynbpf._btf.types import Array, Const, Int, IntEncoding, Member, Struct, Typedef, Union
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


CHAR = Int("char", 1, IntEncoding.SIGNED, 0, 8)
U8 = Int("unsigned char", 1, IntEncoding.NONE, 0, 8)
U64 = Int("unsigned long long", 8, IntEncoding.NONE, 0, 64)


def blob_spec() -> Spec:
    """struct blob { u64 ts; u32 len; char data[13]; } (32 bytes: 3 of padding) and relatives."""
    return Spec.from_types(
        [
            U32,  # 1
            U64,  # 2
            CHAR,  # 3
            Array(3, 1, 13),  # 4
            Struct("blob", 32, (Member("ts", 2, 0), Member("len", 1, 64), Member("data", 4, 96))),  # 5
            Array(1, 1, 4),  # 6: u32[4]
            Struct("words", 20, (Member("n", 1, 0), Member("w", 6, 32))),  # 7
            Struct("ends_in_int", 20, (Member("name", 4, 0), Member("n", 1, 128))),  # 8
            Union("either", 13, (Member("n", 1, 0), Member("data", 4, 0))),  # 9
            Struct("bits", 16, (Member("flag", 1, 0, 1), Member("data", 4, 8))),  # 10: a bitfield in the head
        ]
    )


def test_a_record_cut_short_in_its_trailing_array_decodes_what_is_there() -> None:
    spec = blob_spec()
    decode = record_decoder(spec, "struct blob")
    head = struct.pack("<QI", 9, 5)
    record = decode(head + b"hello")  # what a producer submits: the head and the used part of data
    assert (record.ts, record.len, record.data) == (9, 5, b"hello")
    assert decode(head).data == b""  # nothing of the array: still a record
    assert decode(head + b"x" * 13).data == b"x" * 13  # the whole array, without the struct's padding
    assert decode(head + b"x" * 13 + bytes(3)).data == b"x" * 13  # the full size: as before
    assert decode(head + b"x" * 20).data == b"x" * 13  # longer: leading bytes, as before
    assert type(decode(head)) is type(decode(head + bytes(16)))  # one record class either way


def test_a_record_shorter_than_its_fixed_head_is_an_error_naming_the_type_and_sizes() -> None:
    decode = record_decoder(blob_spec(), "struct blob")
    with pytest.raises(
        CodecError,
        match=r"^record: struct blob takes 32 bytes \(at least 12, the part before its trailing array 'data'\), "
        r"the record has 11$",
    ):
        decode(bytes(11))
    with pytest.raises(CodecError, match=r"struct ends_in_int takes 20 bytes, the record has 19$"):
        record_decoder(blob_spec(), "struct ends_in_int")(bytes(19))  # its array is not at the end
    with pytest.raises(CodecError, match=r"union either takes 13 bytes, the record has 12$"):
        record_decoder(blob_spec(), "union either")(bytes(12))  # a union has no head and tail
    with pytest.raises(CodecError, match=r"struct bits takes 16 bytes \(at least 1, .*'data'\), the record has 0"):
        record_decoder(blob_spec(), "struct bits")(b"")
    bits = record_decoder(blob_spec(), "struct bits")(b"\x01ab")
    assert (bits.flag, bits.data) == (1, b"ab")


def test_a_cut_short_array_of_wider_elements_keeps_its_whole_elements() -> None:
    decode = record_decoder(blob_spec(), "struct words")
    body = struct.pack("<5I", 3, 10, 11, 12, 13)
    assert decode(body[:4]).w == []
    assert decode(body[:12]).w == [10, 11]
    assert decode(body[:15]).w == [10, 11]  # 3 bytes of the third element: not an element
    assert decode(body).w == [10, 11, 12, 13]


def test_exact_still_refuses_longer_records_but_takes_a_cut_short_tail() -> None:
    decode = record_decoder(blob_spec(), "struct blob", exact=True)
    assert decode(struct.pack("<QI", 1, 2) + b"ab").data == b"ab"
    with pytest.raises(CodecError, match="takes 32 bytes"):
        decode(bytes(33))


def test_strings_decodes_char_arrays_to_str_up_to_the_first_nul() -> None:
    spec = Spec.from_types(
        [
            CHAR,  # 1
            U8,  # 2
            Array(1, 1, 8),  # 3: char[8]
            Array(2, 1, 6),  # 4: u8[6]
            Typedef("text_t", 3),  # 5
            Const(5),  # 6
            Array(3, 1, 2),  # 7: char[2][8]
            Struct("ev", 38, (Member("comm", 3, 0), Member("mac", 4, 64), Member("t", 6, 112), Member("n", 7, 176))),
        ]
    )
    data = b"bash\0xyz" + b"\x00\x01\x02\xfd\xfe\xff" + b"t\0" + bytes(6) + b"ab" + bytes(6) + b"cdefghij"
    plain = record_decoder(spec, "struct ev")(data)
    assert (plain.comm, plain.n) == (b"bash\0xyz", [b"ab" + bytes(6), b"cdefghij"])  # bytes stays the default
    text = record_decoder(spec, "struct ev", strings=True)(data)
    assert text.comm == "bash"  # trimmed at the first NUL: what came after it is gone
    assert text.mac == b"\x00\x01\x02\xfd\xfe\xff"  # __u8 arrays are data, not text
    assert text.t == "t"  # through a typedef and a qualifier
    assert text.n == ["ab", "cdefghij"]  # no NUL: the whole array
    assert record_decoder(spec, "struct ev", strings=True)(b"\xff\xfeab" + bytes(34)).comm == "\ufffd\ufffdab"


def test_strings_in_a_cut_short_tail() -> None:
    decode = record_decoder(blob_spec(), "struct blob", strings=True)
    head = struct.pack("<QI", 1, 2)
    assert decode(head + b"hi\0junk").data == "hi"
    assert decode(head + b"hi").data == "hi"
    assert decode(head).data == ""
