"""Extern resolution (kconfig, ksyms, kfuncs) checked against libbpf 1.1 and the running kernel.

libbpf is the oracle twice over: loading a fixture with every program's
autoload off makes libbpf resolve its externs and fill its ``.kconfig`` map,
whose bytes and BTF offsets must equal ours; loading programs lets us read
back the instructions libbpf relocated, which must equal ours byte for byte.
The kernel's own files (kallsyms, the config, BTF through bpftool) check the
rest.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gzip
import os
import platform
import re
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynbpf._asm.insn import R0, R1, Insn, exit_, jmp_imm, mov64_imm
from dynbpf._asm.opcodes import LD_IMM64, Class, JmpOp, PseudoCall, PseudoLd
from dynbpf._asm.slots import SlotMap
from dynbpf._btf import kernel as kernel_btf
from dynbpf._btf.errors import NameNotFound
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import Func, FuncLinkage, FuncProto, Int, IntEncoding, Param, Ptr, Struct, Var, VarLinkage
from dynbpf._elf import read
from dynbpf._elf.spec import ExternKind, ExternReference, ExternSpec, KfuncCall, ObjectSpec
from dynbpf._prepare import kconfig
from dynbpf._prepare.externs import (
    KCONFIG_MAP_FLAGS,
    KfuncTarget,
    KsymValue,
    ResolvedExterns,
    relocate_extern,
    resolve_externs,
)
from dynbpf._prepare.kallsyms import parse_kallsyms, read_kallsyms
from dynbpf._prepare.kconfig import KconfigSlot, KconfigType
from dynbpf._prepare.modules import ModuleBtf
from dynbpf._probes.trial import load
from dynbpf._sys import commands, kernel_version
from dynbpf._sys.constants import MapType, ProgType
from dynbpf.errors import KernelUnsupported, RelocationError, StateError
from tests.bpfbuild import build
from tests.helpers import kallsyms
from tests.libbpf_oracle import (
    OpenOpts,
    captured,
    iterate,
    libbpf,
    libbpf_kernel_refusal,
    libbpf_object,
    missing_kfuncs,
)

kernel = pytest.mark.kernel
needs_clang = pytest.mark.needs_clang
needs_bpftool = pytest.mark.needs_bpftool

BTF_KIND_DATASEC = 15


# --- libbpf 1.1 through ctypes: open, load with chosen programs, read back what it resolved ---------


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _VarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


@dataclass
class Loaded:
    """What libbpf made of an object: ``.kconfig`` (bytes, fd, offsets) and relocated instructions."""

    ok: bool
    log: list[str]
    kconfig: bytes | None = None
    kconfig_fd: int = -1
    kconfig_flags: int = 0
    offsets: dict[str, int] = dataclasses.field(default_factory=dict)
    insns: dict[str, bytes] = dataclasses.field(default_factory=dict)


def refused_by_libbpf(path: Path, fixture: str, autoload: frozenset[str] = frozenset()) -> bool:
    """Whether this kernel lacks a kfunc ``fixture`` calls strongly; if so, after checking that libbpf 1.1
    refuses the object for that reason (then it is no oracle here: the comparison runs on newer kernels)."""
    evidence = libbpf_kernel_refusal(fixture)
    if evidence is None:
        return False
    with libbpf_loaded(path, autoload=autoload) as lib:
        assert not lib.ok
        assert any(evidence in line for line in lib.log), lib.log
    return True


@contextmanager
def libbpf_loaded(path: Path, *, autoload: frozenset[str] = frozenset(), config: str | None = None) -> Iterator[Loaded]:
    """Open ``path`` with libbpf (``config``: its extra kconfig text), load it with only ``autoload`` programs."""
    lib = libbpf()
    opts = OpenOpts(sz=ctypes.sizeof(OpenOpts), kconfig=config.encode() if config is not None else None)
    with libbpf_object(path, opts) as obj:
        for p in iterate(lib.bpf_object__next_program, obj):
            lib.bpf_program__set_autoload(p, lib.bpf_program__name(p).decode() in autoload)
        loaded = Loaded(ok=lib.bpf_object__load(obj) == 0, log=list(captured()))
        if loaded.ok:
            _collect(lib, obj, loaded, autoload)
        yield loaded


def _collect(lib: ctypes.CDLL, obj: int, loaded: Loaded, autoload: frozenset[str]) -> None:
    for m in iterate(lib.bpf_object__next_map, obj):
        if lib.bpf_map__name(m).decode().endswith(".kconfig"):
            size = ctypes.c_size_t(0)
            data = lib.bpf_map__initial_value(m, ctypes.byref(size))
            loaded.kconfig = ctypes.string_at(data, size.value)
            loaded.kconfig_fd = lib.bpf_map__fd(m)
            loaded.kconfig_flags = lib.bpf_map__map_flags(m)
    btf = lib.bpf_object__btf(obj)
    sec_id = lib.btf__find_by_name_kind(btf, b".kconfig", BTF_KIND_DATASEC)
    if sec_id > 0:
        sec = ctypes.cast(lib.btf__type_by_id(btf, sec_id), ctypes.POINTER(_BtfType))
        infos = ctypes.cast(
            ctypes.addressof(sec.contents) + ctypes.sizeof(_BtfType),
            ctypes.POINTER(_VarSecinfo * (sec.contents.info & 0xFFFF)),
        ).contents
        for vs in infos:
            var = _BtfType.from_address(lib.btf__type_by_id(btf, vs.type))
            loaded.offsets[lib.btf__name_by_offset(btf, var.name_off).decode()] = vs.offset
    for p in iterate(lib.bpf_object__next_program, obj):
        name = lib.bpf_program__name(p).decode()
        if name in autoload:
            loaded.insns[name] = ctypes.string_at(lib.bpf_program__insns(p), 8 * lib.bpf_program__insn_cnt(p))


@cache
def fixture(name: str) -> tuple[Path, ObjectSpec]:
    path = build(name)
    return path, read(path.read_bytes())


def system_config() -> dict[str, str]:
    """The config file libbpf reads, parsed independently of dynbpf (gzip + line split)."""
    boot = Path(f"/boot/config-{os.uname().release}")
    raw = boot.read_bytes() if boot.exists() else Path("/proc/config.gz").read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, value)
    return out


# --- .kconfig: layout and values ------------------------------------------------------------------


@kernel
@needs_clang
@pytest.mark.parametrize("name", ["externs", "externs_kconfig"])
def test_kconfig_map_equals_libbpfs(name: str) -> None:
    path, spec = fixture(name)
    ours = resolve_externs(spec)
    if refused_by_libbpf(path, name):
        return
    with libbpf_loaded(path) as lib:
        assert lib.ok, lib.log
        assert ours.kconfig_offsets == lib.offsets
        assert ours.kconfig_map is not None
        assert lib.kconfig is not None
        assert ours.kconfig_map.value_size == len(lib.kconfig)
        assert ours.kconfig_map.data == lib.kconfig
        assert ours.kconfig_map.flags == lib.kconfig_flags == KCONFIG_MAP_FLAGS
    assert ours.failures == {}
    assert (ours.kconfig_map.type, ours.kconfig_map.key_size, ours.kconfig_map.max_entries) == (MapType.ARRAY, 4, 1)
    assert spec.btf is not None
    assert spec.btf.find(".kconfig")[0] == ours.kconfig_map.value_type != 0


@needs_clang
def test_kconfig_layout_sorts_by_alignment_size_name() -> None:
    _, spec = fixture("externs_kconfig")
    assert spec.btf is not None
    layout = kconfig.layout(spec.btf, spec.externs.values())
    keys = [(-s.align, s.size, s.name) for s in layout.slots]
    assert keys == sorted(keys)
    assert [s.name for s in layout.slots][:2] == ["CONFIG_ILLEGAL_POINTER_VALUE", "CONFIG_PHYSICAL_START"]
    for prev, cur in zip(layout.slots, layout.slots[1:], strict=False):
        assert cur.offset % cur.align == 0
        assert prev.offset + prev.size <= cur.offset < prev.offset + prev.size + cur.align
    slots = {s.name: s for s in layout.slots}
    assert (slots["CONFIG_NR_CPUS"].type, slots["CONFIG_NR_CPUS"].size) == (KconfigType.INT, 4)  # through a typedef
    assert (slots["CONFIG_LSM"].type, slots["CONFIG_LSM"].size) == (KconfigType.CHAR_ARRAY, 7)
    assert slots["CONFIG_ILLEGAL_POINTER_VALUE"].signed
    assert not slots["CONFIG_PHYSICAL_START"].signed
    assert layout.size == layout.slots[-1].offset + layout.slots[-1].size


def _int_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Integers in [lo, hi] spelled every way strtoull reads them."""
    plain = st.integers(lo, hi).map(str)
    hexa = st.integers(max(lo, 0), hi).map(hex)
    octal = st.integers(max(lo, 0), hi).map(lambda v: "0" + oct(v)[2:])
    return st.one_of(plain, hexa, octal)


