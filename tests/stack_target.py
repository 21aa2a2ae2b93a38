"""A small user-space program whose stacks the symbolisation tests read: built with gcc, checked with nm.

``main -> outer -> middle -> leaf`` in the program (``middle`` is static, so only ``.symtab`` names it),
and ``outer -> lib_outer -> lib_leaf`` in a shared library stripped of ``.symtab`` (so its names come
from ``.dynsym``). Frame pointers are kept so the kernel can walk the user stack. The program prints
``ready`` once both chains ran, then waits for a line on stdin (or its end) so its mappings can be read.
Built as a PIE (the default) and as a position-dependent executable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import require

MAIN_C = r"""
#include <unistd.h>
int lib_outer(int x);
__attribute__((noinline)) int leaf(int x) { return x + 1; }
static __attribute__((noinline)) int middle(int x) { return leaf(x) * 2; }
__attribute__((noinline)) int outer(int x) { return middle(x) + lib_outer(x); }
int main(void)
{
	char c;
	int r = outer(1);
	if (write(1, "ready\n", 6) != 6)
		return 2;
	return read(0, &c, 1) < 0 || r == 0;
}
"""

LIB_C = r"""
__attribute__((noinline)) int lib_leaf(int x) { return x * 3 + 1; }
__attribute__((noinline)) int lib_outer(int x) { return lib_leaf(x + 1) + 1; }
"""

GCC = ["gcc", "-O0", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-Wall", "-Werror"]


@dataclass(frozen=True)
class StackTarget:
    pie: Path
    fixed: Path  # built with -no-pie: symbol values are the addresses it runs at
    library: Path


def build(directory: Path) -> StackTarget:
    for tool in ("gcc", "nm", "strip"):
        if shutil.which(tool) is None:
            require(f"{tool} is not installed (scripts/bootstrap.sh installs it)")
    (directory / "main.c").write_text(MAIN_C)
    (directory / "lib.c").write_text(LIB_C)
    library = directory / "libdynbpfstack.so"
    subprocess.run([*GCC, "-fPIC", "-shared", "-o", str(library), str(directory / "lib.c")], check=True)
    subprocess.run(["strip", "--strip-all", str(library)], check=True)
    link = ["-L", str(directory), "-ldynbpfstack", f"-Wl,-rpath,{directory}"]
    pie, fixed = directory / "stack-pie", directory / "stack-fixed"
    subprocess.run([*GCC, "-pie", "-fPIE", "-o", str(pie), str(directory / "main.c"), *link], check=True)
    subprocess.run([*GCC, "-no-pie", "-fno-PIE", "-o", str(fixed), str(directory / "main.c"), *link], check=True)
    return StackTarget(pie, fixed, library)


@contextmanager
def running(binary: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``binary`` started, once it said ``ready`` (both call chains ran); it exits when the block ends."""
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.stdin.close()
        proc.stdout.close()
        assert proc.wait(timeout=10) == 0


def symbols(path: Path) -> dict[str, int]:
    """Function name -> symbol value as nm reads them (``.symtab``, else ``-D``: ``.dynsym``)."""
    out = subprocess.run(["nm", "--defined-only", str(path)], capture_output=True, text=True, check=False)
    if "no symbols" in out.stderr or not out.stdout.strip():
        out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    found: dict[str, int] = {}
    for line in out.stdout.splitlines():
        value, kind, name = line.split()[:3]
        if kind in "tTi":
            found.setdefault(name.partition("@")[0], int(value, 16))
    return found


def load_base(pid: int, path: Path) -> int:
    """Where the loader put ``path`` in process ``pid``: the start of its mapping of file offset 0."""
    real = os.path.realpath(path)
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip() == real and int(parts[2], 16) == 0:
                return int(parts[0].partition("-")[0], 16)
    raise AssertionError(f"{path} is not mapped by {pid}")
