"""Object BTF made acceptable to the running kernel, and loaded into it.

The kernel refuses a whole blob if one record uses a kind it does not know.
libbpf therefore rewrites, in a copy, every record the kernel cannot take
into one it can, keeping each record's length, id and name where the new
kind allows one (``bpf_object__sanitize_btf``):

=================== ============================================================
kernel lacks        rewrite
=================== ============================================================
DATASEC/VAR         VAR → 1-byte INT; DATASEC → STRUCT of its variables, ``.``
                    and ``?`` in the name turned into ``_``
``?`` in DATASEC    leading ``?`` of a DATASEC name → ``_``
FUNC                FUNC_PROTO → ENUM (parameters as values, unnamed ones
                    called ``p``); FUNC → TYPEDEF
global FUNC         FUNC linkage → static
FLOAT               anonymous STRUCT of the same size
DECL_TAG            1-byte INT
TYPE_TAG            anonymous CONST
ENUM64              ENUM64 → UNION of 1-byte INT members (one INT appended);
                    the signedness flag of ENUM cleared
=================== ============================================================

Two departures from libbpf. It renames DATASECs by editing their string in
place; here the new name is appended, so the original string table stays a
prefix of the new one and line_info offsets stay valid. And it leaves the
parameters of function pointer prototypes unnamed when they become
enumerators, which the kernel refuses; they are named ``p`` here, as its
maintainers proposed. Programs may only carry func_info and line_info
when the kernel knows FUNC (:func:`func_info_supported`).
"""

from __future__ import annotations

import ctypes
import errno
import re
import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from dynbpf import _section_names as section_names
from dynbpf._btf.errors import TypeNotFound
from dynbpf._btf.kinds import Kind, info
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import (
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Int,
    IntEncoding,
    Member,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
)
from dynbpf._prepare.btf_rewrite import rewrite
from dynbpf._probes.btf_kinds import btf_kind
from dynbpf._probes.maps import raw_btf
from dynbpf._probes.result import Support, cached, outcome
from dynbpf._sys import commands
from dynbpf._sys.constants import Cmd
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import hint
from dynbpf.errors import ObjectFormatError, SyscallError

#: the INT libbpf appends once to stand in for every ENUM64 value
ENUM64_PLACEHOLDER = "enum64_placeholder"
#: the name given to unnamed parameters when a FUNC_PROTO becomes an ENUM (an enumerator needs one)
UNNAMED_PARAM = "p"


@dataclass(frozen=True, slots=True)
class BtfSupport:
    """Which BTF features the kernel accepts: one flag per rewrite libbpf knows.

    Fields are in the order kernels gained them, so a real kernel lacking one
    feature lacks every later one too (:meth:`before`).
    """

    func: bool = True  # FUNC, FUNC_PROTO: Linux 5.0
    datasec: bool = True  # VAR, DATASEC: 5.2
    func_global: bool = True  # FUNC linkage global: 5.6
    float: bool = True  # 5.13
    decl_tag: bool = True  # 5.16
    type_tag: bool = True  # 5.17
    enum64: bool = True  # ENUM64, signed ENUM: 6.0
    qmark_datasec: bool = True  # DATASEC names starting with '?' (the newest)

    ALL: ClassVar[BtfSupport]

    @classmethod
    def probe(cls) -> BtfSupport:
        """The running kernel's support, each feature probed once per process."""
        return cls(
            func=btf_kind("func").supported,
            datasec=btf_kind("datasec").supported,
            func_global=btf_kind("func_global").supported,
            float=btf_kind("float").supported,
            decl_tag=btf_kind("decl_tag").supported,
            type_tag=btf_kind("type_tag").supported,
            enum64=btf_kind("enum64").supported,
            qmark_datasec=qmark_datasec().supported,
        )

    def without(self, *features: str) -> BtfSupport:
        """This support with ``features`` (field names) missing: how tests pretend to be an older kernel."""
        unknown = set(features) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown BTF features {sorted(unknown)}")
        values = {f.name: getattr(self, f.name) and f.name not in features for f in fields(self)}
        return BtfSupport(**values)

    @classmethod
    def before(cls, feature: str) -> BtfSupport:
        """What a kernel has that predates ``feature``: it and every later feature missing."""
        names = [f.name for f in fields(cls)]
        if feature not in names:
            raise ValueError(f"unknown BTF feature {feature!r}")
        return cls.ALL.without(*names[names.index(feature) :])

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if not getattr(self, f.name))


BtfSupport.ALL = BtfSupport()


@cached
def qmark_datasec() -> Support:
    """Whether DATASEC names may start with ``?`` (libbpf's FEAT_BTF_QMARK_DATASEC)."""
    types = (
        struct.pack("<IIII", 0, info(Kind.INT), 4, (1 << 24) | 32)  # [1] int
        + struct.pack("<IIII", 1, info(Kind.VAR), 1, 0)  # [2] static int x
        + struct.pack("<III", 3, info(Kind.DATASEC, 1), 4)  # [3] DATASEC ?.data
        + struct.pack("<III", 2, 0, 4)
    )
    try:
        with commands.btf_load(raw_btf(types, b"\0x\0?.data\0")):
            err = 0
    except SyscallError as e:
        err = e.errno
    return Support("BTF DATASEC names starting with '?'", err == 0, f"BPF_BTF_LOAD of DATASEC ?.data -> {outcome(err)}")


def func_info_supported(support: BtfSupport) -> bool:
    """Whether programs may be loaded with func_info and line_info (libbpf drops both without FUNC)."""
    return support.func


