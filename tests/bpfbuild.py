"""Compile the BPF C fixtures under tests/bpf with clang, cached by content hash.

Objects are built against a vmlinux.h generated from the running kernel's BTF
by bpftool, so fixtures use real kernel types without committing generated
headers. The cache key covers the source, the flags, clang's version and the
kernel BTF, so a changed kernel or compiler rebuilds everything.

``DYNBPF_TEST_BTF`` names another kernel's BTF to build against instead: the
kernel matrix (scripts/kernel_matrix.py) compiles every fixture on the host for
the guest kernel it is about to boot (``python -m tests.bpfbuild``), since
clang under qemu's emulation takes ~20 s an object; the guest then finds them
in the shared cache under the same keys.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "bpf"
CACHE = Path(os.environ.get("DYNBPF_TEST_CACHE", ROOT / ".cache" / "bpf"))
VMLINUX_BTF = Path(os.environ.get("DYNBPF_TEST_BTF", "/sys/kernel/btf/vmlinux"))
# -fms-extensions: vmlinux.h of kernels from 6.19 on has anonymous members named by a struct tag
# (`struct foo;` inside a struct), which C accepts only as a Microsoft extension; the kernel's own
# selftests build with the same two flags. Older kernels' headers compile the same with them.
CFLAGS = [
    "-g",
    "-O2",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    "-fms-extensions",
    "-Wno-microsoft-anon-tag",
    "-Wall",
    "-Werror",
]
# usdt.bpf.h includes <linux/errno.h>, whose <asm/errno.h> sits in the multiarch
# directory on Debian, which clang does not search for the bpf target.
_MULTIARCH = Path(f"/usr/include/{platform.machine()}-linux-gnu")
SYSTEM_INCLUDES = ["-idirafter", str(_MULTIARCH)] if _MULTIARCH.is_dir() else []


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:24]


@cache
def clang_version() -> str:
    return subprocess.run(["clang", "--version"], check=True, capture_output=True, text=True).stdout


@cache
def vmlinux_h() -> Path:
    """vmlinux.h for the running kernel, generated once per kernel BTF."""
    key = _sha(VMLINUX_BTF.read_bytes())
    out = CACHE / f"vmlinux-{key}" / "vmlinux.h"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        header = subprocess.run(
            ["bpftool", "btf", "dump", "file", str(VMLINUX_BTF), "format", "c"],
            check=True,
            capture_output=True,
        ).stdout
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(header)
        tmp.replace(out)
    return out


LINKED = FIXTURES / "linked"


def fixture_names() -> list[str]:
    """Every fixture object: ``tests/bpf/<name>.bpf.c``, and ``tests/bpf/linked/<name>/`` linked from its files."""
    single = [p.name.removesuffix(".bpf.c") for p in FIXTURES.glob("*.bpf.c")]
    linked = [p.name for p in LINKED.iterdir() if p.is_dir()] if LINKED.is_dir() else []
    return sorted(single + linked)


def build(name: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile fixture ``name``; return the cached object path.

    ``tests/bpf/<name>.bpf.c`` is compiled alone; a directory
    ``tests/bpf/linked/<name>/`` has its files compiled one by one and linked
    into one object with ``bpftool gen object`` (libbpf's static linker),
    as large applications build theirs. The object keeps the file name
    ``<name>.bpf.o`` (the cache key is its directory) because libbpf derives
    the object name, and from it the names of the global-data maps
    (``<name>.bss``), from the file name.
    """
    parts = sorted((LINKED / name).glob("*.bpf.c")) if (LINKED / name).is_dir() else []
    if not parts:
        return _compile(FIXTURES / f"{name}.bpf.c", name, extra_flags)
    objects = [_compile(src, src.name.removesuffix(".bpf.c"), extra_flags) for src in parts]
    key = _sha(*(o.parent.name.encode() for o in objects), bpftool_version().encode())
    out = CACHE / f"{name}-linked-{key}" / f"{name}.bpf.o"
    return produce(out, lambda tmp: ["bpftool", "gen", "object", str(tmp), *map(str, objects)], f"the files of {name}")