def _string_text(max_size: int) -> st.SearchStrategy[str]:
    chars = st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"')
    return st.text(chars, max_size=max_size).map(lambda s: f'"{s}"')


_chars = st.one_of(st.sampled_from(["y", "n", "m"]), _int_text(0, 127))
#: Each CONFIG_ extern of externs_kconfig.bpf.c and values its type can hold.
_FITTING: dict[str, st.SearchStrategy[str]] = {
    "CONFIG_PHYSICAL_START": _int_text(0, 2**64 - 1),
    "CONFIG_ILLEGAL_POINTER_VALUE": _int_text(-(2**63), 2**64 - 1),
    "CONFIG_HZ": _int_text(-(2**31), 2**31 - 1),
    "CONFIG_NR_CPUS": _int_text(0, 2**32 - 1),
    "CONFIG_LOG_BUF_SHIFT": _int_text(-(2**15), 2**15 - 1),
    "CONFIG_DYNBPF_MISSING_U16": _int_text(0, 2**16 - 1),
    "CONFIG_BPF_JIT": _chars,
    "CONFIG_CONSOLE_LOGLEVEL_DEFAULT": _chars,
    "CONFIG_BPF": st.sampled_from(["y", "n"]),
    "CONFIG_DYNBPF_MISSING_BOOL": st.sampled_from(["y", "n"]),
    "CONFIG_BPF_SYSCALL": st.sampled_from(["y", "n", "m"]),
    "CONFIG_DYNBPF_MISSING_TRI": st.sampled_from(["y", "n", "m"]),
    "CONFIG_DEFAULT_HOSTNAME": _string_text(6),
    "CONFIG_CC_VERSION_TEXT": _string_text(120),
    "CONFIG_DEFAULT_INIT": _string_text(3),
    "CONFIG_LSM": _string_text(10),
}
#: Anything at all, mostly wrong for the extern it lands on.
_STRINGS = {"CONFIG_DEFAULT_HOSTNAME", "CONFIG_CC_VERSION_TEXT", "CONFIG_DEFAULT_INIT", "CONFIG_LSM"}
_ANY = st.one_of(
    st.sampled_from(["y", "n", "m", "yes", '"', '""', "0x", "08", "1 ", "-", "18446744073709551616"]),
    _int_text(-(2**64) + 1, 2**64 - 1),
    _string_text(120),
)
_configs = st.lists(st.sampled_from(sorted(_FITTING)), unique=True, max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: st.one_of(_FITTING[k], _FITTING[k], _FITTING[k], _ANY) for k in keys})
)


