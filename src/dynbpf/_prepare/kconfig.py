"""``__kconfig`` externs: the ``.kconfig`` map's layout and the values libbpf would put in it.

A BPF object reads kernel configuration through externs that the loader
gathers into one read-only array map. Both the layout (which byte each
extern lives at) and the encoding (how ``CONFIG_X=m`` becomes bytes of the
extern's C type) follow libbpf exactly, because the object's BTF and every
instruction that reads an extern must agree with the map libbpf would have
built, and because programs compiled for libbpf expect libbpf's values.

Values come from the kernel config file (``/boot/config-$(uname -r)``,
else ``/proc/config.gz``, libbpf's order) for ``CONFIG_*`` externs, and
from libbpf's own rules for the virtual ``LINUX_*`` ones. A value an
extern cannot hold, and a strong extern without a value, are failures of
that extern alone: the programs that read it cannot be prepared, the
others can (libbpf fails the whole object instead).
"""

from __future__ import annotations

import enum
import gzip
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from dynbpf._btf import graph
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Array, Enum, Enum64, Int, IntEncoding
from dynbpf._elf.spec import ExternKind, ExternSpec
from dynbpf._probes.kernel import bpf_cookie
from dynbpf._sys import fs, perf
from dynbpf._sys import kernel_version as kernel_version_code
from dynbpf.errors import DynbpfError, KernelUnsupported, RelocationError

PROC_CONFIG = "/proc/config.gz"
TRISTATE_ENUM = "libbpf_tristate"
TRISTATE = {b"n": 0, b"y": 1, b"m": 2}  # TRI_NO, TRI_YES, TRI_MODULE

#: The arch part of syscall wrapper names (``__x64_sys_bpf``), by ``uname -m`` (libbpf's table).
_SYSCALL_PREFIX = {
    "x86_64": "x64",
    "i386": "ia32",
    "i686": "ia32",
    "s390x": "s390x",
    "s390": "s390",
    "aarch64": "arm64",
    "armv7l": "arm",
    "mips": "mips",
    "mips64": "mips",
    "riscv64": "riscv",
    "ppc64": "powerpc",
    "ppc64le": "powerpc",
    "loongarch64": "loongarch",
}


def boot_config_path() -> str:
    return f"/boot/config-{os.uname().release}"


class KconfigType(enum.Enum):
    """How libbpf encodes a value for an extern, decided by the extern's C type."""

    CHAR = "char"
    BOOL = "bool"
    INT = "integer"
    TRISTATE = "enum libbpf_tristate"
    CHAR_ARRAY = "char array"


@dataclass(frozen=True, slots=True)
class KconfigSlot:
    """One ``__kconfig`` extern's place in the ``.kconfig`` map."""

    name: str
    type: KconfigType
    size: int
    align: int
    signed: bool
    offset: int
    weak: bool


@dataclass(frozen=True, slots=True)
class KconfigLayout:
    """The ``.kconfig`` map's value: slots in libbpf's order, and its size in bytes."""

    slots: tuple[KconfigSlot, ...]
    size: int

    @property
    def offsets(self) -> dict[str, int]:
        return {s.name: s.offset for s in self.slots}


@dataclass(frozen=True, slots=True)
class KconfigValues:
    """The map's initial value, and the externs that got none they could hold (name -> why)."""

    data: bytes
    failures: Mapping[str, str]


# --- layout --------------------------------------------------------------------------------


