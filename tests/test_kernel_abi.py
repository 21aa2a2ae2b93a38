"""Every attr/info struct offset and every enum value, checked against the running kernel's BTF.

bpftool dumps the kernel's own description of ``union bpf_attr`` and friends,
so this catches a wrong offset on exactly the kernel the tests run on.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from dynbpf._sys import attrs, constants, perf
from tests.helpers import ctypes_offsets, kernel_offsets, kernel_type, kernel_types

pytestmark = [pytest.mark.kernel, pytest.mark.needs_bpftool]


#: each struct, and where the kernel describes it inside union bpf_attr: a named member,
#: or (None) the unnamed member that contains the given field
ATTR_STRUCTS: list[tuple[type[ctypes.Structure], str | None, str]] = [
    (attrs.MapCreateAttr, None, "map_type"),
    (attrs.MapElemAttr, None, "map_fd"),
    (attrs.MapBatchAttr, "batch", ""),
    (attrs.ProgLoadAttr, None, "prog_type"),
    (attrs.ObjPinAttr, None, "pathname"),
    (attrs.ProgAttachAttr, None, "attach_bpf_fd"),
    (attrs.GetIdAttr, None, "open_flags"),
    (attrs.InfoAttr, "info", ""),
    (attrs.RawTracepointAttr, "raw_tracepoint", ""),
    (attrs.BtfLoadAttr, None, "btf_log_buf"),
    (attrs.LinkCreateAttr, "link_create", ""),
    (attrs.LinkUpdateAttr, "link_update", ""),
    (attrs.LinkDetachAttr, "link_detach", ""),
    (attrs.IterCreateAttr, "iter_create", ""),
    (attrs.ProgTestRunAttr, "test", ""),
    (attrs.ProgBindMapAttr, "prog_bind_map", ""),
]


def assert_same_layout(
    what: str, ours: dict[str, int], kernel: dict[str, int], sizes: dict[str, int] | None = None
) -> None:
    """Every field of ours sits where the running kernel has it; one the kernel lacks must be newer than
    it, which is measured, not listed per kernel: the uapi grows at the end, so a newer field lies after
    the last field the kernel has in its (sub)struct, or in a member (sub)struct the kernel lacks
    altogether; or, given our fields' ``sizes``, it fills what was alignment padding in the kernel's struct
    (bpf_map_info.btf_vmlinux_id, before map_extra). A misspelt or misplaced field fails either way.
    """
    last: dict[str, int] = {}
    for name, off in kernel.items():
        group = name.rpartition(".")[0]
        last[group] = max(last.get(group, -1), off)
    for name, off in ours.items():
        if name in kernel:
            assert kernel[name] == off, f"{what}.{name}: ours {off}, kernel {kernel[name]}"
            continue
        group = name.rpartition(".")[0]
        newer_member = group != "" and group not in last
        in_padding = sizes is not None and name in sizes and _in_padding(off, off + sizes[name], kernel, sizes)
        assert newer_member or in_padding or off > last.get(group, -1), (
            f"{what}.{name} is not a field of the kernel's struct"
        )


def _in_padding(start: int, end: int, kernel: dict[str, int], sizes: dict[str, int]) -> bool:
    """Whether bytes [start, end) overlap none of the kernel's fields (one we do not know counts as a byte)."""
    return all(end <= off or off + sizes.get(name, 1) <= start for name, off in kernel.items())


def kernel_layout(member: str | None, field: str) -> dict[str, int]:
    union = kernel_type("UNION", "bpf_attr")
    for m in union["members"]:
        sub = kernel_types()[m["type_id"]]
        if member is not None and m["name"] == member:
            return kernel_offsets(sub)
        if member is None and sub["kind"] == "STRUCT" and field in kernel_offsets(sub):
            return kernel_offsets(sub)
    raise LookupError(member or field)


@pytest.mark.parametrize(("struct", "member", "field"), ATTR_STRUCTS, ids=[s.__name__ for s, _, _ in ATTR_STRUCTS])
def test_attr_offsets_match_kernel(struct: type[ctypes.Structure], member: str | None, field: str) -> None:
    assert_same_layout(struct.__name__, ctypes_offsets(struct), kernel_layout(member, field))
    assert ctypes.sizeof(struct) <= 168, "larger than union bpf_attr"


