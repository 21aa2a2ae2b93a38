"""User-facing data access: BTF-driven codecs, dict-like maps, typed global variables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf._maps.codec import Codec, RawCodec, codec_for
    from dynbpf._maps.errors import CodecError, MapTypeError
    from dynbpf._maps.map import FdCodec, Map
    from dynbpf._maps.record import Record
    from dynbpf._maps.variables import VariableLike, Variables
    from dynbpf._sys.cpus import possible_cpus

__all__ = [
    "Codec",
    "CodecError",
    "FdCodec",
    "Map",
    "MapTypeError",
    "RawCodec",
    "Record",
    "VariableLike",
    "Variables",
    "codec_for",
    "possible_cpus",
]

if not TYPE_CHECKING:  # names load on first use (dynbpf._lazy); mypy sees the imports above
    __getattr__, __dir__ = _lazy.exports(
        __name__,
        {
            "dynbpf._maps.codec": ("Codec", "RawCodec", "codec_for"),
            "dynbpf._sys.cpus": ("possible_cpus",),
            "dynbpf._maps.errors": ("CodecError", "MapTypeError"),
            "dynbpf._maps.map": ("FdCodec", "Map"),
            "dynbpf._maps.record": ("Record",),
            "dynbpf._maps.variables": ("VariableLike", "Variables"),
        },
    )