@kernel
@needs_clang
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs)
def test_kconfig_values_agree_with_libbpf_for_any_config(config: dict[str, str]) -> None:
    """Whatever the config says, libbpf and dynbpf store the same bytes, or both refuse the same extern."""
    path, spec = fixture("externs_kconfig")
    ours = resolve_externs(spec, config={**system_config(), **config})
    lone = [k for k, v in config.items() if v == '"' and k in _STRINGS]
    if lone:
        # libbpf takes a lone quote for an empty string's two, and its length 1 - 2 wraps: it copies
        # the bytes after the value (set_kcfg_value_str reads past the string). dynbpf refuses it.
        assert set(lone) <= ours.failures.keys(), ours.failures
        return
    text = "".join(f"{k}={v}\n" for k, v in config.items())
    evidence = libbpf_kernel_refusal("externs_kconfig")
    with libbpf_loaded(path, config=text) as lib:
        if evidence is not None:
            # libbpf 1.1 cannot read this kernel's version (7.x releases have no patch level): it refuses the
            # object, naming that or a bad value before it, and is no oracle here; dynbpf reads the vDSO's.
            assert "LINUX_KERNEL_VERSION" not in ours.failures
            assert not lib.ok
            assert any(evidence in line or any(f"'{n}'" in line for n in ours.failures) for line in lib.log)
            return
        assert lib.ok == (not ours.failures), (ours.failures, lib.log[-3:])
        if lib.ok:
            assert ours.kconfig_map is not None
            assert ours.kconfig_map.data == lib.kconfig
        else:  # libbpf stops at the first bad value and names it
            assert any(f"'{name}'" in line for line in lib.log for name in ours.failures), lib.log[-3:]


