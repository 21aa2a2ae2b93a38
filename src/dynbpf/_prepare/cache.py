"""A warm prepared cache: programs prepared by an earlier run, kept on disk, loaded without preparing again.

Preparing a program is pure Python (link, relocate, CO-RE, attach target);
an agent restarted on the same kernel with the same object would redo
exactly the same work. The cache keeps each prepared program in a form that
does not depend on the run: the map references in its instructions are
recorded by map name and position, and the reserved fd numbers of the new
run are written back in when it is used, so a warm start loads
byte-identical instructions (the same kernel tags) without preparing.

What the instructions depend on, and so what the key covers: the object's
bytes, the running kernel's BTF (CO-RE results, attach and kfunc BTF ids),
the kernel release and boot (kallsyms addresses of ``__ksym`` externs),
the BTF of every loaded module, dynbpf's own code,
whether the object's BTF is loaded (func/line info), the maps that are not
created (their references are poisoned), the kconfig values the caller
passed, and this module's format. ``.rodata`` constants and map sizes are
map data, not instructions, so they do not split the cache. Programs whose
request holds per-run fds other than maps (module BTF for kfuncs or attach
targets in modules) are never cached.

One file per key under the cache directory (``$XDG_CACHE_HOME/dynbpf`` or
``~/.cache/dynbpf`` by default), written whole to a temporary file and
renamed, so concurrent writers leave one complete file or the other. Each
file carries a digest of its payload: a truncated, corrupted or foreign
file is ignored (and replaced by the next save), never loaded. The
directory must belong to the user and be writable by no one else, since
its files are unpickled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dynbpf._asm.opcodes import LD_IMM64, PseudoLd
from dynbpf._btf.ext import LineInfo
from dynbpf._prepare.prepared import PreparedProgram
from dynbpf.errors import DynbpfError

FORMAT = b"dynbpf-prepared-cache-2"
_DIGEST = hashlib.sha256
_MAGIC = b"DBPC"
_IMM = struct.Struct("<i")


class CacheError(DynbpfError):
    """The cache directory cannot be used safely (wrong owner, writable by others); says which and why."""


def default_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dynbpf"


def kernel_identity() -> bytes:
    """What ties prepared instructions to this kernel: its BTF and its modules' BTF, release and boot."""
    h = _DIGEST()
    btf = Path("/sys/kernel/btf")
    modules = sorted(p.name for p in btf.iterdir()) if btf.is_dir() else []
    paths = [str(btf / m) for m in modules] + ["/proc/sys/kernel/osrelease", "/proc/sys/kernel/random/boot_id"]
    for path in paths:
        with contextlib.suppress(OSError):
            h.update(path.encode() + b"\0" + Path(path).read_bytes())
    return h.digest()


@functools.cache
def code_identity() -> bytes:
    """dynbpf's own code: a fix to how instructions are made must not be answered with old ones."""
    h = _DIGEST()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return h.digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    """A prepared program without this run's fd numbers: map references by name and byte offset."""

    program: PreparedProgram  # map numbers zeroed in code, no source-line resolver
    map_refs: tuple[tuple[int, str], ...]


class PreparedCache:
    """The cache file of one object under one key; thread-safe.

    ``get`` returns a program ready for this run (or None); ``put`` records
    one prepared now; ``save`` writes what is new to disk.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        key: bytes,
        map_fd: Callable[[str], int],
        sources: Callable[[str], tuple[tuple[int, LineInfo], ...]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"{key.hex()[:40]}.prepared"
        self._map_fd = map_fd
        self._sources = sources  # a function's source lines, for the programs handed out
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = self._read()
        self._new = False
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: Iterable[bytes]) -> bytes:
        h = _DIGEST(FORMAT)
        for part in parts:
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return h.digest()

    def get(self, name: str) -> PreparedProgram | None:
        entry = self._entries.get(name)
        if entry is None:
            self.misses += 1
            return None
        code = bytearray(entry.program.code)
        for offset, map_name in entry.map_refs:
            _IMM.pack_into(code, offset + 4, self._map_fd(map_name))
        self.hits += 1
        return replace(entry.program, code=bytes(code), sources=self._sources)

    def put(self, program: PreparedProgram, numbers: Mapping[int, str]) -> None:
        """Remember ``program``; ``numbers`` names the map behind each reserved fd number."""
        if program.fd_array or program.attach_btf_obj_fd:
            return  # module BTF fds are per run and per module load: not cacheable
        code = bytearray(program.code)
        refs = []
        for offset in range(0, len(code) - 8, 8):
            if (
                code[offset] == LD_IMM64
                and code[offset + 1] >> 4 == PseudoLd.BTF_ID
                and code[offset + 12 : offset + 16] != bytes(4)
            ):
                return  # a typed ksym in a module's BTF: its upper half is that module's fd, this run's only
            if code[offset] == LD_IMM64 and code[offset + 1] >> 4 in (PseudoLd.MAP_FD, PseudoLd.MAP_VALUE):
                (number,) = _IMM.unpack_from(code, offset + 4)
                name = numbers.get(number)
                if name is None:
                    return  # a number that is not one of our maps: nothing to rewrite it with, so don't keep it
                refs.append((offset, name))
                _IMM.pack_into(code, offset + 4, 0)
        entry = _Entry(replace(program, code=bytes(code), sources=None), tuple(refs))
        with self._lock:
            if program.name not in self._entries:
                self._entries[program.name] = entry
                self._new = True

    def save(self) -> None:
        """Write the entries to disk if any are new (merged with what another process saved meanwhile).

        Raises :class:`CacheError` when the directory is unsafe or the file cannot be written.
        """
        with self._lock:
            if not self._new:
                return
            entries = {**self._read(), **self._entries}
            self._new = False
        payload = pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _secure_directory(self.directory)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        except OSError as e:
            raise CacheError(f"cannot write the prepared cache in {self.directory}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + _DIGEST(payload).digest() + payload)
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CacheError(f"cannot write the prepared cache {self.path}: {e.strerror}") from None

    def _read(self) -> dict[str, _Entry]:
        try:
            _secure_directory(self.directory, create=False)
            with open(os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    return {}
                raw = f.read()
        except (OSError, CacheError):
            return {}
        size = len(_MAGIC) + _DIGEST().digest_size
        if len(raw) < size or raw[: len(_MAGIC)] != _MAGIC or _DIGEST(raw[size:]).digest() != raw[len(_MAGIC) : size]:
            return {}  # truncated or corrupted: ignored, replaced by the next save
        try:
            entries = pickle.loads(raw[size:])
        except Exception:
            return {}
        if not isinstance(entries, dict) or not all(isinstance(e, _Entry) for e in entries.values()):
            return {}
        return entries


def _secure_directory(directory: Path, *, create: bool = True) -> None:
    if create:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.lstat()  # a symlink is refused, not followed: it could point writes anywhere we may write
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"cache directory {directory} is not private (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}); "
            "it must belong to this user and be writable by no one else, since its files are loaded as code"
        )


__all__ = ["CacheError", "PreparedCache", "default_directory", "kernel_identity"]
