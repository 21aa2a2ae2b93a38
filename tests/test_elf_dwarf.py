"""Record types from DWARF: clang's own objects, translated and decoded by the same codecs as their BTF.

tests/bpf/dwarf_records.bpf.c declares its records the way tools do (local variables only: in
DWARF, not in BTF) and anchors ``struct rich`` and ``struct flex`` into BTF as well, so the
same types can be decoded both ways. No kernel is needed here; tests/test_kernel_dwarf_records.py
decodes records a running program wrote.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dynbpf import _elf as elf
from dynbpf._btf import Spec
from dynbpf._btf.kinds import Kind
from dynbpf._elf.dwarf import translate
from dynbpf._elf.image import Image
from dynbpf._maps import CodecError
from dynbpf._maps.codec import (
    ArrayCodec,
    BytesCodec,
    Codec,
    EnumCodec,
    ScalarCodec,
    StructCodec,
    codec_for,
    find_record_type,
    record_decoder,
)
from dynbpf._runtime.records import decoder
from dynbpf.errors import ObjectFormatError, OptionError
from tests import bpfbuild

pytestmark = pytest.mark.needs_clang

RICH = "struct rich"
ONLY_IN_DWARF = ("struct event", "struct blob", "enum rec_sign", "enum rec_wide")


@pytest.fixture(scope="module")
def obj() -> elf.ObjectSpec:
    return elf.read(bpfbuild.build("dwarf_records"))


def dwarf_of(obj: elf.ObjectSpec) -> Spec:
    assert obj.dwarf is not None
    return obj.dwarf.spec()


def clang_major() -> int:
    m = re.search(r"clang version (\d+)", bpfbuild.clang_version())
    assert m, bpfbuild.clang_version()
    return int(m.group(1))


def shape(c: Codec, *, lossy_enums: bool = False) -> Any:
    """Everything a codec decodes by: kinds, names, sizes, offsets and bit positions, enumerators.

    ``lossy_enums``: compare enums as clang < 15 writes them into BTF (no signed flag, 32 bits
    of each enumerator), for types whose BTF came from such a clang.
    """
    if isinstance(c, StructCodec):
        fields = []
        for f in c.fields:
            where = ("bits", f.bit_offset, f.bits) if hasattr(f, "bits") else ("byte", f.offset)
            fields.append((f.name, where, shape(f.codec, lossy_enums=lossy_enums)))
        return ("struct", c.name, c.size, tuple(fields))
    if isinstance(c, ArrayCodec):
        return ("array", c.name, c.length, shape(c.element, lossy_enums=lossy_enums))
    if isinstance(c, EnumCodec):
        if lossy_enums:
            return ("enum", c.name, c.size, tuple((n, v & 0xFFFFFFFF) for n, v in c.by_name.items()))
        return ("enum", c.name, c.size, c.signed, tuple(c.by_name.items()))
    if isinstance(c, ScalarCodec | BytesCodec):
        return (type(c).__name__, c.name, c.size, c.signed)
    return (type(c).__name__, c.name, c.size)


def test_records_used_only_as_locals_are_in_dwarf_and_not_in_btf(obj: elf.ObjectSpec) -> None:
    assert obj.btf is not None
    dwarf = dwarf_of(obj)
    for name in ONLY_IN_DWARF:
        assert find_record_type(obj.btf, name) is None, name  # else the fixture tests nothing
        assert find_record_type(dwarf, name) is not None, name
    assert find_record_type(obj.btf, RICH) is not None
    assert dwarf_of(obj) is dwarf  # translated once
    assert dwarf.section == ".debug_info"


def test_a_rich_struct_decodes_alike_from_btf_and_dwarf(obj: elf.ObjectSpec) -> None:
    assert obj.btf is not None
    dwarf = dwarf_of(obj)
    from_btf = codec_for(obj.btf, find_record_type(obj.btf, RICH) or 0)
    from_dwarf = codec_for(dwarf, find_record_type(dwarf, RICH) or 0)
    assert shape(from_dwarf) == shape(from_btf)
    assert isinstance(from_dwarf, StructCodec)
    names = [f.name for f in from_dwarf.fields]
    assert names == [
        *("ts", "pid", "op", "comm", "where", "value", "grid", "names", "flag", "level", "delta", "small_op"),
        *("as_u32", "as_bytes", "x", "y", "ptr", "name", "callback", "ok", "negative", "mac"),
    ]  # the anonymous union and struct flattened, as from BTF
    rng = random.Random(16)
    for strings in (False, True):
        btf_decode = record_decoder(obj.btf, RICH, strings=strings)
        dwarf_decode = record_decoder(dwarf, find_record_type(dwarf, RICH) or 0, strings=strings)
        for _ in range(200):
            data = rng.randbytes(from_btf.size)
            a, b = btf_decode(data), dwarf_decode(data)
            assert b == a
            _same_kinds(a, b)


def _is_enum(value: object) -> bool:
    return hasattr(type(value), "__members__")


def _same_kinds(a: Any, b: Any) -> None:
    """Field by field: the same Python kinds (each codec makes its own IntEnum, so enums compare by name)."""
    for (name, x), y in zip(a._items(), b._asdict().values(), strict=True):
        if _is_enum(x) or _is_enum(y):
            assert (type(x).__name__, getattr(x, "name", None)) == (type(y).__name__, getattr(y, "name", None)), name
        elif hasattr(x, "_items"):
            _same_kinds(x, y)
        else:
            assert type(x) is type(y), name


@pytest.mark.parametrize("fixture", ["dwarf_records", "maps_codec", "events", "core_heavy"])
def test_every_type_in_both_btf_and_dwarf_gets_the_same_codec(fixture: str) -> None:
    """core_heavy brings hundreds of kernel types (vmlinux.h) through CO-RE: bitfields, unions, nesting."""
    o = elf.read(bpfbuild.build(fixture))
    assert o.btf is not None
    dwarf = dwarf_of(o)
    lossy = clang_major() < 15
    words = {Kind.STRUCT: "struct ", Kind.UNION: "union ", Kind.ENUM: "enum ", Kind.ENUM64: "enum ", Kind.TYPEDEF: ""}
    compared = 0
    for type_id, t in o.btf.types():
        if t.kind not in words or not t.name:
            continue
        theirs = find_record_type(dwarf, words[t.kind] + t.name)
        assert theirs is not None, t
        try:
            mine = codec_for(o.btf, type_id)
        except CodecError:  # a member only declared there (a kernel type behind a pointer in vmlinux.h): no value
            continue
        assert shape(codec_for(dwarf, theirs), lossy_enums=lossy) == shape(mine, lossy_enums=lossy), t.name
        compared += 1
    assert compared >= {"core_heavy": 100}.get(fixture, 5)


def test_dwarf_keeps_the_enum_values_clang_14_btf_loses() -> None:
    """maps_codec's sample_rec: a negative enumerator and a 64-bit one (clang 14's BTF has neither)."""
    o = elf.read(bpfbuild.build("maps_codec"))
    assert o.btf is not None
    var = o.variables["sample_rec"]
    dwarf = dwarf_of(o)
    from_dwarf = record_decoder(dwarf, "struct rec", exact=True)(var.initial)
    from_btf = record_decoder(o.btf, "struct rec", exact=True)(var.initial)
    assert (from_dwarf.d, from_dwarf.d.name) == (-2, "MINUS_TWO")
    assert (from_dwarf.w, from_dwarf.w.name) == (0x123456789A, "HUGE")
    assert {k: v for k, v in from_dwarf._asdict().items() if k not in "dw"} == {
        k: v for k, v in from_btf._asdict().items() if k not in "dw"
    }
    assert codec_for(dwarf, find_record_type(dwarf, "struct rec") or 0).encode(from_dwarf) == var.initial


def test_flexible_array_members_have_no_elements(obj: elf.ObjectSpec) -> None:
    dwarf = dwarf_of(obj)
    flex = record_decoder(dwarf, "struct flex")
    assert flex(b"\x03\0\0\0").items == []
    assert flex(b"\x03\0\0\0\x01\0\x02\0").items == []  # the payload after the head is not the array's
    assert obj.btf is not None
    assert shape(codec_for(dwarf, find_record_type(dwarf, "struct flex") or 0)) == shape(
        codec_for(obj.btf, find_record_type(obj.btf, "struct flex") or 0)
    )


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (("-gdwarf-2",), ("DW_AT_data_member_location", "DW_FORM_block1")),  # DW_OP_plus_uconst locations
        (("-gdwarf-3",), ("DW_AT_data_member_location", "DW_FORM_udata")),
        (("-gdwarf-4",), ("DW_AT_bit_offset", "DW_FORM_data1")),  # bitfields from the storage unit's top
        (("-gdwarf-4", "-glldb"), ("DW_AT_data_bit_offset", "DW_FORM_data2")),  # bitfields from the struct's start
        (("-gdwarf-5", "-glldb"), ("DW_AT_data_bit_offset", "DW_FORM_data2")),
    ],
)
def test_each_dwarf_version_and_bitfield_encoding_translates_alike(
    obj: elf.ObjectSpec, flags: tuple[str, ...], expect: tuple[str, str]
) -> None:
    source = (bpfbuild.FIXTURES / "dwarf_records.bpf.c").read_text()
    path = bpfbuild.compile_source(source, "dwarf_records", [*bpfbuild.CFLAGS, *flags])
    assert expect in _member_attribute_forms(path)  # the encoding this case is about is really there
    variant = dwarf_of(elf.read(path))
    dwarf = dwarf_of(obj)
    for name in (RICH, "struct event", "struct blob", "struct flex"):
        mine = codec_for(variant, find_record_type(variant, name) or 0)
        assert shape(mine) == shape(codec_for(dwarf, find_record_type(dwarf, name) or 0)), name


def _member_attribute_forms(path: Path) -> set[tuple[str, str]]:
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as f:
        return {
            (name, attr.form)
            for cu in ELFFile(f).get_dwarf_info(relocate_dwarf_sections=False).iter_CUs()
            for die in cu.iter_DIEs()
            if die.tag == "DW_TAG_member"
            for name, attr in die.attributes.items()
        }


# --- looking records up in an object: BTF, then DWARF ------------------------------------------


def test_records_are_found_in_btf_first_then_in_dwarf(obj: elf.ObjectSpec) -> None:
    from dynbpf._runtime.records import record_type

    assert record_type(obj, RICH)[0] is obj.btf
    assert record_type(obj, "rich")[0] is obj.btf
    assert record_type(obj, "struct event")[0] is dwarf_of(obj)
    assert record_type(obj, "rec_sign")[0] is dwarf_of(obj)  # a bare name: an enum only the records use
    event = decoder(obj, "struct event", strings=True)(bytes(8) + b"\x07\0\0\0" + b"\x02\0\0\0" + b"sh" + bytes(70))
    assert (event.pid, event.op.name, event.comm) == (7, "ROP_CLOSE", "sh")


def test_a_type_in_neither_names_the_type_and_the_object(obj: elf.ObjectSpec) -> None:
    with pytest.raises(
        CodecError,
        match=r"^record='struct  nope': object 'dwarf_records' has no type 'struct nope', neither in its BTF nor in "
        r"its DWARF$",
    ):
        decoder(obj, "struct  nope")


@pytest.mark.needs_llvm_objcopy
def test_an_object_without_dwarf_says_so(tmp_path: Path) -> None:
    stripped = tmp_path / "dwarf_records.bpf.o"
    subprocess.run(["llvm-objcopy", "--strip-debug", str(bpfbuild.build("dwarf_records")), str(stripped)], check=True)
    o = elf.read(stripped)
    assert o.btf is not None
    assert o.dwarf is None
    assert decoder(o, RICH)(bytes(200)).ts == 0  # what BTF has still decodes
    with pytest.raises(
        CodecError,
        match=r"^record='struct event': object 'dwarf_records' has no type 'struct event' in its BTF, and no "
        r"DWARF \(\.debug_info\) to look in \(compile it with -g and keep the debug sections\)$",
    ):
        decoder(o, "struct event")


def test_an_object_without_btf_or_dwarf_is_an_option_error() -> None:
    o = elf.read(bpfbuild.build("legacy_maps", ("-g0",)))
    assert (o.btf, o.dwarf) == (None, None)
    with pytest.raises(OptionError, match=r"record='struct x': object 'legacy_maps' has no BTF and no DWARF"):
        decoder(o, "struct x")
    with pytest.raises(OptionError, match="has no BTF, so type ids mean nothing"):
        decoder(o, 3)


def test_malformed_dwarf_is_an_object_format_error_naming_debug_info() -> None:
    data = bytearray(bpfbuild.build("dwarf_records").read_bytes())
    image = Image(bytes(data))
    for section in (".debug_info", ".debug_abbrev"):
        broken = bytearray(data)
        sec = image.by_name[section]
        broken[sec.offset : sec.offset + sec.size] = b"\xff" * sec.size
        with pytest.raises(ObjectFormatError, match=r"cannot read the DWARF types") as e:
            translate(bytes(broken))
        assert e.value.section == ".debug_info", section
        o = elf.read(bytes(broken))  # the object still reads: DWARF is translated only when asked for
        with pytest.raises(ObjectFormatError):
            decoder(o, "struct event")