@cache
def dynbpf_headers() -> tuple[Path, bytes]:
    """The package's include directory (dynbpf.h: the feature decl tags) and its headers' bytes, for the key."""
    import dynbpf

    directory = dynbpf.include_dir()
    return directory, b"".join(p.read_bytes() for p in sorted(directory.glob("*.h")))


def _compile(src: Path, name: str, extra_flags: tuple[str, ...]) -> Path:
    header = vmlinux_h()
    include, headers = dynbpf_headers()
    flags = [*CFLAGS, *extra_flags, *SYSTEM_INCLUDES, "-I", str(include)]
    # the path is in the key: line_info records it, so one tree's object is not another's
    key = _sha(
        src.read_bytes(),
        str(src).encode(),
        " ".join(flags).encode(),
        clang_version().encode(),
        header.read_bytes()[:4096],
        headers,
    )
    out = CACHE / f"{name}-{key}" / f"{name}.bpf.o"
    return produce(out, lambda tmp: ["clang", *flags, "-I", str(header.parent), "-c", str(src), "-o", str(tmp)], src)


def compile_source(source: str | bytes, name: str, flags: Sequence[str] = CFLAGS) -> Path:
    """A test's own BPF C source, compiled like the fixtures (vmlinux.h on the include path) and cached
    by content like them; return the object path.

    The source is written next to the object under the cache key, so the
    path its line_info records is the same on every run.
    """
    header = vmlinux_h()
    text = source.encode() if isinstance(source, str) else source
    argv = [*flags, *SYSTEM_INCLUDES, "-I", str(header.parent)]
    key = _sha(text, " ".join(argv).encode(), clang_version().encode(), header.read_bytes()[:4096])
    out = CACHE / f"{name}-{key}" / f"{name}.bpf.o"
    src = out.parent / f"{name}.bpf.c"
    if not src.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = src.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(text)
        tmp.replace(src)
    return produce(out, lambda tmp: ["clang", *argv, "-c", str(src), "-o", str(tmp)], src)


def produce(out: Path, command: Callable[[Path], Sequence[str]], what: object) -> Path:
    """``out``, made by running ``command(tmp)`` unless it exists (a cache hit).

    The command writes a temporary file that replaces ``out`` only when it
    succeeded, so concurrent or interrupted builds never leave a partial
    file under a cache key. A failure raises with the tool's stderr.

    A refusal with diagnostics (exit 1, an ``error:`` line) is cached too, in
    ``<out>.failed``, and raised again without running the tool: the key covers
    all it depends on, and a fixture that does not compile for one kernel of
    the matrix would otherwise cost each of its tests a compile (~30 s under
    emulation) to fail the same way.
    """
    failed = out.with_suffix(".failed")
    if failed.exists():
        raise RuntimeError(failed.read_text())
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        argv = [*command(tmp)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            message = f"{Path(argv[0]).name} failed on {what}:\n{proc.stderr}"
            if proc.returncode == 1 and "error:" in proc.stderr:
                tmp_failed = failed.with_suffix(f".failed{os.getpid()}")
                tmp_failed.write_text(message)
                tmp_failed.replace(failed)
            raise RuntimeError(message)
        tmp.replace(out)
    return out


@cache
def bpftool_version() -> str:
    return subprocess.run(["bpftool", "version"], check=True, capture_output=True, text=True).stdout


def section_bytes(obj: Path, section: str) -> bytes:
    """Raw contents of one ELF section (a program's instructions, before relocation)."""
    out = obj.with_suffix(f".{hashlib.sha1(section.encode()).hexdigest()[:8]}.bin")
    subprocess.run(
        ["llvm-objcopy", "-O", "binary", f"--only-section={section}", str(obj), str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def main() -> int:
    """``python -m tests.bpfbuild``: compile every fixture into the cache (for ``DYNBPF_TEST_BTF``'s kernel).

    A fixture that does not compile for that kernel is named on stderr with clang's first error, and
    the others are still built (exit status 1): its tests fail on that kernel with the full error.
    """
    import sys

    failed = 0
    for name in fixture_names():
        try:
            print(build(name))
        except RuntimeError as e:
            failed += 1
            first = next((line for line in str(e).splitlines() if "error:" in line), str(e).splitlines()[0])
            print(f"{name}: {first}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
