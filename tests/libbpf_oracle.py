"""libbpf 1.1 as ground truth for what a BPF object contains.

Tests compare dynbpf's reading of an object with libbpf's, so this module
opens objects with the system libbpf through ctypes and copies out what
libbpf saw: programs (section, type, attach type, instruction count after
open, autoload, flags) and maps (definition, pin path, BTF ids, initial data
of global-data maps). Objects are only opened, never loaded: no kernel access.

Only symbols exported by libbpf 1.1.2 are used. libbpf reports problems
through its print callback, so every open captures that output; a failed open
raises `LibbpfError` carrying libbpf's own messages.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LIBBPF_PATH = "/usr/lib/x86_64-linux-gnu/libbpf.so.1"

#: Fixtures (tests/bpf/<name>.bpf.c) that libbpf 1.1 refuses to open, and why.
LIBBPF_REFUSES: dict[str, str] = {
    "legacy_maps": 'libbpf 1.0 dropped SEC("maps") struct bpf_map_def definitions',
}

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LEVELS = ("warn", "info", "debug")


class LibbpfError(Exception):
    """libbpf refused an object; `log` holds everything it printed while trying."""

    def __init__(self, message: str, log: tuple[str, ...]) -> None:
        self.log = log
        detail = "\n".join(log[-20:])
        super().__init__(f"{message}\nlibbpf said:\n{detail}" if log else message)


@dataclass(frozen=True, slots=True)
class LibbpfProgram:
    name: str
    section: str
    prog_type: int
    expected_attach_type: int
    insn_cnt: int
    autoload: bool
    flags: int

    @property
    def prog_type_name(self) -> str | None:
        """libbpf's name for the type ("xdp", "kprobe"); None for types libbpf 1.1 does not know."""
        return _enum_str("libbpf_bpf_prog_type_str", self.prog_type)

    @property
    def attach_type_name(self) -> str | None:
        return _enum_str("libbpf_bpf_attach_type_str", self.expected_attach_type)


@dataclass(frozen=True, slots=True)
class LibbpfMap:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    numa_node: int
    map_extra: int
    pin_path: str | None
    btf_key_type_id: int
    btf_value_type_id: int
    initial_value: bytes | None
    """Contents of a global-data map (.data, .rodata, .bss, .kconfig...); None for other maps."""
    is_internal: bool

    @property
    def type_name(self) -> str | None:
        return _enum_str("libbpf_bpf_map_type_str", self.type)


@dataclass(frozen=True, slots=True)
class LibbpfObject:
    path: Path
    name: str
    programs: tuple[LibbpfProgram, ...]
    maps: tuple[LibbpfMap, ...]
    log: tuple[str, ...]

    def program(self, name: str) -> LibbpfProgram:
        for p in self.programs:
            if p.name == name:
                return p
        raise KeyError(f"{self.path.name} has no program {name!r}; it has {[p.name for p in self.programs]}")

    def map(self, name: str) -> LibbpfMap:
        for m in self.maps:
            if m.name == name:
                return m
        raise KeyError(f"{self.path.name} has no map {name!r}; it has {[m.name for m in self.maps]}")

    def sections(self) -> dict[str, list[str]]:
        """Section name -> names of the programs in it, in libbpf's order."""
        out: dict[str, list[str]] = {}
        for p in self.programs:
            out.setdefault(p.section, []).append(p.name)
        return out


@cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBBPF_PATH, use_errno=True)
    vp, cp, u32, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_int
    signatures: dict[str, tuple[type | None, list[type]]] = {
        "libbpf_set_print": (vp, [vp]),
        "libbpf_version_string": (cp, []),
        "libbpf_bpf_prog_type_str": (cp, [i32]),
        "libbpf_bpf_attach_type_str": (cp, [i32]),
        "libbpf_bpf_map_type_str": (cp, [i32]),
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__name": (cp, [vp]),
        "bpf_object__next_program": (vp, [vp, vp]),
        "bpf_object__next_map": (vp, [vp, vp]),
        "bpf_program__name": (cp, [vp]),
        "bpf_program__section_name": (cp, [vp]),
        "bpf_program__type": (i32, [vp]),
        "bpf_program__expected_attach_type": (i32, [vp]),
        "bpf_program__insn_cnt": (ctypes.c_size_t, [vp]),
        "bpf_program__autoload": (ctypes.c_bool, [vp]),
        "bpf_program__flags": (u32, [vp]),
        "bpf_map__name": (cp, [vp]),
        "bpf_map__type": (i32, [vp]),
        "bpf_map__key_size": (u32, [vp]),
        "bpf_map__value_size": (u32, [vp]),
        "bpf_map__max_entries": (u32, [vp]),
        "bpf_map__map_flags": (u32, [vp]),
        "bpf_map__numa_node": (u32, [vp]),
        "bpf_map__map_extra": (ctypes.c_uint64, [vp]),
        "bpf_map__pin_path": (cp, [vp]),
        "bpf_map__btf_key_type_id": (u32, [vp]),
        "bpf_map__btf_value_type_id": (u32, [vp]),
        "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(ctypes.c_size_t)]),
        "bpf_map__is_internal": (ctypes.c_bool, [vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.restype = ctypes.c_int
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


def _enum_str(fn: str, value: int) -> str | None:
    s: bytes | None = getattr(_lib(), fn)(value)
    return s.decode() if s is not None else None


def libbpf_version() -> str:
    v: bytes = _lib().libbpf_version_string()
    return v.decode()


# libbpf's print hook is process-wide: one open at a time owns it.
_print_lock = threading.Lock()
_captured: list[str] = []


def _on_print(level: int, fmt: bytes | None, args: int | None) -> int:
    # On x86-64 a va_list argument arrives as a pointer, which vsnprintf accepts as is.
    buf = ctypes.create_string_buffer(4096)
    _libc().vsnprintf(buf, len(buf), fmt, args)
    tag = _LEVELS[level] if 0 <= level < len(_LEVELS) else str(level)
    _captured.append(f"{tag}: {buf.value.decode(errors='replace').rstrip()}")
    return 0


_print_cb = _PRINT_FN(_on_print)


def _str(b: bytes | None) -> str:
    return b.decode() if b is not None else ""


def _iterate(next_fn: Callable[[int, int | None], int | None], obj: int) -> Iterator[int]:
    item = next_fn(obj, None)
    while item:
        yield item
        item = next_fn(obj, item)


def _program(lib: ctypes.CDLL, p: int) -> LibbpfProgram:
    return LibbpfProgram(
        name=_str(lib.bpf_program__name(p)),
        section=_str(lib.bpf_program__section_name(p)),
        prog_type=lib.bpf_program__type(p),
        expected_attach_type=lib.bpf_program__expected_attach_type(p),
        insn_cnt=lib.bpf_program__insn_cnt(p),
        autoload=lib.bpf_program__autoload(p),
        flags=lib.bpf_program__flags(p),
    )


def _map(lib: ctypes.CDLL, m: int) -> LibbpfMap:
    size = ctypes.c_size_t(0)
    data = lib.bpf_map__initial_value(m, ctypes.byref(size))
    pin = lib.bpf_map__pin_path(m)
    return LibbpfMap(
        name=_str(lib.bpf_map__name(m)),
        type=lib.bpf_map__type(m),
        key_size=lib.bpf_map__key_size(m),
        value_size=lib.bpf_map__value_size(m),
        max_entries=lib.bpf_map__max_entries(m),
        map_flags=lib.bpf_map__map_flags(m),
        numa_node=lib.bpf_map__numa_node(m),
        map_extra=lib.bpf_map__map_extra(m),
        pin_path=pin.decode() if pin is not None else None,
        btf_key_type_id=lib.bpf_map__btf_key_type_id(m),
        btf_value_type_id=lib.bpf_map__btf_value_type_id(m),
        initial_value=ctypes.string_at(data, size.value) if data else None,
        is_internal=lib.bpf_map__is_internal(m),
    )


def open_object(path: str | os.PathLike[str]) -> LibbpfObject:
    """Open `path` with libbpf (never load it) and describe what libbpf found."""
    lib = _lib()
    path = Path(path)
    with _print_lock:
        _captured.clear()
        previous = lib.libbpf_set_print(ctypes.cast(_print_cb, ctypes.c_void_p))
        try:
            obj = lib.bpf_object__open_file(os.fsencode(path), None)
            err = ctypes.get_errno()
            log = tuple(_captured)
            if not obj:
                raise LibbpfError(f"libbpf could not open {path}: {os.strerror(err)} (errno {err})", log)
            try:
                return LibbpfObject(
                    path=path,
                    name=_str(lib.bpf_object__name(obj)),
                    programs=tuple(_program(lib, p) for p in _iterate(lib.bpf_object__next_program, obj)),
                    maps=tuple(_map(lib, m) for m in _iterate(lib.bpf_object__next_map, obj)),
                    log=log,
                )
            finally:
                lib.bpf_object__close(obj)
        finally:
            lib.libbpf_set_print(previous)
            _captured.clear()
