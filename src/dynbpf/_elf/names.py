"""Unique names for an object's functions, maps and variables.

A statically linked object (``bpftool gen object out.o a.o b.o``) may hold
several static symbols of one name: ``static int helper()`` in a.c and in
b.c, each doing its own thing. They are different things at different
places, and everything that refers to them (calls, relocations, BTF.ext
records) does so by place, never by name. Names only matter to people, so
each thing keeps its plain name where that is unambiguous; a static one
whose name is taken becomes ``name@file`` after the source file the linker
recorded (an ``STT_FILE`` symbol precedes the local symbols of each input),
or ``name@section+offset`` where even that is ambiguous.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dynbpf._elf.image import STB_LOCAL, STT_FILE, Image, Symbol
from dynbpf.errors import ObjectFormatError


@dataclass(frozen=True, slots=True)
class Named:
    """Something with a name and a place: a function, a map or a variable."""

    name: str
    is_global: bool
    file: str | None  # the source file of a static symbol, if the object records it
    section: str
    offset: int


def source_name(name: str) -> str:
    """The name the source gave: ``helper`` for ``helper@a.c`` (``@`` is in no C identifier)."""
    return name.partition("@")[0]


def source_files(image: Image) -> dict[int, str]:
    """The source file of each local symbol, by symbol index.

    ELF lists each input's local symbols after that input's ``STT_FILE``
    symbol; clang writes one per object and libbpf's linker keeps them.
    """
    files: dict[int, str] = {}
    current: str | None = None
    for sym in image.symbols:
        if sym.type == STT_FILE:
            current = sym.name or None
        elif current is not None and sym.bind == STB_LOCAL:
            files[sym.index] = current
    return files


def file_of(files: Mapping[int, str], sym: Symbol | None) -> str | None:
    if sym is None or sym.bind != STB_LOCAL:
        return None
    return files.get(sym.index)


def unique_names(items: Sequence[Named]) -> list[str]:
    """A distinct name for each item, in order: the plain name wherever it is unambiguous.

    A global keeps its name (a linker never lets two globals share one);
    statics sharing a name with anything get ``@file``, or ``@section+offset``
    where the file does not tell them apart.
    """
    counts = Counter(i.name for i in items)
    with_file = Counter((i.name, i.file) for i in items if not i.is_global)
    out = []
    for item in items:
        if counts[item.name] == 1 or item.is_global:
            out.append(item.name)
        elif item.file is not None and with_file[(item.name, item.file)] == 1:
            out.append(f"{item.name}@{item.file}")
        else:
            out.append(f"{item.name}@{item.section}+{item.offset:#x}")
    taken = Counter(out)
    for item, name in zip(items, out, strict=True):
        if taken[name] > 1:  # only a malformed object (two globals of one name) gets here
            raise ObjectFormatError(f"{name!r} is defined more than once", section=item.section, offset=item.offset)
    return out


__all__ = ["Named", "file_of", "source_files", "source_name", "unique_names"]
