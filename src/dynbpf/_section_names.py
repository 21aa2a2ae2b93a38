"""The ELF section names of a BPF object that mean something to a loader.

One home for them: the reader, preparation, the runtime and the BTF layer
all look sections up by these names, and a typo in one of those places
would silently find nothing. Standard library only, so every layer (even
``_btf``, which imports nothing else of dynbpf) may use it.
"""

from __future__ import annotations

TEXT = ".text"
MAPS = ".maps"
LEGACY_MAPS = "maps"  # bpf_map_def definitions, which libbpf 1.0 dropped
STRUCT_OPS = (".struct_ops", ".struct_ops.link")
KCONFIG = ".kconfig"  # also the name of the map that holds their values
KSYMS = ".ksyms"
BTF = ".BTF"
BTF_EXT = ".BTF.ext"
DATA = ".data"
RODATA = ".rodata"
BSS = ".bss"


def is_data_section(name: str) -> bool:
    """Whether ``name`` holds global variables (``.data``, ``.rodata``, ``.bss``, ``.data.*``, ``.rodata.*``)."""
    return name in (DATA, RODATA, BSS) or name.startswith((DATA + ".", RODATA + "."))


def is_read_only_data(name: str) -> bool:
    """Whether ``name`` is read-only global data (``.rodata`` or ``.rodata.*``), frozen once written."""
    return name == RODATA or name.startswith(RODATA + ".")
