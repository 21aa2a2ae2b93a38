"""libbpf 1.1 as ground truth for what a BPF object contains and what it loads.

Tests compare dynbpf with libbpf, so this module drives the system libbpf
through ctypes and copies out what libbpf saw or did:

- `open_object` opens an object (no kernel access) and describes its
  programs (section, type, attach type, instruction count after open,
  autoload, flags) and maps (definition, pin path, BTF ids, initial data of
  global-data maps);
- `load_one` loads one program of an object the way libbpf would, and
  reports the kernel's tag, the instructions libbpf sent, the map fds they
  embed, and libbpf's messages (the verifier log among them) when it fails.

Tests that drive libbpf further (a kconfig, a custom kernel BTF, BTF
queries) use the same plumbing: `libbpf()` (the library with every signature
declared), `libbpf_object()` (open with options, messages captured) and
`iterate()`.

Only symbols exported by libbpf 1.1.2 are used. libbpf reports problems
through its print callback, so every call captures that output; a failed open
raises `LibbpfError` carrying libbpf's own messages. docs/oracle.md says what
the comparisons built on this module check.
"""

from __future__ import annotations

import contextlib
import ctypes
import difflib
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dynbpf._asm.disasm import text
from dynbpf._asm.insn import Insn, decode
from dynbpf._asm.opcodes import PseudoLd
from dynbpf._btf.kinds import Kind
from dynbpf._probes.trial import kernel_btf_id
from dynbpf._sys import commands, kernel_version
from dynbpf._sys.attrs import ProgInfo

LIBBPF_PATH = "/usr/lib/x86_64-linux-gnu/libbpf.so.1"

#: Fixtures (tests/bpf/<name>.bpf.c) that libbpf 1.1 refuses to open, and why.
LIBBPF_REFUSES: dict[str, str] = {
    "legacy_maps": 'libbpf 1.0 dropped SEC("maps") struct bpf_map_def definitions',
    "staticmaps": 'libbpf refuses static maps in .maps ("unsupported map linkage static"); dynbpf opens them',
}

#: Strong (not __weak) kfuncs fixture programs call: fixture -> program -> kfuncs. A kernel without one of
#: them (6.1 has none of bpf_task_*) cannot load that program with either loader; libbpf 1.1, which resolves
#: every extern of an object when it loads any program, cannot load the object at all.
STRONG_KFUNCS: dict[str, dict[str, tuple[str, ...]]] = {
    "externs": {"acquire_new_task": ("bpf_task_acquire", "bpf_task_release")},
    "btf_edges": {"handle": ("bpf_task_acquire", "bpf_task_release")},
}

#: Fixtures reading LINUX_KERNEL_VERSION. libbpf 1.1 takes it from three numbers in ``uname -r`` and refuses
#: the object when there are none (Debian's 7.x kernels say ``7.3-amd64``); dynbpf then asks the vDSO.
KERNEL_VERSION_READERS = frozenset({"externs", "externs_kconfig", "btf_edges"})


def missing_kfuncs(fixture: str) -> dict[str, tuple[str, ...]]:
    """The programs of ``fixture`` calling a strong kfunc the running kernel's BTF lacks, with those kfuncs."""
    out = {}
    for program, kfuncs in STRONG_KFUNCS.get(fixture, {}).items():
        missing = tuple(k for k in kfuncs if kernel_btf_id(k, Kind.FUNC) is None)
        if missing:
            out[program] = missing
    return out


