"""Failures of user-facing map access that are the caller's side, not the kernel's.

A value that does not fit its BTF type is :class:`CodecError`; it names the
path to the offending field (``value.hdr.flags``, ``key[2]``) because a
message about "a struct" is useless for a value with forty members. Kernel
refusals stay :class:`~dynbpf.errors.SyscallError`; malformed BTF stays
:class:`~dynbpf.errors.ObjectFormatError`.
"""

from __future__ import annotations

from dynbpf.errors import DynbpfError


class CodecError(DynbpfError, ValueError):
    """A Python value cannot be encoded as (or bytes decoded from) a BTF type; ``path`` says where."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class MapTypeError(DynbpfError, TypeError):
    """The map is of a kind this view cannot work with.

    Key/value access to a queue, stack, ring buffer or bloom filter; a ring
    buffer reader on a hash map; global variables in a map that is not a data
    section. The message names the map's type.
    """
