"""The object's DWARF types (``.debug_info``) in the BTF type model, for the types its BTF lacks.

clang puts a type into BTF only when a global, a map or a function
signature reaches it, so a record struct used only as a local variable (the
``struct event`` of most tracing tools) is in a ``-g`` build's DWARF but not
in its BTF. Translated the way clang's BTF generator would have encoded the
same types, the DWARF types become a :class:`~dynbpf._btf.spec.Spec` that
everything reading BTF (name lookups, the map codecs) takes unchanged.

Translated: base types, pointers (to anything; their target only names
them), typedefs, const/volatile/restrict (``_Atomic`` is looked through, as
BTF has no such qualifier), structs and unions (bitfields in either DWARF
encoding: ``DW_AT_data_bit_offset``, or the older ``DW_AT_bit_offset`` from
the storage unit's most significant bit, which clang still emits for BPF),
enums (signed as their underlying type, 64-bit ones as ENUM64), arrays (one
ARRAY per dimension, outermost first, as BTF nests them; no count is a
flexible array of 0 elements) and function prototypes. A reference to
anything else (a type unit, a base type BTF cannot hold) reads as ``void``.
"""

from __future__ import annotations

import io
import struct
import threading
from typing import TYPE_CHECKING

from dynbpf._btf.errors import EncodingError
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import (
    Array,
    Const,
    Enum,
    Enum64,
    EnumValue,
    Float,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Member,
    Param,
    Ptr,
    Restrict,
    Struct,
    Type,
    Typedef,
    Union,
    Volatile,
)
from dynbpf.errors import ObjectFormatError

if TYPE_CHECKING:
    from elftools.dwarf.compileunit import CompileUnit
    from elftools.dwarf.die import DIE
    from elftools.dwarf.dwarfinfo import DWARFInfo

DEBUG_INFO = ".debug_info"

#: DW_ATE_* encodings of base types, as clang's BTF generator maps them
_ATE_BOOLEAN, _ATE_FLOAT, _ATE_SIGNED, _ATE_SIGNED_CHAR, _ATE_UNSIGNED, _ATE_UNSIGNED_CHAR, _ATE_UTF = (
    0x2,
    0x4,
    0x5,
    0x6,
    0x7,
    0x8,
    0x10,
)
_INT_ENCODINGS = {
    _ATE_BOOLEAN: IntEncoding.BOOL,
    _ATE_SIGNED: IntEncoding.SIGNED,
    _ATE_SIGNED_CHAR: IntEncoding.SIGNED,
    _ATE_UNSIGNED: IntEncoding.NONE,
    _ATE_UNSIGNED_CHAR: IntEncoding.NONE,
    _ATE_UTF: IntEncoding.NONE,
}
_DW_OP_PLUS_UCONST = 0x23
_DATA_BITS = {"DW_FORM_data1": 8, "DW_FORM_data2": 16, "DW_FORM_data4": 32, "DW_FORM_data8": 64}
_QUALIFIERS: dict[str, type[Const | Volatile | Restrict]] = {
    "DW_TAG_const_type": Const,
    "DW_TAG_volatile_type": Volatile,
    "DW_TAG_restrict_type": Restrict,
}
_TRANSLATED = frozenset(
    {
        "DW_TAG_base_type",
        "DW_TAG_pointer_type",
        "DW_TAG_typedef",
        "DW_TAG_structure_type",
        "DW_TAG_union_type",
        "DW_TAG_enumeration_type",
        "DW_TAG_array_type",
        "DW_TAG_subroutine_type",
        *_QUALIFIERS,
    }
)
_LOOKED_THROUGH = frozenset({"DW_TAG_atomic_type"})
#: the widest integer BTF (and the codecs) hold
_MAX_INT_SIZE = 16


class DwarfTypes:
    """An object's DWARF types, translated on first use, once (reading DWARF imports pyelftools and walks every DIE).

    Holds the object's bytes (its functions' code already refers to them).
    """

    __slots__ = ("_data", "_lock", "_spec")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._lock = threading.Lock()
        self._spec: Spec | None = None

    def spec(self) -> Spec:
        """The translated types; ObjectFormatError if the DWARF is malformed (raised again on each call)."""
        spec = self._spec
        if spec is None:
            with self._lock:
                spec = self._spec
                if spec is None:
                    spec = self._spec = translate(self._data)
        return spec

    def __repr__(self) -> str:
        return f"<DwarfTypes {'translated' if self._spec is not None else 'not read yet'}>"


