"""Hostile objects: mutated fixtures must give ObjectFormatError (or parse), never crash or hang.

Mutations aim at the structures a parser trusts — ELF and section headers,
symbol and relocation tables, BTF and .BTF.ext, map definitions, code — with
values that break bounds (0, all-ones, huge, off-by-one), plus truncation.
Runs are derandomized so CI sees the same examples every time, and bounded.
"""

from __future__ import annotations

import contextlib
import struct
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynbpf._elf import read
from dynbpf._elf.image import SHT_NOBITS, Image
from dynbpf.errors import ObjectFormatError
from tests.bpfbuild import build, fixture_names

FIXTURE_NAMES = fixture_names()
INTERESTING = [0, 1, 7, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1]
TARGET_SECTIONS = (".symtab", ".BTF", ".BTF.ext", ".maps", ".rel")

pytestmark = [pytest.mark.needs_clang, pytest.mark.timeout(300)]


@cache
def original(name: str) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """A fixture's bytes and the (start, length) regions worth mutating."""
    data = build(name).read_bytes()
    image = Image(data)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    regions = [(0, 64), (shoff, len(image.sections) * 64)]
    for s in image.sections:
        if (
            s.size
            and s.type != SHT_NOBITS
            and (s.executable or s.name.startswith(TARGET_SECTIONS) or s.name == "license")
        ):
            regions.append((s.offset, s.size))
    return data, tuple(regions)


def expect_clean(data: bytes) -> None:
    with contextlib.suppress(ObjectFormatError):
        read(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data, regions = original(draw(st.sampled_from(FIXTURE_NAMES)))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        start, length = draw(st.sampled_from(regions))
        width = draw(st.sampled_from([1, 2, 4, 8]))
        pos = start + draw(st.integers(0, max(0, length - width)))
        if pos + width > len(buf):
            continue
        value = draw(st.sampled_from(INTERESTING) | st.integers(0, (1 << (8 * width)) - 1)) % (1 << (8 * width))
        buf[pos : pos + width] = value.to_bytes(width, "little")
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        del buf[draw(st.integers(0, len(buf) - 1)) :]
    return bytes(buf)


@settings(
    max_examples=1500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_objects_fail_cleanly(data: bytes) -> None:
    expect_clean(data)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_truncation_point_of_the_headers_fails_cleanly(name: str) -> None:
    data, regions = original(name)
    cuts = {len(data) - 1, len(data) // 2, 63, 64, 65} | {start + length - 1 for start, length in regions}
    for cut in sorted(c for c in cuts if 0 < c < len(data)):
        with pytest.raises(ObjectFormatError):
            read(data[:cut])


def test_huge_declared_sizes_do_not_allocate() -> None:
    """A section claiming 2**60 bytes, or a symbol count to match, is refused before any reading."""
    data, _ = original(FIXTURE_NAMES[0])
    image = Image(data)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    for s in image.sections:
        if s.name in (".symtab", ".BTF") or s.executable:
            buf = bytearray(data)
            struct.pack_into("<Q", buf, shoff + s.index * 64 + 0x20, 1 << 60)  # sh_size
            with pytest.raises(ObjectFormatError):
                read(bytes(buf))


DWARF_SECTIONS = (".debug_info", ".debug_abbrev", ".debug_str_offsets", ".debug_str")


@st.composite
def mutated_dwarf(draw: st.DrawFn) -> bytes:
    """tests/bpf/dwarf_records.bpf.c with its DWARF sections mutated (the rest is fuzzed above)."""
    data = build("dwarf_records").read_bytes()
    image = Image(data)
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        s = image.by_name[draw(st.sampled_from(DWARF_SECTIONS))]
        width = draw(st.sampled_from([1, 2, 4]))
        pos = s.offset + draw(st.integers(0, s.size - width))
        value = draw(st.sampled_from(INTERESTING) | st.integers(0, (1 << (8 * width)) - 1)) % (1 << (8 * width))
        buf[pos : pos + width] = value.to_bytes(width, "little")
    return bytes(buf)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_dwarf())
def test_mutated_dwarf_translates_or_fails_cleanly(data: bytes) -> None:
    from dynbpf._elf.dwarf import translate

    with contextlib.suppress(ObjectFormatError):
        translate(data)
