"""Mutated BTF and .BTF.ext: only ObjectFormatError escapes, every walk ends, and what decodes re-encodes."""

from __future__ import annotations

import contextlib
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynbpf._btf import Spec, format_type, parse_ext, resolve, size_of, skip_qualifiers
from dynbpf.errors import ObjectFormatError
from tests.bpfbuild import build
from tests.helpers import ALL_KINDS, btf_sections

pytestmark = pytest.mark.needs_clang


@cache
def arith() -> tuple[bytes, bytes]:
    return btf_sections(build("arith"))


@cache
def all_kinds() -> bytes:
    return Spec.from_types(ALL_KINDS).encode()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["byte", "word", "truncate", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "word" and len(data) >= 4:
            pos -= pos % 4
            data[pos : pos + 4] = draw(
                st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 24, 1 << 31])
            ).to_bytes(4, "little")
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def exercise(spec: Spec) -> None:
    """Everything a loader does with a Spec: decode, look up, walk, re-encode."""
    for type_id in range(len(spec)):
        t = spec[type_id]
        for helper in (resolve, skip_qualifiers, size_of, format_type):
            with contextlib.suppress(ObjectFormatError):
                helper(spec, type_id)
        if t is not None and t.name:
            assert type_id in spec.find(t.name, t.kind)
    again = Spec.parse(spec.encode())
    assert [t for _, t in again.types()] == [t for _, t in spec.types()]


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@FUZZ
@given(st.data())
def test_mutated_btf(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from([arith()[0], all_kinds()]))
    blob = data.draw(mutated(original))
    with contextlib.suppress(ObjectFormatError):
        exercise(Spec.parse(blob))


@FUZZ
@given(st.data())
def test_mutated_btf_ext(data: st.DataObject) -> None:
    btf, ext = arith()
    blob = data.draw(mutated(ext))
    with contextlib.suppress(ObjectFormatError):
        parse_ext(blob, Spec.parse(btf))


@FUZZ
@given(st.data())
def test_btf_ext_against_mutated_btf(data: st.DataObject) -> None:
    btf, ext = arith()
    try:
        spec = Spec.parse(data.draw(mutated(btf)))
        parse_ext(ext, spec)
    except ObjectFormatError:
        pass
