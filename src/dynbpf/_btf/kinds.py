"""BTF kinds and their on-disk record sizes (``include/uapi/linux/btf.h``)."""

from __future__ import annotations

import enum

BTF_MAGIC = 0xEB9F
HEADER_SIZE = 24
TYPE_SIZE = 12


class Kind(enum.IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


#: bytes after the 12-byte common header: (fixed, per vlen entry)
TRAILER: dict[Kind, tuple[int, int]] = {
    Kind.INT: (4, 0),
    Kind.ARRAY: (12, 0),
    Kind.STRUCT: (0, 12),
    Kind.UNION: (0, 12),
    Kind.ENUM: (0, 8),
    Kind.FUNC_PROTO: (0, 8),
    Kind.VAR: (4, 0),
    Kind.DATASEC: (0, 12),
    Kind.DECL_TAG: (4, 0),
    Kind.ENUM64: (0, 12),
}


def info(kind: Kind, vlen: int = 0, kind_flag: bool = False) -> int:
    """Encode a type's ``info`` word."""
    return (int(kind_flag) << 31) | (int(kind) << 24) | (vlen & 0xFFFF)
