"""Which BTF kinds the kernel accepts in BPF_BTF_LOAD.

Object BTF using a kind the kernel does not know fails to load as a whole,
so prepare (a later layer) rewrites such kinds; these probes decide which.
"""

from __future__ import annotations

import struct

from dynbpf._btf.kinds import Kind, info
from dynbpf._probes.maps import raw_btf
from dynbpf._probes.result import Support, cached, outcome
from dynbpf._sys import commands
from dynbpf.errors import SyscallError

_INT = struct.pack("<IIII", 0, info(Kind.INT), 4, (1 << 24) | 32)  # [1] int


def _type(name_off: int, kind: Kind, size_or_type: int, vlen: int = 0, kind_flag: bool = False) -> bytes:
    return struct.pack("<III", name_off, info(kind, vlen, kind_flag), size_or_type)


# Each blob: (types, strings). Strings: "\0a\0.data\0tag\0" -> a=1, .data=3, tag=9
_STRINGS = b"\0a\0.data\0tag\0"
BLOBS: dict[str, tuple[bytes, str]] = {
    "btf": (_INT, "one INT"),
    "func": (
        _INT
        + _type(0, Kind.FUNC_PROTO, 1, vlen=1)
        + struct.pack("<II", 1, 1)  # [2] int (*)(int a)
        + _type(1, Kind.FUNC, 2),  # [3] static func a
        "FUNC_PROTO + static FUNC",
    ),
    "func_global": (
        _INT
        + _type(0, Kind.FUNC_PROTO, 1, vlen=1)
        + struct.pack("<II", 1, 1)
        + _type(1, Kind.FUNC, 2, vlen=1),  # linkage 1 = global
        "FUNC_PROTO + global FUNC",
    ),
    "datasec": (
        _INT
        + _type(1, Kind.VAR, 1)
        + struct.pack("<I", 1)  # [2] global var a
        + _type(3, Kind.DATASEC, 4, vlen=1)
        + struct.pack("<III", 2, 0, 4),  # [3] .data
        "VAR + DATASEC",
    ),
    "float": (_type(1, Kind.FLOAT, 4), "FLOAT"),
    "decl_tag": (
        _INT + _type(1, Kind.VAR, 1) + struct.pack("<I", 1) + _type(9, Kind.DECL_TAG, 2) + struct.pack("<i", -1),
        "DECL_TAG on a VAR",
    ),
    "type_tag": (
        _INT + _type(9, Kind.TYPE_TAG, 1) + _type(0, Kind.PTR, 2),
        "TYPE_TAG under a PTR",
    ),
    "enum64": (
        _type(1, Kind.ENUM64, 8, vlen=1) + struct.pack("<III", 1, 0, 1),
        "ENUM64",
    ),
}


@cached
def btf_kind(kind: str) -> Support:
    types, desc = BLOBS[kind]
    try:
        with commands.btf_load(raw_btf(types, _STRINGS)):
            err = 0
    except SyscallError as e:
        err = e.errno
    label = "BTF" if kind == "btf" else f"BTF kind {kind}"
    return Support(label, err == 0, f"BPF_BTF_LOAD of {desc} -> {outcome(err)}")
