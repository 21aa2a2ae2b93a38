"""Finding uprobe targets without the kernel: ld.so.cache, library and program lookup, symbol file offsets."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynbpf._attach import binaries, ldcache
from dynbpf._attach.symbols import SymbolError, function_offset

LIBC = binaries.resolve("libc.so.6")


def cache_bytes(entries: list[tuple[str, str]], *, prefix: bytes = b"") -> bytes:
    """A new-format ld.so.cache with ``entries`` (soname, path); string offsets count from the header."""
    header_size, entry_size = 48, 24
    strings = b""
    table = b""
    base = header_size + entry_size * len(entries)
    for name, path in entries:
        key = base + len(strings)
        strings += name.encode() + b"\0"
        value = base + len(strings)
        strings += path.encode() + b"\0"
        table += struct.pack("=iIIIQ", 0x0303, key, value, 0, 0)
    header = struct.pack("=20sIIB3xI12x", ldcache.MAGIC, len(entries), len(strings), 2, 0)
    return prefix + header + table + strings


def test_ldcache_parses_entries_in_order() -> None:
    data = cache_bytes([("libfoo.so.1", "/opt/a/libfoo.so.1"), ("libbar.so", "/b"), ("libfoo.so.1", "/c/libfoo.so.1")])
    assert ldcache.parse(data) == {"libfoo.so.1": ["/opt/a/libfoo.so.1", "/c/libfoo.so.1"], "libbar.so": ["/b"]}


def test_ldcache_after_an_old_format_part() -> None:
    old = b"ld.so-1.7.0" + b"\0" + struct.pack("=I", 0)
    assert ldcache.parse(cache_bytes([("libx.so.2", "/x")], prefix=old)) == {"libx.so.2": ["/x"]}


def test_ldcache_of_this_system_knows_libc() -> None:
    paths = ldcache.lookup("libc.so.6")
    assert paths, "Debian's ld.so.cache lists libc.so.6"
    assert all(p.endswith("/libc.so.6") for p in paths)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        ldcache.MAGIC,
        ldcache.MAGIC + b"\xff" * 28,  # nlibs far beyond the file
        cache_bytes([("a", "/a")])[:60],  # table cut short
        cache_bytes([("a", "/a")])[:-3],  # strings cut short
    ],
    ids=["empty", "magic only", "huge count", "short table", "short strings"],
)
def test_ldcache_malformed_yields_nothing(data: bytes) -> None:
    assert ldcache.parse(data) == {}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.integers(0, 64))
def test_ldcache_never_raises(tail: bytes, where: int) -> None:
    data = bytearray(cache_bytes([("libq.so", "/q"), ("libr.so", "/r")]))
    data[where : where + len(tail)] = tail
    result = ldcache.parse(bytes(data))
    assert all(isinstance(k, str) and all(isinstance(p, str) for p in v) for k, v in result.items())


def test_ldcache_missing_file() -> None:
    assert ldcache.lookup("libc.so.6", "/nonexistent/ld.so.cache") == []


# --- binaries ---------------------------------------------------------------------------------------


def test_library_is_found_for_this_machine() -> None:
    assert os.path.isfile(LIBC)
    with open(LIBC, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_library_in_a_traced_process_comes_from_its_mappings() -> None:
    path = binaries.resolve("libc.so.6", os.getpid())
    assert os.path.samefile(path, LIBC)
    assert os.path.samefile(binaries.resolve("libc", os.getpid()), LIBC)  # a versioned name matches its prefix


def test_ld_library_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(LIBC, tmp_path / "libc.so.6")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert binaries.resolve("libc.so.6") == str(tmp_path / "libc.so.6")


def test_a_foreign_or_non_elf_library_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libc.so.6").write_text("GROUP ( /lib/libc.so.6 )\n")  # a linker script, as libc.so is
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert binaries.resolve("libc.so.6") != str(tmp_path / "libc.so.6")


def test_programs_come_from_path() -> None:
    assert os.path.samefile(binaries.resolve("sh"), shutil.which("sh") or "")


def test_not_found_says_where_it_looked() -> None:
    with pytest.raises(binaries.BinaryNotFoundError, match=r"no libdynbpf-none.so built for this machine in .*/lib64"):
        binaries.resolve("libdynbpf-none.so")
    with pytest.raises(binaries.BinaryNotFoundError, match=rf"/proc/{os.getpid()}/maps"):
        binaries.resolve("dynbpf-no-such-program", os.getpid())
    with pytest.raises(binaries.BinaryNotFoundError, match="does not exist or is not a regular file"):
        binaries.resolve("/nonexistent/bin")


# --- symbols -----------------------------------------------------------------------------------------


def nm_offset(path: str, name: str) -> int:
    """File offset of ``name`` computed from binutils' view (nm address, readelf section table)."""
    nm = subprocess.run(["nm", "-D", "--defined-only", path], check=True, capture_output=True, text=True).stdout
    addr = next(int(line.split()[0], 16) for line in nm.splitlines() if line.split()[-1].split("@")[0] == name)
    sections = subprocess.run(["readelf", "-SW", path], check=True, capture_output=True, text=True).stdout
    for line in sections.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[0].startswith("[") and parts[2] == "PROGBITS":
            start, offset, size = int(parts[3], 16), int(parts[4], 16), int(parts[5], 16)
            if start <= addr < start + size:
                return addr - start + offset
    raise AssertionError(f"{name} at {addr:#x} is in no PROGBITS section")


