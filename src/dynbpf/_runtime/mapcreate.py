"""Turn a ``MapSpec`` into a kernel map: create it, give it its initial value, freeze read-only data.

Creation is the only place a map definition meets the kernel, so the errors
name the map and say which part of its definition the kernel refused.
"""

from __future__ import annotations

import ctypes
import errno
import re
from collections.abc import Callable

from dynbpf import _section_names as section_names
from dynbpf._btf.spec import Spec
from dynbpf._elf.names import source_name
from dynbpf._elf.spec import MapSpec
from dynbpf._sys import commands
from dynbpf._sys.attrs import MapCreateAttr
from dynbpf._sys.constants import MapFlags, MapType, type_name
from dynbpf._sys.cpus import possible_cpus
from dynbpf._sys.fd import Fd
from dynbpf.errors import OptionError, SyscallError

# Map types whose values are fds or kernel-defined: the kernel takes no BTF key/value types for them.
_NO_BTF_TYPES = frozenset(
    {
        MapType.PERF_EVENT_ARRAY,
        MapType.CGROUP_ARRAY,
        MapType.STACK_TRACE,
        MapType.ARRAY_OF_MAPS,
        MapType.HASH_OF_MAPS,
        MapType.DEVMAP,
        MapType.DEVMAP_HASH,
        MapType.CPUMAP,
        MapType.XSKMAP,
        MapType.SOCKMAP,
        MapType.SOCKHASH,
        MapType.QUEUE,
        MapType.STACK,
    }
)
#: Map kinds whose max_entries may be 0 (any other refuses 0 with EINVAL: the object left it to the loader).
_ZERO_OK_ENTRIES = frozenset(
    {
        MapType.PERF_EVENT_ARRAY,  # 0: one slot per CPU, filled in above
        MapType.CGROUP_STORAGE,
        MapType.PERCPU_CGROUP_STORAGE,
        MapType.SK_STORAGE,
        MapType.INODE_STORAGE,
        MapType.TASK_STORAGE,
        MapType.CGRP_STORAGE,
        MapType.STRUCT_OPS,
    }
)
#: Map kinds without values (value_size must be 0).
NO_VALUES = frozenset({MapType.RINGBUF, MapType.USER_RINGBUF, MapType.ARENA})
MAP_NAME_LEN = 15  # BPF_OBJ_NAME_LEN minus the NUL
_SUFFIX_ROOM = 7  # libbpf keeps room for a 7-character section name (".rodata") even after ".bss"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def kernel_name(object_name: str, map_name: str) -> str:
    """The name the kernel shows (bpftool, /proc): libbpf's, so tools and pins agree with libbpf's.

    A global-data map (``.bss``) is named after the object and its section,
    as libbpf's ``internal_map_name()`` does: the section keeps at least 7
    of the 15 characters (``cachestat`` + ``.bss`` is ``cachesta.bss``), and
    a custom section (a second dot: ``.data.buf``, ``.rodata.str1.1``) gets
    no prefix at all. A static map named apart from another (``stats@a.c``)
    shows the name its source gave it.
    """
    map_name = source_name(map_name)
    if map_name.startswith("."):
        custom = "." in map_name[1:]
        room = MAP_NAME_LEN - max(_SUFFIX_ROOM, len(map_name))
        prefix = "" if custom else object_name[: max(0, room)]
        name = prefix + map_name
    else:
        name = map_name
    return _NAME_CHARS.sub("_", name[:MAP_NAME_LEN])


def is_frozen_data(spec: MapSpec) -> bool:
    """Read-only global data (``.rodata*``, ``.kconfig``): frozen once its initial value is written."""
    return section_names.is_read_only_data(spec.section) or spec.section == section_names.KCONFIG


