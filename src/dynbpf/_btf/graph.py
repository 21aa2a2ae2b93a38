"""Walking the type graph: qualifiers, typedefs, sizes, members, C spelling.

BTF references are ids, so a malformed blob can contain loops (a typedef of
itself, a const of a const of ...) or absurd depth. Every walk here is
bounded: chains stop after :data:`MAX_DEPTH` hops, as in libbpf, and
:func:`format_type` also stops after visiting :data:`MAX_FORMAT_NODES` types
(function prototypes fan out, so depth alone does not bound the work).
Either limit, a dangling reference, or a type without a size is reported as
:class:`~dynbpf.errors.ObjectFormatError` naming the record at fault.
"""

from __future__ import annotations

from dynbpf._btf.errors import NameNotFound, TypeNotFound
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import (
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    Float,
    Func,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Member,
    Ptr,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    Volatile,
)
from dynbpf.errors import ObjectFormatError

MAX_DEPTH = 32
MAX_FORMAT_NODES = 4096
POINTER_SIZE = 8  # BPF and every 64-bit kernel whose BTF dynbpf reads
_U32_MAX = 0xFFFFFFFF


def _fail(spec: Spec, type_id: int, message: str) -> ObjectFormatError:
    section, offset = spec.locate(type_id)
    return ObjectFormatError(f"type [{type_id}]: {message}", section=section, offset=offset)


def _follow(spec: Spec, from_id: int, type_id: int) -> Type | None:
    """``spec[type_id]`` reached through a reference in ``from_id``: a bad id is the blob's fault."""
    try:
        return spec[type_id]
    except TypeNotFound:
        raise _fail(spec, from_id, f"refers to type [{type_id}], which does not exist") from None


def _skip(spec: Spec, type_id: int, typedefs: bool) -> int:
    t = spec[type_id]  # an unknown starting id is the caller's TypeNotFound
    for _ in range(MAX_DEPTH):
        match t:
            case Const() | Volatile() | Restrict() | TypeTag():
                target = t.type
            case Typedef() if typedefs:
                target = t.type
            case _:
                return type_id
        t, type_id = _follow(spec, type_id, target), target
    raise _fail(spec, type_id, f"qualifier/typedef chain longer than {MAX_DEPTH} (a loop?)")


def skip_qualifiers(spec: Spec, type_id: int) -> int:
    """The id behind any const/volatile/restrict/type_tag wrapping ``type_id``."""
    return _skip(spec, type_id, typedefs=False)


def resolve(spec: Spec, type_id: int) -> int:
    """The id behind qualifiers and typedefs: what a value of ``type_id`` really is."""
    return _skip(spec, type_id, typedefs=True)


def size_of(spec: Spec, type_id: int) -> int:
    """Size in bytes of a value of ``type_id`` (pointers are 8 bytes).

    Void, functions, prototypes and forward declarations have no size.
    """
    start, elems = type_id, 1
    for _ in range(MAX_DEPTH):
        type_id = resolve(spec, type_id)
        t = spec[type_id]
        match t:
            case Int() | Enum() | Enum64() | Float() | Struct() | Union() | Datasec():
                size = elems * t.size
            case Ptr():
                size = elems * POINTER_SIZE
            case Array():
                elems *= t.nelems
                if elems > _U32_MAX:
                    raise _fail(spec, start, f"array size overflows ({elems} elements)")
                _follow(spec, type_id, t.type)
                type_id = t.type
                continue
            case Var() | DeclTag():
                _follow(spec, type_id, t.type)
                type_id = t.type
                continue
            case _:
                what = "void" if t is None else t.kind.name
                raise _fail(spec, start, f"has no size (reaches {what} [{type_id}])")
        if size > _U32_MAX:
            raise _fail(spec, start, f"size {size} does not fit in 32 bits")
        return size
    raise _fail(spec, start, f"type chain longer than {MAX_DEPTH} (a loop?)")


def align_of(spec: Spec, type_id: int) -> int:
    """Alignment of a value of ``type_id`` as libbpf computes it (``btf__align_of``).

    A struct with a member off its natural alignment is packed and aligns
    to 1; so does one whose size is not a multiple of its widest member's.
    """
    return _align(spec, type_id, type_id, 0)


def _align(spec: Spec, start: int, type_id: int, depth: int) -> int:
    for hops in range(depth, MAX_DEPTH):
        t = _follow(spec, start, type_id)
        match t:
            case Int() | Enum() | Enum64() | Float():
                return min(t.size, POINTER_SIZE) or 1
            case Ptr():
                return POINTER_SIZE
            case Typedef() | Volatile() | Const() | Restrict() | TypeTag() | Var() | Array():
                type_id = t.type
            case Struct() | Union():
                widest = 1
                for m in t.members:
                    align = _align(spec, type_id, m.type, hops + 1)
                    if m.bit_offset % (8 * align):
                        return 1
                    widest = max(widest, align)
                return 1 if t.size % widest else widest
            case _:
                what = "void" if t is None else t.kind.name
                raise _fail(spec, start, f"has no alignment (reaches {what} [{type_id}])")
    raise _fail(spec, start, f"types nested deeper than {MAX_DEPTH} (a loop?)")


Shape = tuple[object, ...]