def translate(data: bytes) -> Spec:
    """The types of the ELF object ``data``'s DWARF as BTF (section name ``.debug_info`` in errors)."""
    from elftools.common.exceptions import DWARFError, ELFError  # pyelftools: imported only when DWARF is needed
    from elftools.construct import ConstructError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        if not elf.has_dwarf_info():
            raise ObjectFormatError("the object has no DWARF (compile with -g)", section=DEBUG_INFO)
        # LLVM's DWARF relocations for BPF are ABS32/ABS64 against section symbols (value 0) with the addend
        # in place: the bytes are already what relocating would write (pyelftools' BPF recipes keep them as
        # they are, after a second's work on a large object)
        types = _Translator(elf.get_dwarf_info(relocate_dwarf_sections=False)).types()
    except (  # pyelftools checks some fields with assert
        ELFError,
        DWARFError,
        ConstructError,
        struct.error,
        AssertionError,
        ValueError,
        KeyError,
        IndexError,
        OverflowError,
    ) as e:
        raise ObjectFormatError(f"cannot read the DWARF types: {type(e).__name__}: {e}", section=DEBUG_INFO) from None
    try:
        return Spec.from_types(types, section=DEBUG_INFO)
    except EncodingError as e:
        raise ObjectFormatError(f"a DWARF type has no BTF equivalent: {e}", section=DEBUG_INFO) from None


class _Translator:
    """Two passes: every type DIE gets its BTF id (in DIE order), then each becomes a Type referring to ids."""

    def __init__(self, dwarf: DWARFInfo) -> None:
        self.dies: list[tuple[CompileUnit, DIE]] = []
        self.ids: dict[int, int] = {}  # absolute DIE offset -> BTF id
        self.through: dict[int, int] = {}  # _Atomic DIE -> the DIE it qualifies (0: none)
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag in _TRANSLATED:
                    self.dies.append((cu, die))
                    self.ids[die.offset] = len(self.dies)
                elif die.tag in _LOOKED_THROUGH:
                    self.through[die.offset] = _target(cu, die) or 0
        self.extra: list[Type] = []  # the inner dimensions of multi-dimensional arrays, ids after the DIEs'

    def types(self) -> list[Type]:
        out = [self._type(cu, die) for cu, die in self.dies]
        return out + self.extra

    def fail(self, die: DIE, problem: str) -> ObjectFormatError:
        return ObjectFormatError(f"DIE {die.tag} {_name(die)!r}: {problem}", section=DEBUG_INFO, offset=die.offset)

    def ref(self, cu: CompileUnit, die: DIE, attribute: str = "DW_AT_type") -> int:
        """The BTF id of the type ``die`` refers to by ``attribute``; 0 (void) when absent or untranslatable."""
        offset = _target(cu, die, attribute)
        for _ in range(len(self.through) + 1):
            if offset is None or offset not in self.through:
                break
            offset = self.through[offset] or None
        return 0 if offset is None else self.ids.get(offset, 0)

    def _type(self, cu: CompileUnit, die: DIE) -> Type:
        tag = die.tag
        if tag == "DW_TAG_base_type":
            return self._base(die)
        if tag == "DW_TAG_pointer_type":
            return Ptr(self.ref(cu, die))
        if tag in _QUALIFIERS:
            return _QUALIFIERS[tag](self.ref(cu, die))
        if tag == "DW_TAG_typedef":
            return Typedef(_name(die), self.ref(cu, die))
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
            return self._record(cu, die, union=tag == "DW_TAG_union_type")
        if tag == "DW_TAG_enumeration_type":
            return self._enum(cu, die)
        if tag == "DW_TAG_array_type":
            return self._array(cu, die)
        return self._prototype(cu, die)

    def _base(self, die: DIE) -> Type:
        name, size = _name(die), _int(die, "DW_AT_byte_size")
        encoding = _int(die, "DW_AT_encoding")
        if size is None or not 0 < size <= _MAX_INT_SIZE:
            return Fwd(name or "(base type)", False)  # no value: decoding a member of this type is refused by name
        if encoding == _ATE_FLOAT:
            return Float(name, size)
        int_encoding = _INT_ENCODINGS.get(encoding) if encoding is not None else None
        if int_encoding is None:  # complex, decimal, fixed-point: nothing BTF (or clang's BTF) encodes
            return Fwd(name or "(base type)", False)
        return Int(name, size, int_encoding, 0, 8 * size)

    def _record(self, cu: CompileUnit, die: DIE, *, union: bool) -> Type:
        name = _name(die)
        size = _int(die, "DW_AT_byte_size")
        if _flag(die, "DW_AT_declaration") or size is None:
            return Fwd(name, union)
        members = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_member" or _flag(child, "DW_AT_declaration"):
                continue
            byte_offset = self._location(child)
            bits = _int(child, "DW_AT_bit_size") or 0
            bit_offset = 8 * byte_offset
            if bits:
                data_bit_offset = _int(child, "DW_AT_data_bit_offset")
                old_bit_offset = _int(child, "DW_AT_bit_offset")
                if data_bit_offset is not None:
                    bit_offset = data_bit_offset
                elif old_bit_offset is not None:  # counted from the storage unit's most significant bit
                    storage = _int(child, "DW_AT_byte_size") or _size_of(child)
                    if storage is None:
                        raise self.fail(child, "a bitfield whose storage unit has no size")
                    bit_offset += 8 * storage - old_bit_offset - bits
                if bit_offset < 0 or bits > 0xFF:
                    raise self.fail(child, f"a bitfield of {bits} bits at bit {bit_offset}")
            members.append(Member(_name(child), self.ref(cu, child), bit_offset, bits))
        return (Union if union else Struct)(name, size, tuple(members))

    def _location(self, member: DIE) -> int:
        attr = member.attributes.get("DW_AT_data_member_location")
        if attr is None:
            return 0  # union members, and DWARF 4+ bitfields placed by DW_AT_data_bit_offset alone
        value = attr.value
        if isinstance(value, int):
            return value
        if isinstance(value, list) and value and value[0] == _DW_OP_PLUS_UCONST:  # DWARF 2's location expression
            offset, shift = 0, 0
            for byte in value[1:]:
                if not isinstance(byte, int):
                    break
                offset |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    return offset
        raise self.fail(member, f"a member location DWARF expression dynbpf does not read ({value!r})")

    def _enum(self, cu: CompileUnit, die: DIE) -> Type:
        name = _name(die)
        size = _int(die, "DW_AT_byte_size") or 4
        signed = self._signed(die)
        values = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_enumerator":
                continue
            attr = child.attributes.get("DW_AT_const_value")
            if attr is None or not isinstance(attr.value, int):
                raise self.fail(child, "an enumerator without a constant value")
            value = attr.value
            width = _DATA_BITS.get(attr.form)
            if signed and width is not None and value >> (width - 1):  # fixed-size forms hold the raw bits
                value -= 1 << width
            values.append(EnumValue(_name(child), value))
        if size > 4:
            return Enum64(name, size, signed, tuple(values))
        if any(not -(1 << 31) <= v.value < 1 << 32 for v in values):
            raise self.fail(die, f"an enumerator beyond 32 bits in a {size}-byte enum")
        return Enum(name, size, signed, tuple(values))

    def _signed(self, die: DIE) -> bool:
        """An enum is signed as its underlying type is (clang's BTF rule); without one, if a value is negative."""
        under = die
        for _ in range(64):
            if "DW_AT_type" not in under.attributes:
                break
            under = under.get_DIE_from_attribute("DW_AT_type")
            if under.tag == "DW_TAG_base_type":
                return _int(under, "DW_AT_encoding") in (_ATE_SIGNED, _ATE_SIGNED_CHAR)
        return any(
            c.tag == "DW_TAG_enumerator" and c.attributes["DW_AT_const_value"].form == "DW_FORM_sdata"
            for c in die.iter_children()
            if "DW_AT_const_value" in c.attributes
        )

    def _array(self, cu: CompileUnit, die: DIE) -> Type:
        element = self.ref(cu, die)
        dims = [c for c in die.iter_children() if c.tag == "DW_TAG_subrange_type"]
        if not dims:
            return Array(element, 0, 0)
        for sub in reversed(dims[1:]):  # innermost first: each dimension's elements are the next one's arrays
            self.extra.append(Array(element, self.ref(cu, sub), _count(sub)))
            element = len(self.dies) + len(self.extra)
        return Array(element, self.ref(cu, dims[0]), _count(dims[0]))

    def _prototype(self, cu: CompileUnit, die: DIE) -> Type:
        params = []
        for child in die.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                params.append(Param("", self.ref(cu, child)))
            elif child.tag == "DW_TAG_unspecified_parameters":
                params.append(Param("", 0))
        return FuncProto(self.ref(cu, die), tuple(params))