_CONFIG = {"CONFIG_BPF_SYSCALL": "y", "CONFIG_HZ": "100", "CONFIG_TCP_CONG_CUBIC": "m", "CONFIG_LOCALVERSION": '"-x"'}
_LINUX = {"LINUX_KERNEL_VERSION": 0x060100, "LINUX_HAS_SYSCALL_WRAPPER": 1}


def offline(spec: ObjectSpec, **overrides: object) -> ResolvedExterns:
    """Resolve against a made-up kernel: no file, no BTF, no probe of the running one is consulted."""
    args: dict[str, object] = {
        "config": _CONFIG,
        "linux": _LINUX.get,
        "kallsyms": {"__start_BTF": 1, "__stop_BTF": 2},
        "kernel": [_tiny_kernel()],
        "modules": {},
    }
    args.update(overrides)
    return resolve_externs(spec, **args)  # type: ignore[arg-type]


@needs_clang
def test_weak_missing_kconfig_is_zero_and_strong_missing_fails_only_its_users() -> None:
    _, spec = fixture("externs")
    ours = offline(spec, config={k: v for k, v in _CONFIG.items() if k != "CONFIG_BPF_SYSCALL"})
    assert "CONFIG_BPF_SYSCALL" in ours.failures
    assert not {"CONFIG_DYNBPF_NO_SUCH_OPTION", "CONFIG_HZ", "LINUX_KERNEL_VERSION"} & set(ours.failures)
    assert ours.kconfig_map is not None
    data, at = ours.kconfig_map.data, ours.kconfig_offsets
    assert data is not None
    assert data[at["CONFIG_HZ"] : at["CONFIG_HZ"] + 4] == (100).to_bytes(4, "little")
    assert data[at["CONFIG_TCP_CONG_CUBIC"]] == 2  # TRI_MODULE
    assert data[at["LINUX_KERNEL_VERSION"] : at["LINUX_KERNEL_VERSION"] + 4] == (0x060100).to_bytes(4, "little")
    assert data[at["CONFIG_LOCALVERSION"] :].startswith(b"-x\0")
    assert data[at["CONFIG_DYNBPF_NO_SUCH_OPTION"]] == 0
    fn = spec.functions["acquire_new_task"]
    refs = {r.extern: r for r in fn.relocations if isinstance(r, ExternReference | KfuncCall)}
    with pytest.raises(RelocationError, match=r"CONFIG_BPF_SYSCALL.*not set"):
        _relocate(spec, "acquire_new_task", refs["CONFIG_BPF_SYSCALL"], ours)
    weak = _relocate(spec, "acquire_new_task", refs["CONFIG_DYNBPF_NO_SUCH_OPTION"], ours)
    assert (weak.src, weak.imm) == (PseudoLd.MAP_VALUE, 7 | (at["CONFIG_DYNBPF_NO_SUCH_OPTION"] << 32))


def test_missing_config_file_names_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kconfig, "boot_config_path", lambda: "/nonexistent/config-x")
    monkeypatch.setattr(kconfig, "PROC_CONFIG", "/nonexistent/config.gz")
    kconfig.clear_cache()
    try:
        with pytest.raises(KernelUnsupported, match=r"/nonexistent/config-x nor /nonexistent/config\.gz"):
            kconfig.read_kernel_config()
        slots = (
            KconfigSlot("CONFIG_A", KconfigType.BOOL, 1, 1, False, 0, weak=False),
            KconfigSlot("CONFIG_B", KconfigType.INT, 4, 4, False, 4, weak=True),
        )
        values = kconfig.fill(kconfig.KconfigLayout(slots, 8))
        assert values.data == bytes(8)
        assert list(values.failures) == ["CONFIG_A"]
        assert "/nonexistent/config-x nor /nonexistent/config.gz" in values.failures["CONFIG_A"]
    finally:
        kconfig.clear_cache()


@kernel
def test_read_kernel_config_matches_the_file() -> None:
    ours = kconfig.read_kernel_config()
    assert ours == system_config()
    assert ours is kconfig.read_kernel_config()  # read once per process


