"""Turn a ``MapSpec`` into a kernel map: create it, give it its initial value, freeze read-only data.

Creation is the only place a map definition meets the kernel, so the errors
name the map and say which part of its definition the kernel refused.
"""

from __future__ import annotations

import ctypes
import re

from dynbpf.btf.spec import Spec
from dynbpf.elf.names import source_name
from dynbpf.elf.spec import MapSpec
from dynbpf.errors import SyscallError
from dynbpf.maps.cpus import possible_cpus
from dynbpf.sys import commands
from dynbpf.sys.attrs import MapCreateAttr
from dynbpf.sys.constants import MapFlags, MapType
from dynbpf.sys.fd import Fd

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
MAP_NAME_LEN = 15  # BPF_OBJ_NAME_LEN minus the NUL
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def kernel_name(object_name: str, map_name: str) -> str:
    """The name the kernel shows (bpftool, /proc): libbpf's, so tools show the same names.

    Section maps (``.bss``) get the object's name as a prefix, cut so the
    section survives the kernel's 15-character limit. A static map named
    apart from another (``stats@a.c``) shows the name its source gave it.
    """
    map_name = source_name(map_name)
    if map_name.startswith("."):
        prefix = object_name[: max(0, MAP_NAME_LEN - len(map_name))]
        name = prefix + map_name
    else:
        name = map_name
    return _NAME_CHARS.sub("_", name[:MAP_NAME_LEN])


def is_frozen_data(spec: MapSpec) -> bool:
    """Read-only global data (``.rodata*``, ``.kconfig``): frozen once its initial value is written."""
    return spec.section.startswith(".rodata") or spec.section == ".kconfig"


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
    max_entries = spec.max_entries
    if spec.type == MapType.PERF_EVENT_ARRAY and max_entries == 0:
        max_entries = possible_cpus()
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
        raise SyscallError("BPF_MAP_CREATE", e.errno, e.hint, detail=f"map {spec.name!r} ({_describe(spec)})") from None


def initialise(fd: int, spec: MapSpec, data: bytes | None = None) -> None:
    """Write a global-data map's initial bytes (``data`` overrides the object's), then freeze it if read-only."""
    value = data if data is not None else spec.data
    if value is not None and any(value):
        if len(value) != spec.value_size:
            raise ValueError(f"map {spec.name!r}: initial value is {len(value)} bytes, not {spec.value_size}")
        commands.map_update_elem(fd, bytes(ctypes.c_uint32(0)), value)
    if is_frozen_data(spec) and spec.flags & MapFlags.RDONLY_PROG:
        commands.map_freeze(fd)


def _describe(spec: MapSpec) -> str:
    try:
        kind = MapType(spec.type).name.lower()
    except ValueError:
        kind = f"type {int(spec.type)}"
    return (
        f"{kind}, key {spec.key_size} B, value {spec.value_size} B, {spec.max_entries} entries, flags {spec.flags:#x}"
    )
