"""User-facing data access: BTF-driven codecs, dict-like maps, typed global variables."""

from dynbpf.maps.codec import Codec, RawCodec, codec_for
from dynbpf.maps.errors import CodecError, MapTypeError
from dynbpf.maps.record import Record

__all__ = ["Codec", "CodecError", "MapTypeError", "RawCodec", "Record", "codec_for"]