def test_parse_config_lines() -> None:
    text = b'# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\nCONFIG_A=n\n\nCONFIG_D=0x1f\n'
    assert kconfig.parse_config(text) == {"CONFIG_A": "y", "CONFIG_C": '"x y"', "CONFIG_D": "0x1f"}
    with pytest.raises(RelocationError, match="line 2: no '='"):
        kconfig.parse_config(b"CONFIG_A=y\nCONFIG_B\n")
    with pytest.raises(RelocationError, match="line 1: no value"):
        kconfig.parse_config(b"CONFIG_A=\n", source="x")


@given(st.binary(max_size=200))
def test_parse_config_never_fails_otherwise(data: bytes) -> None:
    try:
        parsed = kconfig.parse_config(data)
    except RelocationError:
        return
    assert all(k.startswith("CONFIG_") and v for k, v in parsed.items())


_libc = ctypes.CDLL(None, use_errno=True)
_libc.strtoull.restype = ctypes.c_ulonglong
_libc.strtoull.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]


def _strtoull(raw: bytes) -> int | None:
    end = ctypes.c_char_p()
    buf = ctypes.create_string_buffer(raw)
    ctypes.set_errno(0)
    value = _libc.strtoull(buf, ctypes.byref(end), 0)
    consumed = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)  # type: ignore[operator]
    return None if ctypes.get_errno() or consumed != len(raw) else int(value)


@given(
    st.one_of(
        st.from_regex(rb"\A[ \t]?[+-]?(0[xX])?[0-9a-fA-F]{0,20}[ g]?\Z"),
        st.binary(max_size=12).filter(lambda b: b"\0" not in b),
    )
)
def test_parse_u64_is_strtoull(raw: bytes) -> None:
    assert kconfig.parse_u64(raw) == _strtoull(raw)


def test_encode_follows_libbpfs_rules() -> None:
    def slot(kind: KconfigType, size: int, signed: bool = False) -> KconfigSlot:
        return KconfigSlot("CONFIG_X", kind, size, min(size, 8), signed, 0, False)

    assert kconfig.encode(slot(KconfigType.BOOL, 1), "y") == b"\x01"
    assert kconfig.encode(slot(KconfigType.TRISTATE, 4), "m") == (2).to_bytes(4, "little")
    assert kconfig.encode(slot(KconfigType.CHAR, 1), "y") == b"y"
    assert kconfig.encode(slot(KconfigType.CHAR, 1, signed=True), "-128") == b"\x80"
    assert kconfig.encode(slot(KconfigType.INT, 2), "0x1f") == b"\x1f\x00"
    assert kconfig.encode(slot(KconfigType.CHAR_ARRAY, 4), '"abcdef"') == b"abc\0"
    assert kconfig.encode(slot(KconfigType.CHAR_ARRAY, 4), '"a"') == b"a\0\0\0"
    for kind, size, signed, value, why in [
        (KconfigType.BOOL, 1, False, "m", "tristate or char"),
        (KconfigType.BOOL, 1, False, "1", "integer type"),
        (KconfigType.INT, 4, False, "y", "bool, tristate or char"),
        (KconfigType.INT, 4, False, '"s"', "char array"),
        (KconfigType.INT, 1, False, "256", "does not fit in 1 bytes"),
        (KconfigType.CHAR, 1, True, "-129", "does not fit"),
        (KconfigType.INT, 8, False, "18446744073709551616", "not a valid integer"),
        (KconfigType.CHAR_ARRAY, 4, False, '"open', "invalid string"),
    ]:
        with pytest.raises(ValueError, match=why):
            kconfig.encode(slot(kind, size, signed), value)


def test_linux_kernel_version_is_libbpfs_reading_of_uname_else_the_vdsos() -> None:
    numbers = [int(x) for x in re.findall(r"\d+", platform.release().split("-")[0])]
    vdso = kernel_version.linux_version_code()
    assert vdso >> 8 == (numbers[0] << 8) | numbers[1]  # the kernel's own number agrees with uname's x.y
    if len(numbers) >= 3:  # libbpf's reading
        assert kconfig.kernel_version() == (numbers[0] << 16) | (numbers[1] << 8) | min(numbers[2], 255)
    else:  # libbpf 1.1 gives up ("failed to get kernel version"); the kernel's own number
        assert kernel_version.libbpf_code() == 0
        assert kconfig.kernel_version() == vdso
    assert kconfig.linux_value("LINUX_KERNEL_VERSION") == kconfig.kernel_version()
    assert kconfig.linux_value("LINUX_DYNBPF_UNKNOWN") is None


