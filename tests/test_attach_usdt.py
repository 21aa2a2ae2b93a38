"""USDT without the kernel: the x86-64 argument grammar, the spec record's layout, the note format."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynbpf._attach.usdt import SpecIds
from dynbpf._attach.usdt_notes import UsdtNote, UsdtNoteError, UsdtSite, _notes, _Segment, _site, read_notes
from dynbpf._attach.usdt_spec import (
    MAX_ARGS,
    REGISTERS,
    SPEC_SIZE,
    ArgKind,
    UsdtArg,
    UsdtSpecError,
    encode_spec,
    parse_arg,
    parse_args,
)
from tests.bpfbuild import build
from tests.helpers import VMLINUX, bpftool_types, kernel_offsets, kernel_type

AX, DX, BP, SP, R8, IP = 80, 96, 32, 152, 72, 128


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("-4@%eax", UsdtArg(ArgKind.REG, 0, AX, 4, True)),
        ("8@%rax", UsdtArg(ArgKind.REG, 0, AX, 8, False)),
        ("2@%ax", UsdtArg(ArgKind.REG, 0, AX, 2, False)),
        ("-1@%al", UsdtArg(ArgKind.REG, 0, AX, 1, True)),
        ("1@%dil", UsdtArg(ArgKind.REG, 0, 112, 1, False)),
        ("-1@%r8b", UsdtArg(ArgKind.REG, 0, R8, 1, True)),
        ("2@%r8w", UsdtArg(ArgKind.REG, 0, R8, 2, False)),
        ("4@%r8d", UsdtArg(ArgKind.REG, 0, R8, 4, False)),
        ("8@-8(%rbp)", UsdtArg(ArgKind.REG_DEREF, (1 << 64) - 8, BP, 8, False)),
        ("-4@1204(%rsp)", UsdtArg(ArgKind.REG_DEREF, 1204, SP, 4, True)),
        ("8@(%rdx)", UsdtArg(ArgKind.REG_DEREF, 0, DX, 8, False)),
        ("-4@$5", UsdtArg(ArgKind.CONST, 5, 0, 4, True)),
        ("-4@$-9", UsdtArg(ArgKind.CONST, (1 << 64) - 9, 0, 4, True)),
        ("8@$0x10", UsdtArg(ArgKind.CONST, 16, 0, 8, False)),
        ("8@%rip", UsdtArg(ArgKind.REG, 0, IP, 8, False)),
    ],
)
def test_argument_specs(spec: str, expected: UsdtArg) -> None:
    assert parse_arg(spec) == expected


def test_a_note_s_arguments_and_their_narrowing() -> None:
    args = parse_args("-1@%sil 1@%r8b -2@%ax 2@%r9w -4@%edx 4@%r10d -8@%rcx 8@%rdi")
    assert [(a.size, a.signed, a.bitshift) for a in args] == [
        (1, True, 56),
        (1, False, 56),
        (2, True, 48),
        (2, False, 48),
        (4, True, 32),
        (4, False, 32),
        (8, True, 0),
        (8, False, 0),
    ]
    assert parse_args("") == ()
    assert len(parse_args(" ".join(["8@%rax"] * MAX_ARGS))) == MAX_ARGS


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("8@counter(%rip)", "unsupported argument #0 spec '8@counter(%rip)'"),
        ("8@(%rax,%rdx,8)", "no symbol(%rip) or scaled-index"),
        ("3@%eax", "size 3 is not 1, 2, 4 or 8"),
        ("-4@%ah", "no x86-64 register %ah in struct pt_regs"),
        ("4@-8(%xmm0)", "no x86-64 register %xmm0"),
        ("%eax", "unsupported argument #0 spec '%eax'"),
        ("8@$99999999999999999999", "does not fit in 64 bits"),
    ],
)
def test_unsupported_specs_are_named(spec: str, says: str) -> None:
    with pytest.raises(UsdtSpecError) as refused:
        parse_arg(spec)
    assert says in str(refused.value)


def test_too_many_arguments() -> None:
    with pytest.raises(UsdtSpecError, match=r"13 arguments .* at most 12"):
        parse_args(" ".join(["8@%rax"] * 13))


def test_the_second_bad_argument_is_numbered() -> None:
    with pytest.raises(UsdtSpecError, match="argument #1 spec '4@%foo'"):
        parse_args("8@%rax 4@%foo")


@pytest.mark.needs_bpftool
def test_register_offsets_are_the_kernel_s_pt_regs() -> None:
    """Each register name's offset is ``offsetof(struct pt_regs, <register>)`` in the running kernel's BTF."""
    if not VMLINUX.exists():
        pytest.skip("no kernel BTF to compare with")
    fields = kernel_offsets(kernel_type("STRUCT", "pt_regs"))
    full = {"rip": "ip", "rax": "ax", "rbx": "bx", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di"}
    full |= {"rbp": "bp", "rsp": "sp"} | {f"r{n}": f"r{n}" for n in range(8, 16)}
    for name, field in full.items():
        assert REGISTERS[name] == fields[field], name
    assert len(set(REGISTERS.values())) == len(full)


def _btf_struct(types: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t for t in types if t["kind"] == "STRUCT" and t["name"] == name)


@pytest.mark.needs_clang
@pytest.mark.needs_bpftool
def test_spec_layout_is_the_one_usdt_bpf_h_compiles_to() -> None:
    """What encode_spec writes sits where the fixture's usdt.bpf.h reads it (its BTF, as clang laid it out)."""
    types = bpftool_types(build("usdt"))
    spec = _btf_struct(types, "__bpf_usdt_spec")
    arg = _btf_struct(types, "__bpf_usdt_arg_spec")
    assert spec["size"] == SPEC_SIZE
    spec_offsets = {m["name"]: m["bits_offset"] // 8 for m in spec["members"]}
    assert spec_offsets == {"args": 0, "usdt_cookie": MAX_ARGS * arg["size"], "arg_cnt": MAX_ARGS * arg["size"] + 8}
    arg_offsets = {m["name"]: m["bits_offset"] // 8 for m in arg["members"]}
    assert arg_offsets == {"val_off": 0, "arg_type": 8, "reg_off": 12, "arg_signed": 14, "arg_bitshift": 15}
    enum = next(t for t in types if t["kind"] == "ENUM" and t["name"] == "__bpf_usdt_arg_type")
    assert {v["name"]: v["val"] for v in enum["values"]} == {
        "BPF_USDT_ARG_CONST": ArgKind.CONST,
        "BPF_USDT_ARG_REG": ArgKind.REG,
        "BPF_USDT_ARG_REG_DEREF": ArgKind.REG_DEREF,
    }
    record = encode_spec(parse_args("-4@-20(%rbp) 2@%ax"), cookie=0x1122334455667788)
    assert len(record) == SPEC_SIZE
    assert struct.unpack_from("<QIhBb", record, 0) == ((1 << 64) - 20, ArgKind.REG_DEREF, BP, 1, 32)
    assert struct.unpack_from("<QIhBb", record, 16) == (0, ArgKind.REG, AX, 0, 48)
    assert record[32 : MAX_ARGS * 16] == bytes(MAX_ARGS * 16 - 32)
    assert struct.unpack_from("<Qh", record, MAX_ARGS * 16) == (0x1122334455667788, 2)


# --- notes ---------------------------------------------------------------------------------------


def _note(desc: bytes, *, owner: bytes = b"stapsdt", kind: int = 3) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return struct.pack("<III", len(owner) + 1, len(desc), kind) + pad(owner + b"\0") + pad(desc)


def _desc(addresses: tuple[int, int, int], provider: str, name: str, args: str) -> bytes:
    return struct.pack("<QQQ", *addresses) + f"{provider}\0{name}\0{args}\0".encode()


def test_notes_decode_and_skip_other_owners() -> None:
    data = _note(_desc((0x1130, 0x2004, 0), "p", "a", "-4@%eax")) + _note(b"xx", owner=b"GNU", kind=1)
    data += _note(_desc((0x1140, 0x2004, 0x4010), "p", "b", ""))
    notes = list(_notes("f", data, 8, "<"))
    assert [(n.provider, n.name, n.pc, n.semaphore, n.args) for n in notes] == [
        ("p", "a", 0x1130, 0, "-4@%eax"),
        ("p", "b", 0x1140, 0x4010, ""),
    ]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_note(_desc((1, 2, 3), "p", "n", "a"))[:-8], "runs past the section's end"),
        (_note(b"\0" * 10), "too short for its three addresses"),
        (_note(struct.pack("<QQQ", 1, 2, 3) + b"p\0n"), "lacks its provider, name or arguments"),
        (_note(struct.pack("<QQQ", 1, 2, 3) + b"\xff\0n\0a\0"), "not UTF-8"),
    ],
)
def test_malformed_notes_name_the_file(data: bytes, says: str) -> None:
    with pytest.raises(UsdtNoteError, match=r"^f: "):
        list(_notes("f", data, 8, "<"))
    with pytest.raises(UsdtNoteError) as refused:
        list(_notes("f", data, 8, "<"))
    assert says in str(refused.value)


