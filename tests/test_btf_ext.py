""".BTF.ext: records agree with the ELF symbols and the source, odd record sizes, malformed input."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from dynbpf._btf import (
    CoreRelo,
    CoreReloKind,
    ExtInfo,
    FuncInfo,
    LineInfo,
    NameNotFound,
    Spec,
    encode_ext,
    parse_ext,
)
from dynbpf._btf.types import Func, Struct, Union
from dynbpf.errors import ObjectFormatError
from tests.bpfbuild import build, fixture_names
from tests.helpers import btf_sections

pytestmark = pytest.mark.needs_clang


def function_symbols(obj: Path) -> dict[tuple[str, int], str]:
    """(section name, offset) -> name of every FUNC symbol."""
    out = {}
    with obj.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC":
                out[(elf.get_section(sym["st_shndx"]).name, sym["st_value"])] = sym.name
    return out


@pytest.mark.parametrize("name", fixture_names())
def test_func_info_names_the_function_at_each_offset(name: str) -> None:
    obj = build(name)
    btf, ext = btf_sections(obj)
    spec = Spec.parse(btf)
    info = parse_ext(ext, spec)
    symbols = function_symbols(obj)
    seen = 0
    for section, funcs in info.func_info.items():
        for fi in funcs:
            func = spec[fi.type]
            assert isinstance(func, Func)
            assert symbols[(section, fi.insn_off)] == func.name
            seen += 1
    assert seen == len(symbols)


@pytest.mark.parametrize("name", fixture_names())
def test_line_info_quotes_the_source_line(name: str) -> None:
    btf, ext = btf_sections(build(name))
    info = parse_ext(ext, Spec.parse(btf))
    assert info.line_info
    for lines in info.line_info.values():
        assert [li.insn_off for li in lines] == sorted(li.insn_off for li in lines)
        for li in lines:
            assert li.insn_off % 8 == 0
            if li.line_num == 0:  # code the compiler made up (no source location)
                assert (li.line, li.column) == ("", 0)
                continue
            source = Path(li.file_name).read_text().splitlines()
            assert source[li.line_num - 1] == li.line, li
            assert 0 <= li.column <= len(li.line) + 1


@pytest.mark.parametrize("name", fixture_names())
def test_core_relos_are_well_formed(name: str) -> None:
    btf, ext = btf_sections(build(name))
    spec = Spec.parse(btf)
    for relos in parse_ext(ext, spec).core_relos.values():
        for r in relos:
            assert re.fullmatch(r"\d+(:\d+)*", r.access), r
            assert r.insn_off % 8 == 0
            if r.kind in (CoreReloKind.FIELD_BYTE_OFFSET, CoreReloKind.FIELD_EXISTS) and ":" in r.access:
                assert spec[r.type] is not None


def arith() -> tuple[Spec, bytes, ExtInfo]:
    btf, ext = btf_sections(build("arith"))
    spec = Spec.parse(btf)
    return spec, ext, parse_ext(ext, spec)


def test_arith_records() -> None:
    spec, _, info = arith()
    (func_id,) = spec.find("xdp_len_mod")
    assert info.func_info == {"xdp": (FuncInfo(0, func_id),)}
    (xdp_md,) = spec.find("xdp_md")
    assert isinstance(spec[xdp_md], Struct | Union)
    assert info.core_relos["xdp"] == (
        CoreRelo(0, xdp_md, "0:0", CoreReloKind.FIELD_BYTE_OFFSET),
        CoreRelo(8, xdp_md, "0:1", CoreReloKind.FIELD_BYTE_OFFSET),
    )
    first = info.line_info["xdp"][0]
    assert first.file_name.endswith("tests/bpf/arith.bpf.c")
    assert "ctx->data_end - ctx->data" in first.line


def widen(ext: bytes, extra: int) -> bytes:
    """Re-lay ``ext`` with every record ``extra`` bytes longer (junk-filled), as a newer compiler might."""
    magic, version, flags, hdr_len, *regions = struct.unpack_from("<HBBI6I", ext)
    out = [b""] * 3
    for r in range(3):
        off, length = regions[2 * r], regions[2 * r + 1]
        if not length:
            continue
        blob = ext[hdr_len + off : hdr_len + off + length]
        (rec_size,) = struct.unpack_from("<I", blob)
        parts, pos = [struct.pack("<I", rec_size + extra)], 4
        while pos < len(blob):
            parts.append(blob[pos : pos + 8])
            (count,) = struct.unpack_from("<I", blob, pos + 4)
            pos += 8
            for _ in range(count):
                parts.append(blob[pos : pos + rec_size] + b"\xa5" * extra)
                pos += rec_size
        out[r] = b"".join(parts)
    lens = [len(x) for x in out]
    header = struct.pack("<HBBI6I", magic, version, flags, 32, 0, lens[0], lens[0], lens[1], lens[0] + lens[1], lens[2])
    return header + b"".join(out)


@pytest.mark.parametrize("extra", [4, 16])
def test_larger_record_sizes_are_tolerated(extra: int) -> None:
    spec, ext, info = arith()
    wide = widen(ext, extra)
    assert wide != ext
    assert parse_ext(wide, spec) == info
    assert encode_ext(parse_ext(wide, spec), spec) == ext


def test_header_without_core_region_is_accepted() -> None:
    spec, ext, info = arith()
    _, _, _, hdr_len, f_off, f_len, l_off, l_len, _, _ = struct.unpack_from("<HBBI6I", ext)
    short = (
        struct.pack("<HBBI4I", 0xEB9F, 1, 0, 24, f_off, f_len, l_off, l_len) + ext[hdr_len : hdr_len + f_len + l_len]
    )
    parsed = parse_ext(short, spec)
    assert parsed.func_info == info.func_info
    assert parsed.line_info == info.line_info
    assert parsed.core_relos == {}


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _bad_cases(ext: bytes) -> list[tuple[bytes, str, int | None]]:
    hdr = 32
    func_region = hdr  # func_info_off is 0 in LLVM's layout
    (line_off,) = struct.unpack_from("<I", ext, 16)
    (core_off,) = struct.unpack_from("<I", ext, 24)
    return [
        (ext[:6], "shorter than its header", 0),
        (_patch(ext, 0, "<H", 0x1234), "bad .BTF.ext magic", 0),
        (_patch(ext, 2, "<B", 2), "version 2", 2),
        (_patch(ext, 4, "<I", 16), "header length 16", 4),
        (_patch(ext, 12, "<I", 1 << 20), "func_info region runs past the end", 8),
        (_patch(ext, func_region, "<I", 4), "record size 4", func_region),
        (_patch(ext, func_region, "<I", 10), "record size 10", func_region),
        (_patch(ext, func_region + 8, "<I", 0), "without records", func_region + 4),
        (_patch(ext, func_region + 8, "<I", 1000), "runs past the region", func_region + 12),
        (_patch(ext, func_region + 4, "<I", 1 << 30), "string offset", func_region + 4),
        (_patch(ext, hdr + line_off + 4 + 8 + 4, "<I", 1 << 30), "string offset", hdr + line_off + 12),
        (_patch(ext, hdr + core_off + 4 + 8 + 12, "<I", 13), "unknown CO-RE relocation kind 13", hdr + core_off + 12),
    ]


@pytest.mark.parametrize("case", range(12))
def test_malformed_ext_is_an_object_format_error(case: int) -> None:
    spec, ext, _ = arith()
    blob, message, offset = _bad_cases(ext)[case]
    with pytest.raises(ObjectFormatError, match=message) as e:
        parse_ext(blob, spec, section="arith.o:.BTF.ext")
    assert e.value.section == "arith.o:.BTF.ext"
    assert e.value.offset == offset


def test_encoding_needs_strings_already_in_btf() -> None:
    spec, _, info = arith()
    bad = ExtInfo({"nowhere": info.func_info["xdp"]}, {}, {})
    with pytest.raises(NameNotFound, match="nowhere"):
        encode_ext(bad, spec)
    line = LineInfo(0, "x.c", "not in the table", 1, 1)
    with pytest.raises(NameNotFound):
        encode_ext(ExtInfo({}, {"xdp": (line,)}, {}), spec)


def test_ext_info_is_read_only() -> None:
    _, _, info = arith()
    with pytest.raises(TypeError):
        info.func_info["new"] = ()  # type: ignore[index]