@pytest.mark.parametrize(
    ("struct", "kernel_name"),
    [
        (attrs.ProgInfo, "bpf_prog_info"),
        (attrs.MapInfo, "bpf_map_info"),
        (attrs.BtfInfo, "bpf_btf_info"),
        (perf.PerfEventAttr, "perf_event_attr"),
    ],
)
def test_info_struct_offsets_match_kernel(struct: type[ctypes.Structure], kernel_name: str) -> None:
    renamed = {"flags": "disabled"} if struct is perf.PerfEventAttr else {}  # the bitfield word, by its first bit
    mine = {renamed.get(name, name): off for name, off in ctypes_offsets(struct).items()}
    mine.pop("gpl_compatible", None)  # a bitfield in the kernel: bits_offset points inside the word we read
    sizes = {renamed.get(name, name): getattr(struct, name).size for name, *_ in struct._fields_}
    assert_same_layout(kernel_name, mine, kernel_offsets(kernel_type("STRUCT", kernel_name)), sizes)


def test_link_info_head() -> None:
    kernel = kernel_offsets(kernel_type("STRUCT", "bpf_link_info"))
    for name in ("type", "id", "prog_id"):
        assert kernel[name] == getattr(attrs.LinkInfo, name).offset


ENUMS = [
    ("bpf_cmd", constants.Cmd, "BPF_"),
    ("bpf_prog_type", constants.ProgType, "BPF_PROG_TYPE_"),
    ("bpf_map_type", constants.MapType, "BPF_MAP_TYPE_"),
    ("bpf_attach_type", constants.AttachType, "BPF_"),
    ("bpf_link_type", constants.LinkType, "BPF_LINK_TYPE_"),
]


@pytest.mark.parametrize(("kernel_name", "enum", "prefix"), ENUMS, ids=[e[0] for e in ENUMS])
def test_enum_values_match_kernel(kernel_name: str, enum: Any, prefix: str) -> None:
    entries = kernel_type("ENUM", kernel_name)["values"]
    values = {v["name"][len(prefix) :]: v["val"] for v in entries if v["name"].startswith(prefix)}  # not MAX_...
    kernel_max = max(values.values())
    for name, val in values.items():
        assert enum[name] == val, f"{kernel_name} {name}: kernel {val}, ours {enum[name].value}"
    for member in enum.__members__.values():
        if member.name not in values:
            assert member.value > kernel_max, f"{member.name}={member.value} unknown to the kernel but not newer"


def test_helper_table_matches_kernel() -> None:
    """Every helper the kernel has is in our table under its number; ours may go on past an older kernel's."""
    values = {v["name"]: v["val"] for v in kernel_type("ENUM", "bpf_func_id")["values"]}
    kernel_count = values["__BPF_FUNC_MAX_ID"]
    assert len(constants.HELPER_NAMES) >= kernel_count
    for helper_id, name in enumerate(constants.HELPER_NAMES[:kernel_count]):
        assert values[f"BPF_FUNC_{name}"] == helper_id


def test_a_field_the_kernel_lacks_passes_only_as_a_newer_one() -> None:
    """The list of fields newer than "the test kernel" (6.18) is gone: what is newer is measured."""
    kernel = {"a": 0, "b": 4, "u.x": 8, "u.y": 12}
    assert_same_layout("s", {"a": 0, "b": 4, "u.x": 8, "c": 16, "u.z": 16, "v.w": 8}, kernel)  # appended, new member
    for wrong in ({"bb": 4}, {"u.yy": 12}, {"a": 4}, {"u.q": 10}):
        with pytest.raises(AssertionError):
            assert_same_layout("s", wrong, kernel)
    padded, sizes = {"a": 0, "m": 8}, {"a": 4, "hole": 4, "m": 8, "bad": 4}
    assert_same_layout("s", {"a": 0, "hole": 4, "m": 8}, padded, sizes)  # a newer field filling padding
    with pytest.raises(AssertionError):
        assert_same_layout("s", {"a": 0, "bad": 6, "m": 8}, padded, sizes)  # would overlap m