def libbpf_kernel_refusal(fixture: str) -> str | None:
    """What libbpf 1.1 says when it cannot load ``fixture``'s object on this kernel (None: it can)."""
    missing = sorted({k for kfuncs in missing_kfuncs(fixture).values() for k in kfuncs})
    if missing:
        return f"extern (func ksym) '{missing[0]}': not found in kernel"
    if fixture in KERNEL_VERSION_READERS and kernel_version.libbpf_code() == 0:
        return "failed to get kernel version"
    return None


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
def libbpf() -> ctypes.CDLL:
    """The system libbpf, every function the tests call declared (restype and argtypes)."""
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
        "bpf_object__unpin_maps": (i32, [vp, cp]),
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
        "bpf_object__load": (i32, [vp]),
        "bpf_program__set_autoload": (i32, [vp, ctypes.c_bool]),
        "bpf_program__fd": (i32, [vp]),
        "bpf_program__insns": (vp, [vp]),
        "bpf_map__fd": (i32, [vp]),
        "bpf_map__set_max_entries": (i32, [vp, u32]),
        "bpf_map__set_value_size": (i32, [vp, u32]),
        "bpf_map__set_key_size": (i32, [vp, u32]),
        "bpf_map__set_type": (i32, [vp, i32]),
        "bpf_map__set_map_flags": (i32, [vp, u32]),
        "bpf_map__set_numa_node": (i32, [vp, u32]),
        "bpf_map__set_map_extra": (i32, [vp, ctypes.c_uint64]),
        "bpf_map__set_autocreate": (i32, [vp, ctypes.c_bool]),
        "bpf_map__set_inner_map_fd": (i32, [vp, i32]),
        "bpf_object__btf": (vp, [vp]),
        "bpf_object__btf_fd": (i32, [vp]),
        "btf__find_by_name_kind": (i32, [vp, cp, u32]),
        "btf__type_by_id": (vp, [vp, u32]),
        "btf__name_by_offset": (cp, [vp, u32]),
        "libbpf_prog_type_by_name": (i32, [cp, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
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
    libc.vsnprintf.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


def _enum_str(fn: str, value: int) -> str | None:
    s: bytes | None = getattr(libbpf(), fn)(value)
    return s.decode() if s is not None else None


def libbpf_version() -> str:
    v: bytes = libbpf().libbpf_version_string()
    return v.decode()


# libbpf's print hook is process-wide: one open at a time owns it.
_print_lock = threading.Lock()
_captured: list[str] = []


class OpenOpts(ctypes.Structure):
    """``struct bpf_object_open_opts`` of libbpf 1.1 (tests pass a kconfig or a custom kernel BTF through it)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class _VaList(ctypes.Structure):
    """x86-64's va_list element; copying it is what va_copy does there."""

    _fields_ = [
        ("gp_offset", ctypes.c_uint),
        ("fp_offset", ctypes.c_uint),
        ("overflow_arg_area", ctypes.c_void_p),
        ("reg_save_area", ctypes.c_void_p),
    ]


def _on_print(level: int, fmt: bytes | None, args: int | None) -> int:
    # On x86-64 a va_list argument arrives as a pointer, which vsnprintf accepts as is.
    # A verifier log arrives as one message of megabytes: measure on a copy of the
    # va_list (vsnprintf consumes the one it is given), then format in full.
    libc = _libc()
    if args:
        probe = _VaList.from_address(args)
        copy = _VaList(probe.gp_offset, probe.fp_offset, probe.overflow_arg_area, probe.reg_save_area)
        size = max(libc.vsnprintf(None, 0, fmt, ctypes.addressof(copy)), 0) + 1
    else:
        size = 4096
    buf = ctypes.create_string_buffer(size)
    libc.vsnprintf(buf, len(buf), fmt, args)
    tag = _LEVELS[level] if 0 <= level < len(_LEVELS) else str(level)
    _captured.append(f"{tag}: {buf.value.decode(errors='replace').rstrip()}")
    return 0


_print_cb = _PRINT_FN(_on_print)


def _str(b: bytes | None) -> str:
    return b.decode() if b is not None else ""


def iterate(next_fn: Callable[[int, int | None], int | None], obj: int) -> Iterator[int]:
    """An object's programs or maps: ``next_fn`` is ``bpf_object__next_program`` or ``__next_map``."""
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
    lib = libbpf()
    path = Path(path)
    with libbpf_object(path) as obj:
        return LibbpfObject(
            path=path,
            name=_str(lib.bpf_object__name(obj)),
            programs=tuple(_program(lib, p) for p in iterate(lib.bpf_object__next_program, obj)),
            maps=tuple(_map(lib, m) for m in iterate(lib.bpf_object__next_map, obj)),
            log=tuple(_captured),
        )


def captured() -> tuple[str, ...]:
    """What libbpf has printed (``level: message``) since the open of the `libbpf_object` in use."""
    return tuple(_captured)


@contextlib.contextmanager
def libbpf_object(path: Path, opts: OpenOpts | None = None) -> Iterator[int]:
    """A freshly opened bpf_object (``opts``: its open options), closed on exit; what libbpf prints
    meanwhile is `captured()`; an object libbpf cannot open is a `LibbpfError`.

    The print hook is process-wide, so the object's whole life holds the lock.
    """
    lib = libbpf()
    with _print_lock:
        _captured.clear()
        previous = lib.libbpf_set_print(ctypes.cast(_print_cb, ctypes.c_void_p))
        try:
            obj = lib.bpf_object__open_file(os.fsencode(path), ctypes.byref(opts) if opts is not None else None)
            err = ctypes.get_errno()
            if not obj:
                raise LibbpfError(f"libbpf could not open {path}: {os.strerror(err)} (errno {err})", tuple(_captured))
            try:
                yield obj
            finally:
                lib.bpf_object__unpin_maps(obj, None)  # by-name pins (LIBBPF_PIN_BY_NAME) must not outlive the test
                lib.bpf_object__close(obj)
        finally:
            lib.libbpf_set_print(previous)
            _captured.clear()


@dataclass(frozen=True, slots=True)
class LibbpfLoad:
    """One program of an object loaded by libbpf on its own (every other program's autoload off).

    ``insns`` are what libbpf passed to BPF_PROG_LOAD (after linking, CO-RE,
    map fd and extern patching); ``map_fds`` names the fds embedded in them.
    ``facts`` are the parts of the kernel's bpf_prog_info two loads of the
    same request share (`FACTS`).
    ``xlated`` is the kernel's view after verification, its ldimm64s naming
    maps by id (``map_ids``). A failed load leaves all of these empty and
    ``error`` set; libbpf's messages, the verifier log among them, are in ``log``.
    """

    path: Path
    program: str
    error: int
    tag: str
    insns: tuple[Insn, ...]
    xlated: tuple[Insn, ...]
    map_fds: Mapping[int, str]
    map_ids: Mapping[int, str]
    used_maps: frozenset[str]
    facts: Mapping[str, int]
    log: tuple[str, ...]

    @property
    def loaded(self) -> bool:
        return self.error == 0

    @property
    def verifier_log(self) -> str:
        """The verifier's log libbpf printed for the failed load ("" if it printed none)."""
        text = "\n".join(self.log)
        start = text.find("-- BEGIN PROG LOAD LOG --")
        if start < 0:
            return ""
        end = text.find("-- END PROG LOAD LOG --", start)
        return text[start + len("-- BEGIN PROG LOAD LOG --") : end if end >= 0 else len(text)].strip("\n")

    def why(self) -> str:
        """The failure in a few lines: errno and libbpf's warnings (verifier log tail included)."""
        if self.loaded:
            return "loaded"
        warnings = [line for line in self.log if line.startswith("warn: ")]
        return f"{errno.errorcode.get(self.error, self.error)}: " + "\n".join(warnings[-12:])


def load_one(
    path: str | os.PathLike[str],
    program: str,
    *,
    also: Iterable[str] = (),
    edits: Mapping[str, Mapping[str, object]] | None = None,
) -> LibbpfLoad:
    """Open ``path`` afresh, load only ``program`` with libbpf, describe the result, close everything.

    Other programs are not loaded (autoload off) except those in ``also``:
    libbpf 1.1 fails the whole load when a prog array's initial slots name a
    program it did not load. libbpf still creates every map and loads the
    object's BTF, as an application using the object would. A fresh
    bpf_object per call: libbpf allows one load per object.

    Maps are named by `map_name`, which any loader's map fds can be passed
    to, so both sides of a comparison name their maps alike. ``edits``
    change maps before load, as in `created_maps`.
    """
    lib = libbpf()
    path = Path(path)
    wanted = {program, *also}
    with libbpf_object(path) as obj:
        target = None
        for p in iterate(lib.bpf_object__next_program, obj):
            name = _str(lib.bpf_program__name(p))
            lib.bpf_program__set_autoload(p, name in wanted)
            wanted.discard(name)
            if name == program:
                target = p
        if target is None or wanted:
            raise KeyError(f"libbpf finds no program(s) {sorted(wanted | {program})} in {path}")
        _edit_maps(lib, obj, path, edits or {})
        err = -lib.bpf_object__load(obj)
        fds = (lib.bpf_map__fd(m) for m in iterate(lib.bpf_object__next_map, obj))
        map_fds = {fd: map_name(fd) for fd in fds if fd >= 0}
        if err:
            return LibbpfLoad(path, program, err, "", (), (), {}, {}, frozenset(), {}, tuple(_captured))
        prog_fd = lib.bpf_program__fd(target)
        raw = lib.bpf_program__insns(target)
        count = lib.bpf_program__insn_cnt(target)
        insns = tuple(decode(ctypes.string_at(raw, count * 8))) if raw and count else ()
        map_ids = {commands.map_info(fd).id: name for fd, name in map_fds.items()}
        used = frozenset(map_ids.get(i, f"id:{i}") for i in commands.prog_map_ids(prog_fd))
        return LibbpfLoad(
            path=path,
            program=program,
            error=0,
            tag=prog_tag(prog_fd),
            insns=insns,
            xlated=xlated(prog_fd),
            map_fds=map_fds,
            map_ids=map_ids,
            used_maps=used,
            facts=prog_facts(prog_fd),
            log=tuple(_captured),
        )


#: bpf_map_info fields that describe a map's definition (not its id or BTF object).
MAP_FACTS = ("name", "type", "key_size", "value_size", "max_entries", "map_flags", "map_extra")

#: MapEdit-like field -> libbpf setter (``create`` is ``bpf_map__set_autocreate``). libbpf 1.1 cannot edit
#: an inner map template in place (its setters dereference the template's missing object); it takes one
#: from an existing map with ``inner_map_fd``.
_MAP_SETTERS = {
    "max_entries": "bpf_map__set_max_entries",
    "value_size": "bpf_map__set_value_size",
    "key_size": "bpf_map__set_key_size",
    "type": "bpf_map__set_type",
    "flags": "bpf_map__set_map_flags",
    "numa_node": "bpf_map__set_numa_node",
    "map_extra": "bpf_map__set_map_extra",
    "inner_map_fd": "bpf_map__set_inner_map_fd",
}


def _edit_map(lib: ctypes.CDLL, m: int, name: str, edit: Mapping[str, object]) -> None:
    for field, value in edit.items():
        if field == "create":
            err = lib.bpf_map__set_autocreate(m, bool(value))
        else:
            err = getattr(lib, _MAP_SETTERS[field])(m, int(value))  # type: ignore[call-overload]
        if err:
            raise LibbpfError(f"libbpf refused {field}={value!r} for map {name!r} (error {err})", tuple(_captured))


def created_maps(
    path: str | os.PathLike[str], edits: Mapping[str, Mapping[str, object]]
) -> dict[str, dict[str, int | str]]:
    """The maps libbpf creates from ``path`` after the libbpf setters ``edits`` name, as the kernel reports them.

    ``edits`` maps a map name (a global-data map by its section, ``.bss``)
    to setter arguments: ``max_entries``, ``value_size``, ``key_size``,
    ``type``, ``flags``, ``numa_node``, ``map_extra``, ``inner_map_fd`` and
    ``create`` (``bpf_map__set_autocreate``). No program is loaded. The result is keyed like ``edits``,
    with the `MAP_FACTS` of each created map.
    """
    lib = libbpf()
    path = Path(path)
    with libbpf_object(path) as obj:
        for p in iterate(lib.bpf_object__next_program, obj):
            lib.bpf_program__set_autoload(p, False)
        maps = _edit_maps(lib, obj, path, edits)
        err = -lib.bpf_object__load(obj)
        if err:
            raise LibbpfError(f"libbpf could not create the maps of {path}: {os.strerror(err)}", tuple(_captured))
        out: dict[str, dict[str, int | str]] = {}
        for name, m in maps.items():
            fd = lib.bpf_map__fd(m)
            if fd >= 0:
                out[name] = map_facts(fd)
        return out


def _edit_maps(lib: ctypes.CDLL, obj: int, path: Path, edits: Mapping[str, Mapping[str, object]]) -> dict[str, int]:
    """Apply ``edits`` to an opened object; its maps by name (global-data maps by section)."""
    maps = {_section_or_name(_str(lib.bpf_map__name(m))): m for m in iterate(lib.bpf_object__next_map, obj)}
    unknown = sorted(set(edits) - set(maps))
    assert not unknown, f"libbpf finds no maps {unknown} in {path} (maps: {sorted(maps)})"
    for name, edit in edits.items():
        _edit_map(lib, maps[name], name, edit)
    return maps


def map_facts(fd: int) -> dict[str, int | str]:
    """`MAP_FACTS` of the map behind ``fd``, as bpf_map_info reports them."""
    info = commands.map_info(fd)
    return {f: info.name.decode() if f == "name" else int(getattr(info, f)) for f in MAP_FACTS}


def _section_or_name(name: str) -> str:
    dot = name.find(".")
    return name[dot:] if dot > 0 else name


def map_name(fd: int) -> str:
    """A map's name for comparing listings: the kernel's, a global-data map's cut back to its section.

    The kernel holds at most 15 characters, and loaders prefix a global-data
    map's section with part of the object name (``core_hea.bss``), each its
    own way; C identifiers have no dots, so the section starts at the first.
    """
    return _section_or_name(commands.map_info(fd).name.decode(errors="replace"))


def prog_tag(prog_fd: int) -> str:
    """The tag the kernel computed for a loaded program, as bpftool prints it (hex)."""
    return bytes(commands.prog_info(prog_fd).tag).hex()


#: bpf_prog_info fields that describe the load request rather than this load (ids, times, addresses).
FACTS = (
    "type",
    "gpl_compatible",
    "nr_func_info",
    "func_info_rec_size",
    "nr_line_info",
    "line_info_rec_size",
    "attach_btf_obj_id",
    "attach_btf_id",
    "verified_insns",
)


def prog_facts(prog_fd: int) -> dict[str, int]:
    """What the kernel reports about a loaded program that two loads of the same request share."""
    info = commands.prog_info(prog_fd)
    facts = {name: int(getattr(info, name)) for name in FACTS}
    facts["gpl_compatible"] &= 1
    return facts


def computed_tag(insns: Iterable[Insn], digest: str = "sha256") -> str:
    """The tag the kernel would give ``insns``: a digest of their bytes with map references zeroed.

    The kernel zeroes both halves of map ldimm64s (fd and value offset) so the
    tag names the code, not the maps it was given. Recent kernels hash with
    SHA-256 (the signed-program work), older ones with SHA-1; pass ``digest``.
    """
    out = bytearray()
    for insn in insns:
        raw = insn.encode()
        if insn.is_ldimm64 and insn.src in (PseudoLd.MAP_FD, PseudoLd.MAP_VALUE):
            raw = raw[:4] + bytes(4) + raw[8:12] + bytes(4)
        out += raw
    return hashlib.new(digest, bytes(out)).hexdigest()[:16]


def xlated(prog_fd: int) -> tuple[Insn, ...]:
    """A loaded program's instructions after verification, maps named by id (as bpftool dumps them)."""
    size = commands.prog_info(prog_fd).xlated_prog_len
    if not size:
        return ()
    buf = (ctypes.c_uint8 * size)()
    info = commands.obj_info(prog_fd, ProgInfo(xlated_prog_len=size, xlated_prog_insns=ctypes.addressof(buf)))
    return tuple(decode(bytes(buf)[: min(size, info.xlated_prog_len)]))


def listing(insns: Iterable[Insn], maps: Mapping[int, str]) -> list[tuple[int, str]]:
    """``(slot, text)`` per instruction, map references spelled by name so two loads compare.

    ``maps`` resolves the number an ldimm64 carries for a map (an fd before
    load, an id in the kernel's translated view) to the map's name.
    """
    out: list[tuple[int, str]] = []
    slot = 0
    for insn in insns:
        line = text(insn)
        if insn.is_ldimm64 and insn.src in (PseudoLd.MAP_FD, PseudoLd.MAP_VALUE):
            ref = insn.imm & 0xFFFFFFFF
            name = maps.get(ref, f"?{ref}")
            offset = f"+{insn.imm >> 32}" if insn.src == PseudoLd.MAP_VALUE else ""
            line = f"r{insn.dst} = map[{name}]{offset} ll"
        out.append((slot, line))
        slot += insn.slots
    return out


def diff(
    ours: Iterable[Insn], our_maps: Mapping[int, str], theirs: Iterable[Insn], their_maps: Mapping[int, str]
) -> str:
    """A unified-style instruction diff (``-`` dynbpf, ``+`` libbpf) with each side's slot numbers.

    Only differing stretches and three lines around them are shown; "" when
    the normalised listings are equal.
    """
    a, b = listing(ours, our_maps), listing(theirs, their_maps)
    matcher = difflib.SequenceMatcher(a=[t for _, t in a], b=[t for _, t in b], autojunk=False)
    lines: list[str] = []
    for group in matcher.get_grouped_opcodes(3):
        lines.append(f"@@ dynbpf {_slot_at(a, group[0][1])}, libbpf {_slot_at(b, group[0][3])} @@")
        for op, i_lo, i_hi, j_lo, j_hi in group:
            if op == "equal":
                lines += [f"  {sa:5} {sb:5}  {t}" for (sa, t), (sb, _) in zip(a[i_lo:i_hi], b[j_lo:j_hi], strict=True)]
                continue
            lines += [f"- {sa:5}        {t}" for sa, t in a[i_lo:i_hi]]
            lines += [f"+       {sb:5}  {t}" for sb, t in b[j_lo:j_hi]]
    return "\n".join(lines)


def _slot_at(lines: list[tuple[int, str]], index: int) -> str:
    return f"slot {lines[index][0]}" if index < len(lines) else "end"


def map_fds(insns: Iterable[Insn]) -> set[int]:
    """The map fds embedded in instructions (``map[fd]`` and ``map[fd]+off`` loads)."""
    return {i.imm & 0xFFFFFFFF for i in insns if i.is_ldimm64 and i.src in (PseudoLd.MAP_FD, PseudoLd.MAP_VALUE)}