def create(
    spec: MapSpec,
    *,
    object_name: str,
    btf: Spec | None = None,
    btf_fd: Fd | None = None,
    inner_fd: int = 0,
) -> Fd:
    """Create the map ``spec`` declares; BTF types are attached when the object has loaded BTF.

    Like libbpf, a perf event array without a size gets one slot per
    possible CPU, and a map the kernel refuses with BTF types is retried
    without them (older kernels check BTF types of some map kinds strictly).
    """
    max_entries = entries(spec)
    attr = MapCreateAttr(
        map_type=int(spec.type),
        key_size=spec.key_size,
        value_size=spec.value_size,
        max_entries=max_entries,
        map_flags=spec.flags,
        inner_map_fd=inner_fd,
        numa_node=spec.numa_node,
        map_name=kernel_name(object_name, spec.name).encode(),
        map_extra=spec.map_extra,
    )
    typed = btf_fd is not None and btf is not None and (spec.key_type or spec.value_type)
    if typed and spec.type not in _NO_BTF_TYPES:
        assert btf_fd is not None
        attr.btf_fd = btf_fd.raw
        attr.btf_key_type_id = spec.key_type
        attr.btf_value_type_id = spec.value_type
        fd, _ = commands.map_create_raw(attr)
        if fd is not None:
            return fd
        attr.btf_fd = attr.btf_key_type_id = attr.btf_value_type_id = 0
    try:
        return commands.map_create(attr)
    except SyscallError as e:
        hint = e.hint
        unsized = [
            field
            for field, zero_ok in (("max_entries", _ZERO_OK_ENTRIES), ("value_size", NO_VALUES))
            if not getattr(spec, field) and spec.type not in zero_ok
        ]
        if e.errno == errno.EINVAL and unsized:
            edit = f"MapEdit({', '.join(f'{f}=...' for f in unsized)})"
            outer = spec.name.removesuffix(".inner")
            if outer != spec.name:  # the inner map template of a map of maps
                edit = f"MapEdit(inner={edit})"
            hint = (
                f"{' and '.join(unsized)} is 0 (the object leaves it for the loader to set, or an edit made it "
                f"so): open with map_edits={{{outer!r}: {edit}}} giving a size"
            )
        raise SyscallError("BPF_MAP_CREATE", e.errno, hint, detail=f"map {spec.name!r} ({_describe(spec)})") from None


def entries(spec: MapSpec) -> int:
    """The max_entries the kernel gets: a perf event array left at 0 gets one slot per possible CPU (libbpf's rule)."""
    if spec.type == MapType.PERF_EVENT_ARRAY and spec.max_entries == 0:
        return possible_cpus()
    return spec.max_entries


def check_compatible(spec: MapSpec, fd: int, where: str) -> None:
    """Raise unless the map behind ``fd`` has the definition ``spec`` declares (libbpf's check for reuse).

    ``where`` names the map in the message (``the map pinned at /sys/fs/bpf/x``).
    The :class:`OptionError` says an option (a pinned policy, a map edit's
    ``reuse_*``) points at a map unfit for the object; callers say which option.
    """
    info = commands.map_info(fd)
    want = {
        "type": int(spec.type),
        "key_size": spec.key_size,
        "value_size": spec.value_size,
        "max_entries": entries(spec),
        "map_flags": spec.flags,
        "map_extra": spec.map_extra,
    }
    for field, value in want.items():
        got = int(getattr(info, field))
        if got != value:
            show = _SHOW.get(field, str)
            raise OptionError(f"map {spec.name!r}: {where} has {field} {show(got)}, the object declares {show(value)}")


def initialise(fd: int, spec: MapSpec, data: bytes | None = None) -> None:
    """Write a global-data map's initial bytes (``data`` overrides the object's), then freeze it if read-only."""
    value = data if data is not None else spec.data
    if value is not None and any(value):
        if len(value) != spec.value_size:
            raise ValueError(f"map {spec.name!r}: initial value is {len(value)} bytes, not {spec.value_size}")
        commands.map_update_elem(fd, bytes(ctypes.c_uint32(0)), value)
    if is_frozen_data(spec) and spec.flags & MapFlags.RDONLY_PROG:
        commands.map_freeze(fd)


#: how check_compatible shows a field's two values: types by name, flags in hex
_SHOW: dict[str, Callable[[int], str]] = {
    "type": lambda v: type_name(MapType, v),
    "map_flags": hex,
    "map_extra": hex,
}


def _describe(spec: MapSpec) -> str:
    kind = type_name(MapType, spec.type)
    return (
        f"{kind}, key {spec.key_size} B, value {spec.value_size} B, {spec.max_entries} entries, flags {spec.flags:#x}"
    )
