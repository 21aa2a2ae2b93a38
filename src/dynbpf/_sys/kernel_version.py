"""The running kernel's ``LINUX_VERSION_CODE``: libbpf's reading, else the vDSO's.

libbpf 1.1 reads Ubuntu's ``/proc/version_signature`` or three numbers at
the start of ``uname -r``, and fails when it finds neither. But the release
is a string each distribution shapes its own way (Debian's experimental
kernels say ``7.3-amd64``, with no patch level), while the vDSO every
process has mapped carries an ELF note ``Linux`` whose descriptor is the
number the kernel was built with. dynbpf gives libbpf's value wherever
libbpf has one (the same program bytes), and the kernel's own where libbpf
would give up.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
import sys

_AT_SYSINFO_EHDR = 33
_PT_NOTE = 4
_ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF64_PHDR = struct.Struct("<IIQQQQQQ")
_NOTE_HEADER = struct.Struct("<III")
VERSION_SIGNATURE = "/proc/version_signature"  # Ubuntu's real kernel version; Debian has none


def code() -> int:
    """``LINUX_KERNEL_VERSION``: libbpf 1.1's value, else the vDSO's; 0 if neither tells."""
    return libbpf_code() or linux_version_code()


def libbpf_code() -> int:
    """What libbpf 1.1 computes: Ubuntu's signature, else ``x.y.z`` from ``uname -r``; 0 if neither."""
    try:
        with open(VERSION_SIGNATURE, "rb") as f:
            m = re.match(rb"\S+\s+\S+\s+(\d+)\.(\d+)\.(\d+)", f.read())
        if m:
            return encode(*(int(x) for x in m.groups()))
    except OSError:
        pass
    m2 = re.match(r"\s*(\d+)\.\s*(\d+)\.\s*(\d+)", os.uname().release)
    return encode(*(int(x) for x in m2.groups())) if m2 else 0


def encode(major: int, minor: int, patch: int) -> int:
    """``KERNEL_VERSION(major, minor, patch)``, the patch level saturating at 255 as the kernel's does."""
    return ((major << 16) + (minor << 8) + min(patch, 255)) & 0xFFFFFFFF


def linux_version_code() -> int:
    """The vDSO's ``Linux`` note (0 when this process has no vDSO or it carries no such note)."""
    base = _vdso_base()
    if base == 0 or sys.byteorder != "little" or struct.calcsize("P") != 8:
        return 0
    header = ctypes.string_at(base, _ELF64_HEADER.size)
    if header[:4] != b"\x7fELF":
        return 0
    fields = _ELF64_HEADER.unpack(header)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    for i in range(phnum):
        phdr = _ELF64_PHDR.unpack(ctypes.string_at(base + phoff + i * phentsize, _ELF64_PHDR.size))
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = phdr[:6]
        if p_type == _PT_NOTE:
            version = version_from_notes(ctypes.string_at(base + p_offset, p_filesz))
            if version:
                return version
    return 0


def _vdso_base() -> int:
    try:
        with open("/proc/self/auxv", "rb") as f:
            auxv = f.read()
    except OSError:
        return 0
    for key, value in struct.iter_unpack("<QQ", auxv[: len(auxv) // 16 * 16]):
        if key == _AT_SYSINFO_EHDR:
            return int(value)
    return 0


def version_from_notes(notes: bytes) -> int:
    """The descriptor of the ``Linux`` note of type 0 in an ELF note segment (0 if none is whole)."""
    at = 0
    while at + _NOTE_HEADER.size <= len(notes):
        namesz, descsz, kind = _NOTE_HEADER.unpack_from(notes, at)
        name_at = at + _NOTE_HEADER.size
        desc_at = name_at + (namesz + 3) // 4 * 4
        whole = desc_at + 4 <= len(notes)
        if notes[name_at : name_at + namesz] == b"Linux\0" and kind == 0 and descsz >= 4 and whole:
            return int.from_bytes(notes[desc_at : desc_at + 4], "little")
        at = desc_at + (descsz + 3) // 4 * 4
    return 0
