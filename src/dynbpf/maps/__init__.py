"""User-facing data access: BTF-driven codecs, dict-like maps, typed global variables."""

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
