"""BTF: type information for programs, maps and the kernel.

``Spec`` parses a blob (lazily), ``types`` is the model, ``graph`` walks it,
``ext`` reads ``.BTF.ext`` and ``kernel`` holds the running kernel's BTF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._btf.errors import EncodingError, NameNotFound, TypeNotFound
    from dynbpf._btf.ext import CoreRelo, CoreReloKind, ExtInfo, FuncInfo, LineInfo, encode_ext, parse_ext
    from dynbpf._btf.graph import format_type, member, resolve, size_of, skip_qualifiers
    from dynbpf._btf.kernel import vmlinux
    from dynbpf._btf.kinds import Kind
    from dynbpf._btf.spec import Spec
    from dynbpf._btf.types import Type

__all__ = [
    "CoreRelo",
    "CoreReloKind",
    "EncodingError",
    "ExtInfo",
    "FuncInfo",
    "Kind",
    "LineInfo",
    "NameNotFound",
    "Spec",
    "Type",
    "TypeNotFound",
    "encode_ext",
    "format_type",
    "member",
    "parse_ext",
    "resolve",
    "size_of",
    "skip_qualifiers",
    "vmlinux",
]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._btf.errors": ("EncodingError", "NameNotFound", "TypeNotFound"),
            "dynbpf._btf.ext": (
                "CoreRelo",
                "CoreReloKind",
                "ExtInfo",
                "FuncInfo",
                "LineInfo",
                "encode_ext",
                "parse_ext",
            ),
            "dynbpf._btf.graph": ("format_type", "member", "resolve", "size_of", "skip_qualifiers"),
            "dynbpf._btf.kernel": ("vmlinux",),
            "dynbpf._btf.kinds": ("Kind",),
            "dynbpf._btf.spec": ("Spec",),
            "dynbpf._btf.types": ("Type",),
        },
    )
