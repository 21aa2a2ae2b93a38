"""The BTF offset index: kernel BTF lookups and clean errors on malformed input."""

from __future__ import annotations

import struct

import pytest

from dynbpf.btf import Kind, TypeTable, vmlinux
from dynbpf.errors import ObjectFormatError
from dynbpf.features.maps import local_storage_btf, raw_btf


def test_small_blob_types_and_names() -> None:
    table = TypeTable(local_storage_btf())
    assert len(table) == 4  # void + int + 2 structs
    assert table.find("val", Kind.STRUCT) == [3]
    assert table.name(2) == "bpf_spin_lock"
    assert table.header(3)[1:] == (Kind.STRUCT, 2, 8)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x9f\xeb", "shorter than its header"),
        (struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 0), "bad BTF magic"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 1000, 0, 0), "runs past the end"),
        (raw_btf(struct.pack("<III", 0, 31 << 24, 0), b"\0"), "unknown BTF kind"),
        (raw_btf(struct.pack("<III", 0, (4 << 24) | 5, 8), b"\0"), "runs past the type section"),
    ],
)
def test_malformed_btf_is_an_object_format_error(blob: bytes, message: str) -> None:
    with pytest.raises(ObjectFormatError, match=message):
        TypeTable(blob)


@pytest.mark.kernel
def test_vmlinux_is_indexed_once_and_finds_functions() -> None:
    table = vmlinux()
    assert table is not None
    assert len(table) > 10_000
    assert vmlinux() is table
    (task,) = table.find("task_struct", Kind.STRUCT)
    assert table.header(task)[1] == Kind.STRUCT
    assert table.find("no_such_type_hopefully", Kind.STRUCT) == []