def test_vdso_note_is_found_among_other_notes() -> None:
    def note(name: bytes, kind: int, desc: bytes) -> bytes:
        pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
        return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)

    code = (7 << 16) | (3 << 8)
    version = note(b"Linux\0", 0, code.to_bytes(4, "little"))
    notes = note(b"GNU\0", 3, b"\x01" * 20) + note(b"Linux\0", 1, b"\0" * 6) + version
    assert kernel_version.version_from_notes(notes) == code
    assert kernel_version.version_from_notes(notes[:-8]) == 0  # truncated: no version, no error


# --- ksyms and kfuncs --------------------------------------------------------------------------------


@cache
def bpftool_ids() -> dict[str, int]:
    """``KIND 'name'`` -> id of every VAR and FUNC in vmlinux BTF, as bpftool prints them."""
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", kernel_btf.VMLINUX_PATH], check=True, capture_output=True, text=True
    ).stdout
    return {f"{m[1]} {m[2]}": int(m[0]) for m in re.findall(r"^\[(\d+)\] (VAR|FUNC) '([^']+)'", out, re.M)}


@kernel
@needs_clang
@needs_bpftool
def test_ksyms_and_kfuncs_resolve_like_the_kernel_lists_them() -> None:
    _, spec = fixture("externs")
    ours = resolve_externs(spec)
    listed = kallsyms()
    for name in ("__start_BTF", "__stop_BTF"):
        assert ours.ksyms[name] == KsymValue(True, address=listed[name])
    assert ("bpf_prog_active" in listed) == ours.ksyms["bpf_prog_active"].resolved  # listed with KALLSYMS_ALL
    assert ours.ksyms["dynbpf_no_such_symbol"] == KsymValue(False)  # typed, weak, missing
    ids = bpftool_ids()
    assert ours.ksyms["runqueues"] == KsymValue(True, btf_id=ids["VAR runqueues"])
    for name in ("bpf_task_acquire", "bpf_task_release", "bpf_task_from_pid"):
        listed_id = ids.get(f"FUNC {name}")  # 6.2 on
        assert ours.kfuncs[name] == (KfuncTarget(True, btf_id=listed_id) if listed_id else KfuncTarget(False))
    assert ours.kfuncs["dynbpf_no_such_kfunc"] == KfuncTarget(False)
    strong_missing = {k for kfuncs in missing_kfuncs("externs").values() for k in kfuncs}
    assert set(ours.failures) == strong_missing  # a weak one may be missing; a strong one is a failure


@kernel
@needs_clang
def test_relocated_instructions_equal_libbpfs() -> None:
    """Every instruction that uses an extern, as libbpf 1.1 rewrote it in programs it loaded."""
    path, spec = fixture("externs")
    ours = resolve_externs(spec)
    programs = frozenset({"acquire_new_task", "kill_version"})
    if refused_by_libbpf(path, "externs", autoload=programs):
        return
    with libbpf_loaded(path, autoload=programs) as lib:
        assert lib.ok, lib.log
        compared = 0
        for name in sorted(programs):
            fn = spec.functions[name]
            slots = SlotMap.of(fn.instructions)
            for r in fn.relocations:
                if not isinstance(r, ExternReference | KfuncCall):
                    continue
                insn = relocate_extern(
                    fn.instructions[r.index],
                    r,
                    ours,
                    kconfig_fd=lib.kconfig_fd,
                    module_btf_fd=_no_modules,
                    fd_array_index=_no_modules,
                    where=name,
                )
                at = slots.byte_offset(r.index)
                assert insn.encode() == lib.insns[name][at : at + 8 * insn.slots], (name, r, str(insn))
                compared += 1
    assert compared == 19


def _no_modules(name: str) -> int:
    raise AssertionError(f"asked for module {name!r} on a kernel without module BTF")


def _relocate(spec: ObjectSpec, fn: str, r: ExternReference | KfuncCall, externs: ResolvedExterns) -> Insn:
    insn = spec.functions[fn].instructions[r.index]
    return relocate_extern(
        insn, r, externs, kconfig_fd=7, module_btf_fd=lambda m: 40, fd_array_index=lambda m: 1, where=f"{fn}: insn"
    )