def layout(btf: Spec, externs: Iterable[ExternSpec]) -> KconfigLayout:
    """Place the ``__kconfig`` externs as libbpf does.

    Sorted by alignment (largest first), then size (smallest first), then
    name; each offset rounded up to its alignment. A type libbpf cannot
    fill (a struct, a pointer, a 3-byte integer) raises
    :class:`~dynbpf.errors.RelocationError`: libbpf refuses to open such an
    object.
    """
    placed: list[tuple[int, int, str, KconfigType, bool, bool]] = []
    for ext in externs:
        if ext.kind is not ExternKind.KCONFIG:
            continue
        kind, signed = classify(btf, ext.type_id, ext.name)
        size = graph.size_of(btf, ext.type_id)
        placed.append((-graph.align_of(btf, ext.type_id), size, ext.name, kind, signed, ext.weak))
    placed.sort(key=lambda p: (p[0], p[1], p[2].encode("utf-8", "surrogateescape")))
    slots, end = [], 0
    for neg_align, size, name, kind, signed, weak in placed:
        align = -neg_align
        offset = -(-end // align) * align
        slots.append(KconfigSlot(name, kind, size, align, signed, offset, weak))
        end = offset + size
    return KconfigLayout(tuple(slots), end)


def classify(btf: Spec, type_id: int, name: str) -> tuple[KconfigType, bool]:
    """The encoding of a kconfig extern of type ``type_id``, and whether it is signed."""
    t = btf[graph.resolve(btf, type_id)]
    match t:
        case Int():
            if t.encoding & IntEncoding.BOOL:
                if t.size == 1:
                    return KconfigType.BOOL, False
            elif t.size == 1:
                return KconfigType.CHAR, bool(t.encoding & IntEncoding.SIGNED)
            elif t.size in (2, 4, 8):
                return KconfigType.INT, bool(t.encoding & IntEncoding.SIGNED)
        case Enum() | Enum64() if t.name == TRISTATE_ENUM and (t.size == 4 or isinstance(t, Enum64)):
            return KconfigType.TRISTATE, False
        case Array() if t.nelems > 0:
            elem = btf[graph.resolve(btf, t.type)]
            if isinstance(elem, Int) and elem.size == 1 and not elem.encoding & IntEncoding.BOOL:
                return KconfigType.CHAR_ARRAY, False
    raise RelocationError(
        f"kconfig extern {name!r}: type {graph.format_type(btf, type_id)!r} is not supported "
        "(libbpf fills bool, char, 1/2/4/8-byte integers, enum libbpf_tristate and char arrays)"
    )


# --- values ----------------------------------------------------------------------------------


_UINT = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_U64 = 1 << 64


def parse_u64(raw: bytes) -> int | None:
    """The whole of ``raw`` as ``strtoull(raw, &end, 0)`` reads it, or None if it is not (all) a number."""
    if not raw:
        return 0  # nothing to convert, nothing left over: libbpf rejects empty values before asking
    m = _UINT.fullmatch(raw)
    if m is None:
        return None
    sign, digits = m.groups()
    if digits[:2] in (b"0x", b"0X"):
        value = int(digits[2:], 16)
    elif digits[:1] == b"0":
        value = int(digits, 8)
    else:
        value = int(digits)
    if value >= _U64:
        return None  # strtoull's ERANGE
    return (_U64 - value) % _U64 if sign == b"-" else value


def encode(slot: KconfigSlot, value: str) -> bytes:
    """A config-file value (what follows ``CONFIG_X=``) as libbpf stores it for ``slot``.

    The first character decides: ``y``/``n``/``m`` is a tristate, ``"`` a
    string, anything else must be a whole integer (decimal, ``0x`` hex,
    ``0`` octal, optionally negative). Raises ``ValueError`` saying why the
    value does not fit the extern's type.
    """
    raw = value.encode("utf-8", "surrogateescape")
    head = raw[:1]
    if not raw:
        raise ValueError("empty value")
    if head in TRISTATE:
        return _tristate(slot, head)
    if head == b'"':
        return _string(slot, raw)
    number = parse_u64(raw)
    if number is None:
        raise ValueError(f"value {value!r} is not a valid integer")
    if slot.type not in (KconfigType.INT, KconfigType.CHAR):
        raise ValueError(f"value {value!r} implies an integer type, but the extern is {slot.type.value}")
    return encode_number(slot, number)


def encode_number(slot: KconfigSlot, value: int) -> bytes:
    """An unsigned 64-bit ``value`` stored into an integer, char or bool extern, if it fits without loss."""
    if slot.type not in (KconfigType.INT, KconfigType.CHAR, KconfigType.BOOL):
        raise ValueError(f"value {value} implies an integer, char or bool type, but the extern is {slot.type.value}")
    if slot.type is KconfigType.BOOL and value > 1:
        raise ValueError(f"value {value} is not a boolean")
    bits = slot.size * 8
    if slot.size != 8:
        fits = (value + (1 << (bits - 1))) % _U64 < 1 << bits if slot.signed else value >> bits == 0
        if not fits:
            raise ValueError(f"value {value} does not fit in {slot.size} bytes")
    return (value % (1 << bits)).to_bytes(slot.size, sys.byteorder)


def _tristate(slot: KconfigSlot, value: bytes) -> bytes:
    match slot.type:
        case KconfigType.BOOL:
            if value == b"m":
                raise ValueError("value 'm' implies a tristate or char type, but the extern is bool")
            return bytes([value == b"y"])
        case KconfigType.TRISTATE:
            return TRISTATE[value].to_bytes(slot.size, sys.byteorder)
        case KconfigType.CHAR:
            return value
    raise ValueError(
        f"value {value.decode()!r} implies a bool, tristate or char type, but the extern is {slot.type.value}"
    )


def _string(slot: KconfigSlot, raw: bytes) -> bytes:
    if slot.type is not KconfigType.CHAR_ARRAY:
        raise ValueError(f"a string value implies a char array, but the extern is {slot.type.value}")
    if len(raw) < 2 or not raw.endswith(b'"'):
        raise ValueError(f"invalid string value {raw.decode('utf-8', 'replace')!r}")
    body = raw[1:-1][: slot.size - 1]  # libbpf truncates, keeping the terminating NUL
    return body.ljust(slot.size, b"\0")


def fill(
    layout: KconfigLayout,
    config: Mapping[str, str] | None = None,
    *,
    virtual: Callable[[str], int | None] | None = None,
) -> KconfigValues:
    """The ``.kconfig`` map's initial value for ``layout``.

    ``config`` maps ``CONFIG_*`` names to their values as the config file
    writes them; None reads the running kernel's (only if a ``CONFIG_``
    extern exists). ``virtual`` gives ``LINUX_*`` values (None: libbpf's,
    :func:`linux_value`). Weak externs without a value stay zero.
    """
    data = bytearray(layout.size)
    failures: dict[str, str] = {}
    unreadable = ""
    if config is None and any(s.name.startswith("CONFIG_") for s in layout.slots):
        try:
            config = read_kernel_config()
        except KernelUnsupported as e:
            config, unreadable = {}, f" ({e.how})"
        except RelocationError as e:
            config, unreadable = {}, f" (the config file is unusable: {e})"
    values = virtual if virtual is not None else linux_value
    for slot in layout.slots:
        try:
            if slot.name.startswith("CONFIG_"):
                assert config is not None
                raw = config.get(slot.name)
                if raw is None:
                    if not slot.weak:
                        failures[slot.name] = (
                            f"kconfig extern {slot.name!r} is not set in the kernel config{unreadable}"
                        )
                    continue
                encoded = encode(slot, raw)
            else:
                number = values(slot.name)
                if number is None:
                    if not slot.name.startswith("LINUX_") or not slot.weak:
                        failures[slot.name] = (
                            f"kconfig extern {slot.name!r} is neither CONFIG_* nor a LINUX_* value libbpf provides"
                        )
                    continue
                encoded = encode_number(slot, number)
        except (ValueError, DynbpfError) as e:
            failures[slot.name] = f"kconfig extern {slot.name!r}: {e}"
            continue
        data[slot.offset : slot.offset + slot.size] = encoded
    return KconfigValues(bytes(data), failures)


# --- the kernel config file ---------------------------------------------------------------------


def parse_config(data: bytes, *, source: str = "kernel config") -> dict[str, str]:
    """``CONFIG_X=value`` lines of a kernel config, first occurrence winning (as libbpf reads them).

    Other lines, ``# CONFIG_X is not set`` among them, are ignored: libbpf
    treats such an option as absent, so a strong extern for it fails. A
    ``CONFIG_`` line without ``=`` or without a value makes the whole file
    unusable, as in libbpf (:class:`~dynbpf.errors.RelocationError`).
    """
    out: dict[str, str] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.startswith(b"CONFIG_"):
            continue
        name, sep, value = line.partition(b"=")
        if not sep or not value:
            why = "no '='" if not sep else "no value"
            raise RelocationError(f"{source} line {number}: {why} in {line[:80].decode('utf-8', 'replace')!r}")
        out.setdefault(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
    return out


_config_lock = threading.Lock()
_config: list[Mapping[str, str]] = []


def read_kernel_config() -> Mapping[str, str]:
    """The running kernel's configuration, read once per process.

    From ``/boot/config-$(uname -r)``, else ``/proc/config.gz`` (libbpf's
    order; either may be gzip-compressed). Raises
    :class:`~dynbpf.errors.KernelUnsupported` naming both paths when
    neither exists.
    """
    if _config:
        return _config[0]
    with _config_lock:
        if not _config:
            _config.append(_read_config_file())
        return _config[0]


def _read_config_file() -> Mapping[str, str]:
    paths = (boot_config_path(), PROC_CONFIG)
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise KernelUnsupported("kernel config", f"reading {path}: {e.strerror}") from None
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as e:
                raise KernelUnsupported("kernel config", f"decompressing {path}: {e}") from None
        return parse_config(data, source=path)
    raise KernelUnsupported("kernel config", f"neither {paths[0]} nor {paths[1]} exists")


def clear_cache() -> None:
    """Forget the config file and probe results read so far (tests)."""
    with _config_lock:
        _config.clear()
        _probes.clear()


# --- values libbpf provides ------------------------------------------------------------------


def kernel_version() -> int:
    """``LINUX_KERNEL_VERSION``: libbpf 1.1's value, else the kernel's own from the vDSO; 0 if neither tells."""
    return kernel_version_code.code()


_probes: dict[str, bool] = {}


def has_syscall_wrapper() -> bool:
    """``LINUX_HAS_SYSCALL_WRAPPER``: can ``__<arch>_sys_bpf`` be kprobed? (libbpf's probe).

    libbpf opens a kprobe perf event on the wrapper; without the kprobe PMU
    it adds (and removes) a kprobe through tracefs ``kprobe_events``
    instead. A kernel without kprobes answers 0 either way.
    """
    with _config_lock:
        cached = _probes.get("syscall_wrapper")
        if cached is None:
            prefix = _SYSCALL_PREFIX.get(os.uname().machine)
            cached = _probes["syscall_wrapper"] = prefix is not None and _can_kprobe(f"__{prefix}_sys_bpf")
        return cached


def _can_kprobe(symbol: str) -> bool:
    pmu = perf.pmu_type("kprobe")
    if pmu is not None:
        attr, _keep = perf.probe_attr(pmu, target=symbol.encode(), offset=0, retprobe_bit=None)
        try:
            perf.perf_event_open(attr, pid=os.getpid(), cpu=-1, what=f"kprobe {symbol}").close()
        except DynbpfError:
            return False
        return True
    root = fs.tracefs_root()
    if root is None:
        return False
    events = f"{root}/kprobe_events"
    probe = f"dynbpf_{os.getpid()}_{symbol}"
    try:
        with open(events, "a") as f:
            f.write(f"p:kprobes/{probe} {symbol}+0x0\n")
    except OSError:
        return False
    try:
        with open(events, "a") as f:
            f.write(f"-:kprobes/{probe}\n")
    except OSError:
        pass  # the probe stays registered but disabled: harmless, as in libbpf
    return True


def has_bpf_cookie() -> bool:
    """``LINUX_HAS_BPF_COOKIE``: may a tracing program call bpf_get_attach_cookie (libbpf's probe)."""
    return bpf_cookie().supported


_LINUX_VALUES: dict[str, Callable[[], int]] = {
    "LINUX_KERNEL_VERSION": kernel_version,
    "LINUX_HAS_BPF_COOKIE": lambda: int(has_bpf_cookie()),
    "LINUX_HAS_SYSCALL_WRAPPER": lambda: int(has_syscall_wrapper()),
}


def linux_value(name: str) -> int | None:
    """The value libbpf gives the virtual extern ``name``; None for names it does not provide.

    LINUX_KERNEL_VERSION is never 0: a kernel whose version nothing tells is an error.
    """
    provide = _LINUX_VALUES.get(name)
    if provide is None:
        return None
    value = provide()
    if name == "LINUX_KERNEL_VERSION" and value == 0:
        raise ValueError(f"cannot tell the kernel version from uname release {os.uname().release!r} or the vDSO")
    return value


__all__ = [
    "KconfigLayout",
    "KconfigSlot",
    "KconfigType",
    "KconfigValues",
    "boot_config_path",
    "classify",
    "encode",
    "encode_number",
    "fill",
    "kernel_version",
    "layout",
    "linux_value",
    "parse_config",
    "parse_u64",
    "read_kernel_config",
]
