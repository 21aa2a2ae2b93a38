"""Lookup and encoding failures of the BTF layer.

Malformed BTF is :class:`dynbpf.errors.ObjectFormatError`. These are the
caller's side: asking for something a well-formed blob does not have, or
encoding a type that BTF cannot represent. The lookup errors are also
``LookupError`` so ``except LookupError`` keeps working for dict-like use.
"""

from __future__ import annotations

from dynbpf.errors import DynbpfError


class TypeNotFound(DynbpfError, LookupError):  # noqa: N818 - LookupError family naming, as KeyError
    """A type id outside the Spec's id space (``range(len(spec))``)."""


class NameNotFound(DynbpfError, LookupError):  # noqa: N818 - see TypeNotFound
    """A member, string or kernel module asked for by name does not exist."""


class EncodingError(DynbpfError, ValueError):
    """A type (or .BTF.ext record) holds a value its BTF encoding has no room for."""