def _tiny_kernel(*types: object) -> Spec:
    """A vmlinux stand-in: a struct task_struct, pointers to it, and whatever else a test needs."""
    return Spec.from_types([Struct("task_struct", 8, ()), Ptr(1), *types])  # type: ignore[list-item]


@needs_clang
def test_strong_externs_the_kernel_lacks_fail_only_where_used() -> None:
    _, spec = fixture("externs")
    ours = offline(spec, kallsyms={"__stop_BTF": 5})
    assert set(ours.failures) == {"__start_BTF", "runqueues", "bpf_task_acquire", "bpf_task_release"}
    assert ours.kfuncs["bpf_task_from_pid"] == KfuncTarget(False)  # weak: unresolved, no failure
    refs = {r.extern: r for r in spec.functions["acquire_new_task"].relocations if isinstance(r, KfuncCall)}
    with pytest.raises(RelocationError, match=r"acquire_new_task: insn: kfunc 'bpf_task_acquire': no FUNC"):
        _relocate(spec, "acquire_new_task", refs["bpf_task_acquire"], ours)
    poisoned = _relocate(spec, "acquire_new_task", refs["bpf_task_from_pid"], ours)
    assert (poisoned.src, poisoned.imm, poisoned.off) == (PseudoCall.KFUNC_CALL, 0, 0)
    with pytest.raises(RelocationError, match=r"__start_BTF.*not in /proc/kallsyms"):
        _relocate(spec, "acquire_new_task", ExternReference(17, "__start_BTF"), ours)
    stop = _relocate(spec, "acquire_new_task", ExternReference(18, "__stop_BTF"), ours)
    assert (stop.opcode, stop.src, stop.imm) == (LD_IMM64, 0, 5)


@needs_clang
def test_incompatible_kernel_types_are_refused() -> None:
    _, spec = fixture("externs")
    int_id = 3
    tiny = _tiny_kernel(
        Int("int", 4, IntEncoding.SIGNED, 0, 32),
        Var("runqueues", int_id, VarLinkage.GLOBAL_ALLOCATED),
        FuncProto(int_id, ()),
        Func("bpf_task_acquire", 5, FuncLinkage.GLOBAL),
        Func("bpf_task_from_pid", 5, FuncLinkage.GLOBAL),
    )
    ours = offline(spec, kernel=[tiny])
    assert "struct rq" in ours.failures["runqueues"]
    assert "'int'" in ours.failures["runqueues"]
    assert "incompatible" in ours.failures["bpf_task_acquire"]
    assert "bpf_task_from_pid" not in ours.failures  # weak: left unresolved instead
    assert not ours.kfuncs["bpf_task_from_pid"].resolved


@needs_clang
def test_module_kfuncs_go_through_fd_array_and_module_btf_fds() -> None:
    _, spec = fixture("externs")
    base = _tiny_kernel()
    module = Spec.from_types(
        [FuncProto(2, (Param("p", 2),)), Func("bpf_task_acquire", 3, FuncLinkage.GLOBAL)],
        base=base,
    )
    assert module.first_id == 3
    ours = offline(spec, kernel=[base], modules={"dynbpf_mod": module})
    assert ours.kfuncs["bpf_task_acquire"] == KfuncTarget(True, btf_id=4, module="dynbpf_mod")
    call = next(r for r in spec.functions["acquire_new_task"].relocations if isinstance(r, KfuncCall))
    insn = _relocate(spec, "acquire_new_task", call, ours)
    assert (insn.src, insn.imm, insn.off) == (PseudoCall.KFUNC_CALL, 4, 1)
    address = relocate_extern(
        Insn(LD_IMM64, dst=R1),
        ExternReference(0, "bpf_task_acquire"),
        ours,
        kconfig_fd=-1,
        module_btf_fd=lambda m: 41 if m == "dynbpf_mod" else -1,
        fd_array_index=_no_modules,
        where="x",
    )
    assert (address.src, address.imm) == (PseudoLd.BTF_ID, 4 | (41 << 32))


