"""Map type probes: create the smallest valid map of each type."""

from __future__ import annotations

import mmap
import struct

from dynbpf._btf.kinds import Kind, info
from dynbpf._probes.result import Support, cached
from dynbpf._probes.trial import Trial, create_map
from dynbpf._sys import commands
from dynbpf._sys.constants import ENOTSUPP, MapFlags, MapType, type_name
from dynbpf.errors import SyscallError


def local_storage_btf() -> bytes:
    """BTF for ``struct val { int cnt; struct bpf_spin_lock l; }``: storage maps need BTF values."""
    strings = b"\0bpf_spin_lock\0val\0cnt\0l\0"
    types = struct.pack(
        "<IIII" + "III" * 5,
        0,
        info(Kind.INT),
        4,
        (1 << 24) | 32,  # [1] int: signed, 32 bits
        1,
        info(Kind.STRUCT, 1),
        4,  # [2] struct bpf_spin_lock
        15,
        1,
        0,  # int val
        15,
        info(Kind.STRUCT, 2),
        8,  # [3] struct val
        19,
        1,
        0,  # int cnt
        23,
        2,
        32,  # struct bpf_spin_lock l
    )
    return raw_btf(types, strings)


def raw_btf(types: bytes, strings: bytes) -> bytes:
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings


def _params(mt: MapType) -> tuple[int, int, int, dict[str, int]]:
    """(key_size, value_size, max_entries, extra attrs) for a minimal map of ``mt``."""
    if mt == MapType.STACK_TRACE:
        return 4, 8, 1, {}
    if mt == MapType.LPM_TRIE:
        return 8, 8, 1, {"map_flags": MapFlags.NO_PREALLOC}
    if mt in (MapType.CGROUP_STORAGE, MapType.PERCPU_CGROUP_STORAGE):
        return 16, 8, 0, {}  # key: struct bpf_cgroup_storage_key (u64 + u32, padded)
    if mt in (MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER):
        return 0, 4, 1, {}
    if mt in (MapType.RINGBUF, MapType.USER_RINGBUF):
        return 0, 0, mmap.PAGESIZE, {}
    if mt == MapType.ARENA:
        return 0, 0, 1, {"map_flags": MapFlags.MMAPABLE}
    if mt == MapType.INSN_ARRAY:
        return 4, 16, 1, {}
    return 4, 4, 1, {}


_STORAGE = (MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE)


def _create(mt: MapType) -> tuple[Trial, str]:
    key, value, entries, extra = _params(mt)
    desc = f"key {key}, value {value}, max_entries {entries}"
    if mt in _STORAGE:
        try:
            btf = commands.btf_load(local_storage_btf())
        except SyscallError as e:
            return Trial(None, e.errno), f"{desc}: BTF for the value could not be loaded"
        with btf:
            extra = {"map_flags": MapFlags.NO_PREALLOC, "btf_fd": btf.raw, "btf_key_type_id": 1, "btf_value_type_id": 3}
            return create_map(mt, 4, 8, 0, **extra), "key int, value struct with spin lock, BTF"
    if mt in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        inner = create_map(MapType.HASH, 4, 4, 1)
        if not inner.ok:
            return inner, "inner hash map creation failed"
        with inner:
            assert inner.fd is not None
            return create_map(mt, 4, 4, 1, inner_map_fd=inner.fd.raw), "inner map: hash"
    if mt == MapType.STRUCT_OPS:
        # As libbpf: a bogus value type id yields ENOTSUPP only if the map type is known. Whether
        # a real struct_ops map can be created is a separate probe (features.attach.struct_ops).
        return create_map(mt, 4, 4, 1, btf_vmlinux_value_type_id=1), "value type id 1, expecting ENOTSUPP"
    return create_map(mt, key, value, entries, **extra), desc


@cached
def map_type(mt: MapType) -> Support:
    trial, desc = _create(mt)
    with trial:
        ok = trial.ok or (mt == MapType.STRUCT_OPS and trial.errno == ENOTSUPP)
    name = type_name(MapType, mt)
    return Support(f"map type {name}", ok, f"BPF_MAP_CREATE {name} ({desc}) -> {trial.result}")
