"""USDT probes of an ELF file: its ``.note.stapsdt`` notes, as file offsets a uprobe can be placed at.

``<sys/sdt.h>`` leaves one ELF note per probe site (owner ``stapsdt``,
type 3): three addresses (the site, the link-time address of
``.stapsdt.base``, the semaphore or 0), then the provider, the probe name
and the argument specs as NUL-terminated strings. The addresses are virtual
addresses of the file as linked; a prelinked file may have moved since, so
the site is shifted by how far ``.stapsdt.base`` moved (its section address
now minus the one the note recorded). The uprobe PMU wants file offsets: an
address inside a ``PT_LOAD`` segment maps to ``address - p_vaddr +
p_offset``. The site must lie in an executable segment; the semaphore (a
2-byte counter the program tests before evaluating costly arguments) in a
writable data segment, and its file offset is what the kernel's
``ref_ctr_offset`` increments while a probe is attached.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from dynbpf.errors import DynbpfError

NOTE_SECTION = ".note.stapsdt"
BASE_SECTION = ".stapsdt.base"
NOTE_OWNER = b"stapsdt"
NOTE_TYPE = 3  # NT_STAPSDT
PF_X = 1
PT_LOAD = 1


class UsdtNoteError(DynbpfError, LookupError):
    """The file has no such USDT probe, or its notes cannot be read; the message names the file."""


@dataclass(frozen=True, slots=True)
class UsdtNote:
    """One probe site as its note records it (addresses are the file's link-time virtual addresses)."""

    provider: str
    name: str
    pc: int
    base: int
    semaphore: int  # 0: none
    args: str  # the argument specs, e.g. "-4@%eax 8@-8(%rbp)"


@dataclass(frozen=True, slots=True)
class UsdtSite:
    """One probe site ready for a uprobe: file offsets of the site and of its semaphore (0: none)."""

    note: UsdtNote
    offset: int
    semaphore_offset: int


@dataclass(frozen=True, slots=True)
class _Segment:
    vaddr: int
    memsz: int
    offset: int
    executable: bool

    def holds(self, address: int) -> bool:
        return self.vaddr <= address < self.vaddr + self.memsz


def read_notes(path: str) -> tuple[UsdtNote, ...]:
    """Every USDT note of ``path``, in file order (empty if it has none)."""
    return _read(path)[0]


def find_sites(path: str, provider: str, name: str) -> tuple[UsdtSite, ...]:
    """The sites of probe ``provider:name`` in ``path``; a :class:`UsdtNoteError` lists what the file has."""
    notes, base_now, segments = _read(path)
    wanted = [n for n in notes if n.provider == provider and n.name == name]
    if not wanted:
        if not notes:
            raise UsdtNoteError(f"{path} has no USDT probes (no {NOTE_SECTION} notes)")
        have = sorted({f"{n.provider}:{n.name}" for n in notes})
        shown = ", ".join(have[:40]) + (f" and {len(have) - 40} more" if len(have) > 40 else "")
        raise UsdtNoteError(f"{path} has no USDT probe {provider}:{name}; its probes: {shown}")
    return tuple(_site(path, note, base_now, segments) for note in wanted)


def _site(path: str, note: UsdtNote, base_now: int | None, segments: list[_Segment]) -> UsdtSite:
    where = f"USDT probe {note.provider}:{note.name} of {path}"
    pc = note.pc + (base_now - note.base if base_now else 0)  # libbpf's rule: only with a .stapsdt.base
    code = next((s for s in segments if s.holds(pc)), None)
    if code is None or not code.executable:
        what = "no loadable segment" if code is None else "a segment that is not executable"
        raise UsdtNoteError(f"{where}: its address {pc:#x} lies in {what}")
    semaphore_offset = 0
    if note.semaphore:
        data = next((s for s in segments if s.holds(note.semaphore)), None)
        if data is None or data.executable:
            what = "no loadable segment" if data is None else "an executable segment"
            raise UsdtNoteError(f"{where}: its semaphore at {note.semaphore:#x} lies in {what}")
        semaphore_offset = note.semaphore - data.vaddr + data.offset
    return UsdtSite(note, pc - code.vaddr + code.offset, semaphore_offset)


def _read(path: str) -> tuple[tuple[UsdtNote, ...], int | None, list[_Segment]]:
    from elftools.elf.elffile import ELFFile  # imported only when a USDT program is attached

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            segments = [
                _Segment(int(s["p_vaddr"]), int(s["p_memsz"]), int(s["p_offset"]), bool(s["p_flags"] & PF_X))
                for s in elf.iter_segments()
                if s["p_type"] in ("PT_LOAD", PT_LOAD)
            ]
            base = elf.get_section_by_name(BASE_SECTION)
            base_now = int(base["sh_addr"]) if base is not None else None
            section = elf.get_section_by_name(NOTE_SECTION)
            if section is None:
                return (), base_now, segments
            if section["sh_type"] != "SHT_NOTE":
                raise UsdtNoteError(f"{path}: {NOTE_SECTION} is a {section['sh_type']} section, not SHT_NOTE")
            data = section.data()
            width = 8 if elf.elfclass == 64 else 4
            order = "<" if elf.little_endian else ">"
    except UsdtNoteError:
        raise
    except OSError as e:
        raise UsdtNoteError(f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # pyelftools raises many kinds of errors on malformed files
        raise UsdtNoteError(f"cannot read the ELF headers of {path}: {type(e).__name__}: {e}") from None
    return tuple(_notes(path, data, width, order)), base_now, segments


def _notes(path: str, data: bytes, width: int, order: str) -> Iterator[UsdtNote]:
    """Decode the notes of the section: 4-byte aligned (namesz, descsz, type, name, desc) records."""
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(order + "III", data, at)
        name_at = at + 12
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(data):
            raise UsdtNoteError(f"{path}: {NOTE_SECTION} note at offset {at:#x} runs past the section's end")
        owner = data[name_at : name_at + namesz].rstrip(b"\0")
        at = end
        if owner != NOTE_OWNER or kind != NOTE_TYPE:
            continue
        desc = data[desc_at : desc_at + descsz]
        yield _note(path, desc, width, order, desc_at)


def _note(path: str, desc: bytes, width: int, order: str, at: int) -> UsdtNote:
    if len(desc) < 3 * width:
        raise UsdtNoteError(f"{path}: the {NOTE_SECTION} note at {at:#x} is too short for its three addresses")
    pc, base, semaphore = struct.unpack_from(order + ("QQQ" if width == 8 else "III"), desc)
    strings = desc[3 * width :].split(b"\0")
    if len(strings) < 4:  # provider, name, args and what follows the last NUL
        raise UsdtNoteError(f"{path}: the {NOTE_SECTION} note at {at:#x} lacks its provider, name or arguments")
    try:
        provider, name, args = (s.decode() for s in strings[:3])
    except UnicodeDecodeError:
        raise UsdtNoteError(f"{path}: the {NOTE_SECTION} note at {at:#x} has names that are not UTF-8") from None
    return UsdtNote(provider, name, pc, base, semaphore, args)


def _align4(n: int) -> int:
    return (n + 3) & ~3
