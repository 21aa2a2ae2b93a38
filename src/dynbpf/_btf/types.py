"""The BTF type model: one frozen dataclass per kind.

References between types are plain type ids in the id space of the
:class:`~dynbpf._btf.spec.Spec` the type came from (0 is ``void``; split BTF ids
continue after its base's). Ids rather than object links keep decoding lazy:
a type can be materialised without touching anything it refers to, and a
type graph with cycles (``struct list_head``) needs no special handling.

Every class has ``kind`` (a class constant) and ``name`` (``""`` where BTF has
none). Kinds whose names the kernel forbids (pointers, qualifiers, arrays,
function prototypes) still carry one as a trailing optional field, so that
whatever a blob holds survives a parse/encode round trip.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from dynbpf._btf.kinds import Kind


class IntEncoding(enum.IntFlag):
    NONE = 0
    SIGNED = 1
    CHAR = 2
    BOOL = 4


class FuncLinkage(enum.IntEnum):
    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


class VarLinkage(enum.IntEnum):
    STATIC = 0
    GLOBAL_ALLOCATED = 1
    GLOBAL_EXTERN = 2


@dataclass(frozen=True, slots=True)
class Int:
    kind: ClassVar[Kind] = Kind.INT
    name: str
    size: int
    encoding: IntEncoding
    bit_offset: int
    bits: int


@dataclass(frozen=True, slots=True)
class Ptr:
    kind: ClassVar[Kind] = Kind.PTR
    type: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Array:
    kind: ClassVar[Kind] = Kind.ARRAY
    type: int
    index_type: int
    nelems: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """A struct or union member; ``bitfield_size`` is 0 unless it is a bitfield."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(frozen=True, slots=True)
class Struct:
    """A struct; members with a ``bitfield_size`` make the encoder set the kind flag."""

    kind: ClassVar[Kind] = Kind.STRUCT
    name: str
    size: int
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Union:
    kind: ClassVar[Kind] = Kind.UNION
    name: str
    size: int
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class EnumValue:
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class Enum:
    """A 32-bit-valued enum; ``value`` is read as signed iff ``signed``."""

    kind: ClassVar[Kind] = Kind.ENUM
    name: str
    size: int
    signed: bool
    values: tuple[EnumValue, ...]


@dataclass(frozen=True, slots=True)
class Enum64:
    kind: ClassVar[Kind] = Kind.ENUM64
    name: str
    size: int
    signed: bool
    values: tuple[EnumValue, ...]


@dataclass(frozen=True, slots=True)
class Fwd:
    kind: ClassVar[Kind] = Kind.FWD
    name: str
    union: bool


@dataclass(frozen=True, slots=True)
class Typedef:
    kind: ClassVar[Kind] = Kind.TYPEDEF
    name: str
    type: int


@dataclass(frozen=True, slots=True)
class Volatile:
    kind: ClassVar[Kind] = Kind.VOLATILE
    type: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Const:
    kind: ClassVar[Kind] = Kind.CONST
    type: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Restrict:
    kind: ClassVar[Kind] = Kind.RESTRICT
    type: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class TypeTag:
    """``__attribute__((btf_type_tag(name)))``; ``attribute`` is the kind flag (a plain attribute, kernel 6.14+)."""

    kind: ClassVar[Kind] = Kind.TYPE_TAG
    name: str
    type: int
    attribute: bool = False


@dataclass(frozen=True, slots=True)
class Func:
    kind: ClassVar[Kind] = Kind.FUNC
    name: str
    type: int
    linkage: FuncLinkage


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: int


@dataclass(frozen=True, slots=True)
class FuncProto:
    """A function signature; a variadic one ends with ``Param("", 0)``."""

    kind: ClassVar[Kind] = Kind.FUNC_PROTO
    return_type: int
    params: tuple[Param, ...]
    name: str = ""


@dataclass(frozen=True, slots=True)
class Var:
    kind: ClassVar[Kind] = Kind.VAR
    name: str
    type: int
    linkage: VarLinkage


@dataclass(frozen=True, slots=True)
class VarSecinfo:
    type: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Datasec:
    kind: ClassVar[Kind] = Kind.DATASEC
    name: str
    size: int
    vars: tuple[VarSecinfo, ...]


@dataclass(frozen=True, slots=True)
class Float:
    kind: ClassVar[Kind] = Kind.FLOAT
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class DeclTag:
    """A declaration tag on ``type`` itself (``component_idx == -1``) or on one member/parameter."""

    kind: ClassVar[Kind] = Kind.DECL_TAG
    name: str
    type: int
    component_idx: int
    attribute: bool = False


Type = (
    Int
    | Ptr
    | Array
    | Struct
    | Union
    | Enum
    | Enum64
    | Fwd
    | Typedef
    | Volatile
    | Const
    | Restrict
    | TypeTag
    | Func
    | FuncProto
    | Var
    | Datasec
    | Float
    | DeclTag
)