def shape(spec: Spec, type_id: int, depth: int = 3) -> Shape:
    """What a value of ``type_id`` looks like, for comparing types of two BTF blobs.

    Typedefs and qualifiers are looked through and integers compared by size
    and signedness only (``__u32`` and ``unsigned int`` are the same value);
    structs, unions and enums keep their names, members and layout down to
    ``depth`` levels. Two types with equal shapes hold the same bytes.
    """
    type_id = resolve(spec, type_id)
    t = spec[type_id]
    match t:
        case None:
            return ("void",)
        case Int():
            return ("int", t.size, bool(t.encoding & IntEncoding.SIGNED), bool(t.encoding & IntEncoding.BOOL))
        case Ptr():
            return ("ptr",)
        case Array():
            return ("array", t.nelems, shape(spec, t.type, depth))
        case Struct() | Union():
            members = tuple((m.name, m.bit_offset, m.bitfield_size, shape(spec, m.type, depth - 1)) for m in t.members)
            return (t.kind.name.lower(), t.name, t.size, members if depth > 0 else ())
        case Enum() | Enum64():
            return ("enum", t.name, t.size)
        case _:
            return (t.kind.name.lower(), getattr(t, "name", ""))


def member(spec: Spec, struct_id: int, name: str) -> Member:
    """The direct member ``name`` of the struct or union ``struct_id`` (typedefs and qualifiers looked through)."""
    resolved = resolve(spec, struct_id)
    t = spec[resolved]
    if not isinstance(t, Struct | Union):
        raise NameNotFound(f"type [{struct_id}] is not a struct or union, so it has no member {name!r}")
    for m in t.members:
        if m.name == name:
            return m
    label = f"{'struct' if isinstance(t, Struct) else 'union'} {t.name or '(anon)'}"
    raise NameNotFound(f"{label} [{resolved}] has no member {name!r}")


def format_type(spec: Spec, type_id: int, name: str = "") -> str:
    """``type_id`` spelled as in C, declaring ``name`` if given.

    ``struct task_struct *``, ``unsigned int``, ``char[16]``, ``int (*)(void *, long)``,
    ``const volatile int``; type tags are spelled as the attribute clang accepts.
    """
    spec[type_id]
    return _Formatter(spec).declare(type_id, name, 0)


def _tag(t: TypeTag) -> str:
    return f'__attribute__((btf_type_tag("{t.name}")))'


class _Formatter:
    """C declarator syntax: the declarator grows inside-out while the walk goes outside-in."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.budget = MAX_FORMAT_NODES

    def declare(self, type_id: int, decl: str, depth: int) -> str:
        self.budget -= 1
        if self.budget < 0 or depth > MAX_DEPTH:
            raise _fail(self.spec, type_id, "too deep or too large to spell as C (a loop?)")
        t = self.spec[type_id]
        match t:
            case None:
                return _join("void", decl)
            case Int() | Float() | Typedef():
                return _join(t.name or "(anon)", decl)
            case Struct() | Union() | Enum() | Enum64() | Fwd():
                return _join(_tagged_name(t), decl)
            case Ptr():
                target = self._child(type_id, t.type)
                inner = f"*{decl}"
                if isinstance(target, Array | FuncProto):
                    inner = f"({inner})"
                return self.declare(t.type, inner, depth + 1)
            case Array():
                self._child(type_id, t.type)
                return self.declare(t.type, f"{decl}[{t.nelems}]", depth + 1)
            case Const() | Volatile() | Restrict():
                word = {Const: "const", Volatile: "volatile", Restrict: "restrict"}[type(t)]
                target = self._child(type_id, t.type)
                if isinstance(target, Ptr):
                    return self.declare(t.type, _join(word, decl), depth + 1)
                return f"{word} {self.declare(t.type, decl, depth + 1)}"
            case TypeTag():
                self._child(type_id, t.type)
                return self.declare(t.type, _join(_tag(t), decl), depth + 1)
            case FuncProto():
                params = [self._param(type_id, p.type, p.name, depth) for p in t.params]
                self._child(type_id, t.return_type)
                return self.declare(t.return_type, f"{decl}({', '.join(params) or 'void'})", depth + 1)
            case Func() | Var():
                self._child(type_id, t.type)
                return self.declare(t.type, decl or t.name, depth + 1)
            case DeclTag():
                self._child(type_id, t.type)
                return self.declare(t.type, decl, depth + 1)
            case Datasec():
                return _join(f'SEC("{t.name}")', decl)
        raise AssertionError(t)  # pragma: no cover - every kind is matched above

    def _child(self, from_id: int, type_id: int) -> Type | None:
        return _follow(self.spec, from_id, type_id)

    def _param(self, proto_id: int, type_id: int, name: str, depth: int) -> str:
        if type_id == 0 and not name:
            return "..."
        self._child(proto_id, type_id)
        return self.declare(type_id, name, depth + 1)


def _tagged_name(t: Struct | Union | Enum | Enum64 | Fwd) -> str:
    if isinstance(t, Fwd):
        word = "union" if t.union else "struct"
    else:
        word = {Struct: "struct", Union: "union", Enum: "enum", Enum64: "enum"}[type(t)]
    return f"{word} {t.name or '{...}'}"


def _join(base: str, decl: str) -> str:
    """``base`` followed by a declarator; array brackets attach without a space (``char[16]``)."""
    if not decl:
        return base
    if decl[0] == "[":
        return base + decl
    return f"{base} {decl}"