def test_kfunc_flavours_resolve_by_their_essential_name() -> None:
    """``foo___v2`` finds kernel ``foo`` (newer libbpf; 1.1 leaves it unresolved, see docs/externs.md)."""
    kern = _tiny_kernel(FuncProto(2, (Param("p", 2),)), Func("bpf_task_acquire", 3, FuncLinkage.GLOBAL))
    local = Spec.from_types(
        [
            Struct("task_struct", 8, ()),
            Ptr(1),
            FuncProto(2, (Param("p", 2),)),
            Func("bpf_task_acquire___v2", 3, FuncLinkage.EXTERN),
            FuncProto(2, ()),
            Func("bpf_task_acquire___v1", 5, FuncLinkage.EXTERN),
        ]
    )
    externs = {
        "bpf_task_acquire___v2": ExternSpec("bpf_task_acquire___v2", ExternKind.KFUNC, 3, weak=True, btf_id=4),
        "bpf_task_acquire___v1": ExternSpec("bpf_task_acquire___v1", ExternKind.KFUNC, 5, weak=True, btf_id=6),
    }
    obj = ObjectSpec("flavours", "GPL", 0, {}, {}, {}, {}, externs, btf=local)
    ours = resolve_externs(obj, kernel=[kern], modules={})
    assert ours.kfuncs["bpf_task_acquire___v2"] == KfuncTarget(True, btf_id=4)
    assert ours.kfuncs["bpf_task_acquire___v1"] == KfuncTarget(False)  # weak, wrong arity
    assert ours.failures == {}


def test_ambiguous_kallsyms_names_fail() -> None:
    table = parse_kallsyms(
        "ffffffff81000000 t dup_sym\nffffffff81000010 t dup_sym\n"
        "ffffffff81000020 T same\nffffffff81000020 T same\n"
        "ffffffffc0000000 d thin.llvm.123\t[mod]\n"
    )
    assert table.addresses("dup_sym") == (0xFFFFFFFF81000000, 0xFFFFFFFF81000010)
    assert table.addresses("same") == (0xFFFFFFFF81000020,)
    assert table["thin"] == table["thin.llvm.123"] == 0xFFFFFFFFC0000000
    with pytest.raises(ValueError, match="line 1"):
        parse_kallsyms("zz t x\n")


@kernel
def test_kallsyms_are_read_once_and_match_the_file() -> None:
    table = read_kallsyms()
    assert table is read_kallsyms()
    first = Path("/proc/kallsyms").read_text().splitlines()[0].split()
    assert table[first[2]] == int(first[0], 16)


# --- the kernel accepts what relocate_extern produces ---------------------------------------------------


def _weak_kfunc_program(taken: bool) -> list[Insn]:
    """``if (kfunc) kfunc();`` with an unresolved weak kfunc; ``taken`` forces the call to be live."""
    externs = ResolvedExterns(None, {}, {}, {"gone": KfuncTarget(False)})
    kwargs = {"kconfig_fd": -1, "module_btf_fd": _no_modules, "fd_array_index": _no_modules, "where": "test"}
    address = relocate_extern(Insn(LD_IMM64, dst=R1), ExternReference(0, "gone"), externs, **kwargs)  # type: ignore[arg-type]
    call = relocate_extern(Insn(Class.JMP | JmpOp.CALL, imm=-1), KfuncCall(2, "gone"), externs, **kwargs)  # type: ignore[arg-type]
    assert (address.imm, call.src, call.imm, call.off) == (0, PseudoCall.KFUNC_CALL, 0, 0)
    guard = jmp_imm(JmpOp.JNE if taken else JmpOp.JEQ, R1, 0, 1)
    return [address, guard, call, mov64_imm(R0, 0), exit_()]


@kernel
def test_kernel_accepts_an_unresolved_weak_kfunc_call_only_as_dead_code() -> None:
    with load(ProgType.SOCKET_FILTER, _weak_kfunc_program(taken=False), with_log=True) as dead:
        assert dead.ok, dead.log
    with load(ProgType.SOCKET_FILTER, _weak_kfunc_program(taken=True), with_log=True) as live:
        assert not live.ok
        assert "invalid kernel function call not eliminated" in live.log, live.log


# --- module BTF fds --------------------------------------------------------------------------------


@kernel
def test_module_btf_opens_kernel_btf_by_name(no_fd_leak: None) -> None:
    with ModuleBtf() as modules:
        fd = modules.fd("vmlinux")
        assert modules.fd("vmlinux") == fd
        info = commands.btf_info(fd)
        assert info.kernel_btf
        assert info.btf_size == os.path.getsize(kernel_btf.VMLINUX_PATH)
        assert modules.names == ("vmlinux",)
        with pytest.raises(NameNotFound, match="dynbpf_no_such_module"):
            modules.fd("dynbpf_no_such_module")
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    with pytest.raises(StateError):
        modules.fd("vmlinux")