@given(st.binary(max_size=300))
def test_arbitrary_note_bytes_raise_only_usdt_note_errors(data: bytes) -> None:
    with contextlib.suppress(UsdtNoteError):
        list(_notes("f", data, 8, "<"))


def test_files_without_notes_or_not_elf(tmp_path: Path) -> None:
    assert read_notes("/bin/true") == ()
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(UsdtNoteError, match=f"cannot read the ELF headers of {junk}"):
        read_notes(str(junk))
    with pytest.raises(UsdtNoteError, match="cannot read /nonexistent"):
        read_notes("/nonexistent")


def test_spec_ids_are_the_lowest_free_below_the_capacity() -> None:
    ids = SpecIds()
    assert ids.take(2, 4) == [0, 1]
    assert ids.take(3, 4) is None  # all or nothing
    assert ids.take(1, 4) == [2]
    ids.give([0])
    assert ids.take(2, 4) == [0, 3]
    assert ids.used == {0, 1, 2, 3}


def test_sites_move_with_stapsdt_base_and_become_file_offsets() -> None:
    """A prelinked file: the site moves as far as .stapsdt.base did; offsets come from the holding segment."""
    code, data = _Segment(0x401000, 0x1000, 0x1000, True), _Segment(0x403E00, 0x300, 0x2E00, False)
    note = UsdtNote("p", "n", pc=0x401130, base=0x402004, semaphore=0x404010, args="")
    assert _site("f", note, 0x402004, [code, data]) == UsdtSite(note, 0x1130, 0x2E00 + 0x210)
    assert _site("f", note, 0x402104, [code, data]).offset == 0x1230  # .stapsdt.base moved by 0x100
    assert _site("f", note, None, [code, data]).offset == 0x1130  # no .stapsdt.base section: as recorded
    with pytest.raises(UsdtNoteError, match=r"USDT probe p:n of f: its address 0x401130 lies in no loadable segment"):
        _site("f", note, None, [data])
    with pytest.raises(UsdtNoteError, match="its semaphore at 0x404010 lies in an executable segment"):
        _site("f", note, None, [code, _Segment(0x403E00, 0x300, 0x2E00, True)])
    with pytest.raises(UsdtNoteError, match="lies in a segment that is not executable"):
        _site("f", note, None, [_Segment(0x401000, 0x1000, 0x1000, False)])