def sanitize(spec: Spec, support: BtfSupport) -> Spec:
    """``spec`` with every record the kernel cannot take rewritten (see the module docstring); ids kept."""
    if not support.missing:
        return spec
    replace: dict[int, Type] = {}
    for type_id, t in spec.types():
        new = _rewrite(spec, t, support)
        if new is not None:
            replace[type_id] = new
    enum64 = any(spec.kind(type_id) == Kind.ENUM64 for type_id in replace)
    append = [Int(ENUM64_PLACEHOLDER, 1, IntEncoding.NONE, 0, 8)] if enum64 else []
    return rewrite(spec, replace, append)


_MAX_BYTE_OFFSET = 0xFFFFFFFF // 8


def _rewrite(spec: Spec, t: Type, support: BtfSupport) -> Type | None:
    """What ``t`` becomes for a kernel with ``support``, or None to keep it; the order is libbpf's."""
    if (not support.datasec and isinstance(t, Var)) or (not support.decl_tag and isinstance(t, DeclTag)):
        return Int(t.name, 1, IntEncoding.NONE, 0, 8)
    if not support.datasec and isinstance(t, Datasec):
        for v in t.vars:
            if v.offset > _MAX_BYTE_OFFSET:
                raise ObjectFormatError(
                    f"DATASEC {t.name!r}: a variable at offset {v.offset} cannot become a struct member "
                    f"(member bit offsets are 32-bit) for a kernel without DATASEC",
                    section=section_names.BTF,
                )
        members = tuple(Member(_name(spec, v.type), v.type, v.offset * 8) for v in t.vars)
        return Struct(t.name.replace(".", "_").replace("?", "_"), t.size, members)
    if not support.qmark_datasec and isinstance(t, Datasec) and t.name.startswith("?"):
        return Datasec("_" + t.name[1:], t.size, t.vars)
    if not support.func and isinstance(t, FuncProto):
        values = tuple(EnumValue(p.name or UNNAMED_PARAM, p.type) for p in t.params)
        return Enum(t.name, 4, False, values)
    if not support.func and isinstance(t, Func):
        return Typedef(t.name, t.type)
    if not support.func_global and isinstance(t, Func):
        return Func(t.name, t.type, FuncLinkage.STATIC) if t.linkage != FuncLinkage.STATIC else None
    if not support.float and isinstance(t, Float):
        return Struct("", t.size, ())
    if not support.type_tag and isinstance(t, TypeTag):
        return Const(t.type)
    if not support.enum64 and isinstance(t, Enum):
        return Enum(t.name, t.size, False, tuple(EnumValue(v.name, v.value & 0xFFFFFFFF) for v in t.values))
    if not support.enum64 and isinstance(t, Enum64):
        placeholder = len(spec)  # appended by sanitize(), the only type it adds
        return Union(t.name, t.size, tuple(Member(v.name, placeholder, 0) for v in t.values))
    return None


def _name(spec: Spec, type_id: int) -> str:
    try:
        t = spec[type_id]
    except TypeNotFound:
        return ""  # the kernel will name the dangling reference when it refuses the blob
    return t.name if t is not None else ""


# --- loading ----------------------------------------------------------------------------------

#: first log buffer for a failed load, and the most it grows to (libbpf's BPF_LOG_BUF_SIZE)
LOG_START = 64 * 1024
LOG_MAX = 16 * 1024 * 1024

_TYPE_LINE = re.compile(r"^\[(\d+)\] ")


class BtfLoadError(SyscallError):
    """BPF_BTF_LOAD refused a blob; carries the kernel's log and the type it stopped at."""

    def __init__(self, errno: int, log: str, *, spec: Spec, detail: str = "") -> None:
        self.log = log
        self.type_id, self.reason = _failure(log)
        if self.type_id is None:
            message = self.reason or hint(Cmd.BTF_LOAD, errno)
        else:
            message = f"type [{self.type_id}] {_describe(spec, self.type_id)} refused: {self.reason}"
        super().__init__("BPF_BTF_LOAD", errno, message, detail)

    def __str__(self) -> str:
        base = super().__str__()
        tail = "\n".join(self.log.rstrip().splitlines()[-10:])
        return f"{base}\nBTF log (last lines):\n{tail}" if tail else base


def _describe(spec: Spec, type_id: int) -> str:
    try:
        t = spec[type_id]
    except TypeNotFound:
        return "(not in this blob)"
    if t is None:
        return "void"
    return f"{t.kind.name} {t.name!r}" if t.name else t.kind.name


def _failure(log: str) -> tuple[int | None, str]:
    """The type the kernel was checking when it gave up (its last ``[id]`` line) and the log's last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    type_id = None
    for line in reversed(lines):
        m = _TYPE_LINE.match(line)
        if m:
            type_id = int(m.group(1))
            break
    return type_id, _TYPE_LINE.sub("", lines[-1]) if lines else ""


def load(spec: Spec, *, name: str = "", log_size: int = LOG_START) -> Fd:
    """BPF_BTF_LOAD of ``spec``; if the kernel refuses it, load again with a log and raise :class:`BtfLoadError`.

    ``name`` (the object's) only labels the error. The log buffer starts at
    ``log_size`` bytes and grows while the kernel says it was too small, or fills it.
    """
    data = spec.encode()
    detail = f"BTF of {name}" if name else ""
    try:
        return commands.btf_load(data)
    except SyscallError:
        pass
    size = log_size
    while True:
        log = ctypes.create_string_buffer(size)
        try:
            return commands.btf_load(data, log=log, log_level=1)  # the first failure was transient
        except SyscallError as e:
            # before 6.4 a refusal does not say ENOSPC when the log did not fit: a full buffer says it
            full = len(log.value) >= size - 1
            if (e.errno == errno.ENOSPC or full) and size < LOG_MAX:
                size = min(size * 4, LOG_MAX)
                continue
            text = log.value.decode("utf-8", "replace")
            raise BtfLoadError(e.errno, text, spec=spec, detail=detail) from None
