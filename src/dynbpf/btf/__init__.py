"""BTF: type information for programs, maps and the kernel.

``Spec`` parses a blob (lazily), ``types`` is the model, ``graph`` walks it,
``ext`` reads ``.BTF.ext`` and ``kernel`` holds the running kernel's BTF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf.btf.errors import EncodingError, NameNotFound, TypeNotFound
    from dynbpf.btf.ext import CoreRelo, CoreReloKind, ExtInfo, FuncInfo, LineInfo, encode_ext, parse_ext
    from dynbpf.btf.graph import format_type, member, resolve, size_of, skip_qualifiers
    from dynbpf.btf.kernel import vmlinux
    from dynbpf.btf.kinds import Kind
    from dynbpf.btf.spec import Spec
    from dynbpf.btf.types import Type

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
            "dynbpf.btf.errors": ("EncodingError", "NameNotFound", "TypeNotFound"),
            "dynbpf.btf.ext": (
                "CoreRelo",
                "CoreReloKind",
                "ExtInfo",
                "FuncInfo",
                "LineInfo",
                "encode_ext",
                "parse_ext",
            ),
            "dynbpf.btf.graph": ("format_type", "member", "resolve", "size_of", "skip_qualifiers"),
            "dynbpf.btf.kernel": ("vmlinux",),
            "dynbpf.btf.kinds": ("Kind",),
            "dynbpf.btf.spec": ("Spec",),
            "dynbpf.btf.types": ("Type",),
        },
    )