def test_dynsym_offset_matches_binutils() -> None:
    location = function_offset(LIBC, "getpid")
    assert location.table == ".dynsym"
    assert location.offset == nm_offset(LIBC, "getpid")
    assert not location.ifunc


def test_symbol_versions_pick_the_default_unless_named() -> None:
    default = function_offset(LIBC, "memcpy")
    assert default == function_offset(LIBC, "memcpy@@GLIBC_2.14")
    assert default.ifunc  # memcpy picks its implementation at load time: the probe hits the resolver
    assert function_offset(LIBC, "memcpy@GLIBC_2.2.5").offset != default.offset
    with pytest.raises(SymbolError, match=r"no function 'memcpy@GLIBC_0\.1'"):
        function_offset(LIBC, "memcpy@GLIBC_0.1")


def test_not_a_function() -> None:
    with pytest.raises(SymbolError, match=r"not defined functions: stdout \(STT_OBJECT\)"):
        function_offset(LIBC, "stdout")


@pytest.mark.needs_clang
def test_symtab_is_preferred_and_static_functions_are_found(tmp_path: Path) -> None:
    src = tmp_path / "t.c"
    src.write_text(
        "static __attribute__((noinline, used)) int hidden(int x) { return x + 1; }\n"
        "int main(int c, char **v) { return hidden(c); }\n"
    )
    exe = tmp_path / "t"
    subprocess.run(["clang", "-O1", "-o", str(exe), str(src)], check=True)
    location = function_offset(str(exe), "hidden")
    assert location.table == ".symtab"
    data = exe.read_bytes()
    assert 0 < location.offset < len(data)
    subprocess.run(["strip", str(exe)], check=True)
    with pytest.raises(SymbolError, match=r"no function 'hidden' in \.dynsym"):
        function_offset(str(exe), "hidden")


def test_unreadable_and_non_elf_files(tmp_path: Path) -> None:
    with pytest.raises(SymbolError, match="cannot read"):
        function_offset(str(tmp_path / "missing"), "f")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(SymbolError):
        function_offset(str(junk), "f")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4095), st.binary(min_size=1, max_size=64))
def test_corrupted_elf_gives_symbol_error_only(
    tmp_path_factory: pytest.TempPathFactory, where: int, junk: bytes
) -> None:
    data = bytearray(_small_elf())
    data[where : where + len(junk)] = junk
    path = tmp_path_factory.mktemp("elf") / "corrupt"
    path.write_bytes(bytes(data))
    with contextlib.suppress(SymbolError):
        function_offset(str(path), "getpid")


_ELF: list[bytes] = []


def _small_elf() -> bytes:
    """/bin/true, a small real ELF file (the fuzzed range covers its headers and dynamic symbols), read once."""
    if not _ELF:
        with open(shutil.which("true") or "/bin/true", "rb") as f:
            _ELF.append(f.read())
    return _ELF[0]
