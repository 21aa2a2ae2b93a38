"""User-facing data access: BTF-driven codecs, dict-like maps, typed global variables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynbpf import _lazy

if TYPE_CHECKING:
    from dynbpf.maps.codec import Codec, RawCodec, codec_for
    from dynbpf.maps.cpus import possible_cpus
    from dynbpf.maps.errors import CodecError, MapTypeError
    from dynbpf.maps.map import FdCodec, Map
    from dynbpf.maps.record import Record
    from dynbpf.maps.variables import VariableLike, Variables

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
            "dynbpf.maps.codec": ("Codec", "RawCodec", "codec_for"),
            "dynbpf.maps.cpus": ("possible_cpus",),
            "dynbpf.maps.errors": ("CodecError", "MapTypeError"),
            "dynbpf.maps.map": ("FdCodec", "Map"),
            "dynbpf.maps.record": ("Record",),
            "dynbpf.maps.variables": ("VariableLike", "Variables"),
        },
    )
