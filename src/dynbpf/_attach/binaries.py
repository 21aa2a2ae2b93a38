"""Find the file a uprobe target names: ``/abs/path``, ``libc.so.6`` or ``bash``.

A bare library name is looked for where the dynamic linker would find it:
in the mappings of the traced process when a pid is given (that is the
copy it really runs), else ``LD_LIBRARY_PATH``, ``/etc/ld.so.cache`` and
the standard library directories, keeping only files built for this
machine (a 32-bit ``libc.so.6`` in ``/usr/lib32`` is skipped). A bare
program name is looked up on ``PATH``.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from functools import cache

from dynbpf._attach import ldcache
from dynbpf._sys import procmaps
from dynbpf.errors import DynbpfError

_MULTIARCH = f"{platform.machine()}-linux-gnu"
LIBRARY_DIRS = (
    "/usr/local/lib",
    f"/lib/{_MULTIARCH}",
    f"/usr/lib/{_MULTIARCH}",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


class BinaryNotFoundError(DynbpfError, LookupError):
    """The binary is not where it was looked for; the message lists where that was."""


def resolve(binary: str, pid: int | None = None) -> str:
    """The path to probe for ``binary`` (see the module docstring); raises :class:`BinaryNotFoundError`."""
    if "/" in binary:
        if pid is not None and not os.path.exists(binary):
            inside = f"/proc/{pid}/root{binary}" if binary.startswith("/") else None
            if inside and os.path.isfile(inside):
                return inside
        if not os.path.isfile(binary):
            raise BinaryNotFoundError(f"{binary} does not exist or is not a regular file")
        return os.path.abspath(binary)  # the kernel would resolve a relative path against its caller's cwd
    looked: list[str] = []
    if pid is not None:
        found = _mapped(binary, pid)
        if found:
            return found
        looked.append(f"/proc/{pid}/maps")
    if ".so" in binary:
        return _library(binary, looked)
    found = shutil.which(binary)
    if found:
        return found
    looked.append("PATH=" + os.environ.get("PATH", ""))
    raise BinaryNotFoundError(f"no {binary!r} in " + "; ".join(looked))


def _library(name: str, looked: list[str]) -> str:
    env_dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    candidates = [os.path.join(d, name) for d in env_dirs]
    candidates += ldcache.lookup(name)
    candidates += [os.path.join(d, name) for d in LIBRARY_DIRS]
    for path in candidates:
        if os.path.isfile(path) and _for_this_machine(path):
            return path
    if env_dirs:
        looked.append("LD_LIBRARY_PATH")
    looked += [ldcache.CACHE, *LIBRARY_DIRS]
    raise BinaryNotFoundError(f"no {name} built for this machine in " + ", ".join(looked))


def _mapped(name: str, pid: int) -> str | None:
    """The file of process ``pid`` whose name is ``name`` (or ``name`` plus a version suffix)."""
    try:
        regions = procmaps.read(pid)
    except (OSError, ValueError):
        return None
    files = list(dict.fromkeys(r.path for r in regions if r.file and not r.deleted))
    for exact in (True, False):
        for path in files:
            base = os.path.basename(path)
            if base == name if exact else base.startswith((name + ".", name + "-")):
                return path if os.path.exists(path) else f"/proc/{pid}/root{path}"
    return None


def _identity(path: str) -> bytes | None:
    """ELF class, byte order and machine of ``path`` (None if it is not ELF or cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return head[4:6] + head[18:20]


@cache
def _host() -> bytes | None:
    return _identity(os.path.realpath(sys.executable)) or _identity("/proc/self/exe")


def _for_this_machine(path: str) -> bool:
    host = _host()
    mine = _identity(path)
    return mine is not None and (host is None or mine == host)
