"""Read glibc's ``/etc/ld.so.cache``: the dynamic linker's map from library soname to file.

``uprobe/libc.so.6:getpid`` names a library the way the dynamic linker
does, so the linker's own cache is the most faithful place to find it
(it already folds in ``/etc/ld.so.conf`` and its includes). Only the
"new" format (``glibc-ld.so.cache1.1``, written by glibc since 2.32 and,
after an old-format part, by older ones) is read. A cache that does not
parse yields nothing: the caller falls back to the standard directories.
"""

from __future__ import annotations

import struct

CACHE = "/etc/ld.so.cache"
MAGIC = b"glibc-ld.so.cache1.1"
_HEADER = struct.Struct("=20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, extension_offset
_ENTRY = struct.Struct("=iIIIQ")  # flags, key, value, osversion, hwcap
_MAX_BYTES = 64 << 20


def parse(data: bytes) -> dict[str, list[str]]:
    """soname -> paths, in cache order (the linker's preference), from the bytes of a cache file."""
    start = data.find(MAGIC)
    if start < 0 or len(data) - start < _HEADER.size:
        return {}
    _, nlibs, _, _, _ = _HEADER.unpack_from(data, start)
    table = start + _HEADER.size
    if nlibs > (len(data) - table) // _ENTRY.size:
        return {}
    out: dict[str, list[str]] = {}
    for i in range(nlibs):
        _, key, value, _, _ = _ENTRY.unpack_from(data, table + i * _ENTRY.size)
        name, path = _string(data, start + key), _string(data, start + value)
        if name and path:
            out.setdefault(name, []).append(path)
    return out


def _string(data: bytes, offset: int) -> str | None:
    if not 0 <= offset < len(data):
        return None
    end = data.find(b"\0", offset, offset + 4096)
    if end < 0:
        return None
    return data[offset:end].decode(errors="surrogateescape")


def lookup(soname: str, path: str = CACHE) -> list[str]:
    """Paths the cache lists for ``soname`` (empty if it does not, or if there is no readable cache)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES)
    except OSError:
        return []
    return parse(data).get(soname, [])