def _size_of(die: DIE) -> int | None:
    """``DW_AT_byte_size`` of the type ``die`` refers to, through typedefs and qualifiers."""
    for _ in range(64):
        if "DW_AT_type" not in die.attributes:
            return None
        die = die.get_DIE_from_attribute("DW_AT_type")
        size = _int(die, "DW_AT_byte_size")
        if size is not None:
            return size
    return None


def _count(subrange: DIE) -> int:
    """Elements of one array dimension: DW_AT_count, or the bounds; 0 when unknown (a flexible array)."""
    count = _int(subrange, "DW_AT_count")
    if count is not None:
        return count
    upper = _int(subrange, "DW_AT_upper_bound")
    if upper is None:
        return 0
    return max(0, upper - (_int(subrange, "DW_AT_lower_bound") or 0) + 1)


def _target(cu: CompileUnit, die: DIE, attribute: str = "DW_AT_type") -> int | None:
    """The absolute .debug_info offset of the DIE ``attribute`` refers to (None: absent, or in a type unit)."""
    attr = die.attributes.get(attribute)
    if attr is None or attr.form == "DW_FORM_ref_sig8":
        return None
    value = attr.value
    if not isinstance(value, int):
        return None
    return value if attr.form in ("DW_FORM_ref_addr", "DW_FORM_GNU_ref_alt") else value + cu.cu_offset


def _name(die: DIE) -> str:
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return ""
    value = attr.value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(die: DIE, attribute: str) -> int | None:
    attr = die.attributes.get(attribute)
    return attr.value if attr is not None and isinstance(attr.value, int) and not isinstance(attr.value, bool) else None


def _flag(die: DIE, attribute: str) -> bool:
    attr = die.attributes.get(attribute)
    return attr is not None and bool(attr.value)
