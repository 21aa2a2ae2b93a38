"""Global variables of one data section (``.data``, ``.bss``, ``.rodata``...) by name.

A data section is a one-element array map: every variable lives at its own
offset inside value 0. :class:`Variables` decodes and encodes each variable
with the codec of its BTF type, over one of two backings:

- :meth:`Variables.of_buffer`: any writable buffer, read and written in
  place. A ``bytearray`` holding a section's initial bytes is how
  ``.rodata`` constants are set *before* the map is created (the verifier
  sees them as constants, so they must be final at load).
- :meth:`Variables.of_mapping`: an :class:`~dynbpf._maps.mapping.ArrayMapping`
  of a live ``BPF_F_MMAPABLE`` map (what libbpf skeletons use): every access
  is a memory access, and once the mapping is closed (its map was freed)
  every access raises ``StateError``.
- :meth:`Variables.of_map`: the map fd, through lookup/update of key 0.
  Writing one variable rewrites the whole value, so it can undo a
  concurrent write by a program to *another* variable of the same section
  between the read and the update; prefer an mmap for sections programs
  write to. Frozen maps (``.rodata`` after load) refuse writes with EPERM.

Variables are attributes (``view.counter``, ``view.counter = 5``); names
that clash with Python's or with this class's own are reachable as
``view["name"]``. An unknown name is :class:`~dynbpf.errors.NotFound`:
as an attribute its subclass ``AttributeNotFound``, an ``AttributeError``
too; as an item a ``KeyError``. Nothing is cached: every read sees the
current bytes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from dynbpf._btf.spec import Spec
from dynbpf._maps.codec import Codec, codec_for
from dynbpf._maps.errors import CodecError, MapTypeError
from dynbpf._maps.mapping import ArrayMapping
from dynbpf._sys import commands
from dynbpf._sys.fd import FdSource, raw_fd
from dynbpf.errors import AttributeNotFound, KernelDataError, NotFound


class VariableLike(Protocol):
    """What a variable needs to be found in its section (``dynbpf._elf.VariableSpec`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def offset(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def type_id(self) -> int: ...


class _Store(Protocol):
    size: int

    def read(self) -> AbstractContextManager[memoryview]: ...

    def write(self, patches: list[tuple[int, bytes]]) -> None: ...


class _BufferStore:
    __slots__ = ("buffer", "size")

    def __init__(self, buffer: Any) -> None:
        with memoryview(buffer) as view:
            if view.readonly:
                raise CodecError("", "variables need a writable buffer (a bytearray or a writable mmap)")
            self.size = view.nbytes
        self.buffer = buffer

    def read(self) -> memoryview:
        with memoryview(self.buffer) as view:
            return view.cast("B")  # the caller releases it: an mmap cannot close while views exist

    def write(self, patches: list[tuple[int, bytes]]) -> None:
        with memoryview(self.buffer) as view, view.cast("B") as flat:
            for offset, data in patches:
                flat[offset : offset + len(data)] = data


class _MappedStore:
    __slots__ = ("mapping", "size")

    def __init__(self, mapping: ArrayMapping) -> None:
        self.mapping = mapping
        self.size = mapping.size

    def read(self) -> AbstractContextManager[memoryview]:
        return self.mapping.view()

    def write(self, patches: list[tuple[int, bytes]]) -> None:
        with self.mapping.view(write=True) as view:
            for offset, data in patches:
                view[offset : offset + len(data)] = data


class _MapStore:
    __slots__ = ("fd", "size")

    def __init__(self, fd: FdSource | int) -> None:
        self.fd = fd
        info = commands.map_info(self._raw())
        if info.max_entries != 1 or info.key_size != 4:
            raise MapTypeError(
                f"map {info.name.decode(errors='replace')!r} is not a data section "
                f"(a 1-element array with 4-byte keys; it has {info.max_entries} entries, {info.key_size}-byte keys)"
            )
        self.size = int(info.value_size)

    def _raw(self) -> int:
        return raw_fd(self.fd)

    def _lookup(self) -> bytearray:
        value = bytearray(self.size)
        key = bytearray(4)
        found = commands.map_lookup_elem(
            self._raw(), (ctypes.c_char * 4).from_buffer(key), (ctypes.c_char * self.size).from_buffer(value)
        )
        if not found:  # array elements always exist; only a wrong map gets here
            raise KernelDataError("data section map has no element 0")
        return value

    def read(self) -> memoryview:
        return memoryview(self._lookup())

    def write(self, patches: list[tuple[int, bytes]]) -> None:
        value = self._lookup()
        for offset, data in patches:
            value[offset : offset + len(data)] = data
        commands.map_update_elem(self._raw(), bytes(4), bytes(value))


class Variables:
    """Attribute access to the variables of one data section; see the module docstring."""

    __slots__ = ("_codecs", "_store")

    _codecs: dict[str, tuple[int, Codec]]
    _store: _Store

    def __init__(self, store: _Store, btf: Spec, variables: Iterable[VariableLike]) -> None:
        codecs: dict[str, tuple[int, Codec]] = {}
        for var in variables:
            codec = codec_for(btf, var.type_id, size=var.size)
            if var.offset < 0 or var.offset + var.size > store.size:
                raise CodecError(
                    var.name, f"{var.size} bytes at offset {var.offset} do not fit the {store.size}-byte section"
                )
            codecs[var.name] = (var.offset, codec)
        object.__setattr__(self, "_codecs", codecs)
        object.__setattr__(self, "_store", store)

    @classmethod
    def of_buffer(cls, buffer: Any, btf: Spec, variables: Iterable[VariableLike]) -> Variables:
        """Variables read and written in place in ``buffer`` (a bytearray, a writable mmap...)."""
        return cls(_BufferStore(buffer), btf, variables)

    @classmethod
    def of_mapping(cls, mapping: ArrayMapping, btf: Spec, variables: Iterable[VariableLike]) -> Variables:
        """Variables of a live data section through its memory mapping (no syscall per access)."""
        return cls(_MappedStore(mapping), btf, variables)

    @classmethod
    def of_map(cls, fd: FdSource | int, btf: Spec, variables: Iterable[VariableLike]) -> Variables:
        """Variables of a live data section map (``fd`` is borrowed, never closed here)."""
        return cls(_MapStore(fd), btf, variables)

    def _entry(self, name: str) -> tuple[int, Codec]:
        entry = self._codecs.get(name)
        if entry is None:
            raise NotFound("this section", "variable", name, self._codecs)
        return entry

    def __getitem__(self, name: str) -> Any:
        offset, codec = self._entry(name)
        with self._store.read() as view:
            return codec.unpack_from(view, offset, path=name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._update({name: value})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except NotFound as e:  # getattr(view, name, default) and hasattr() expect an AttributeError
            raise AttributeNotFound(e.owner, e.kind, name, e.known) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            self[name] = value
        except NotFound as e:
            raise AttributeNotFound(e.owner, e.kind, name, e.known) from None

    def __contains__(self, name: object) -> bool:
        return name in self._codecs

    def __iter__(self) -> Iterator[str]:
        return iter(self._codecs)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(n for n in self._codecs if n.isidentifier())})

    def _asdict(self) -> dict[str, Any]:
        """Every variable, decoded from one read of the section."""
        with self._store.read() as view:
            return {name: codec.unpack_from(view, offset, path=name) for name, (offset, codec) in self._codecs.items()}

    def _update(self, values: Mapping[str, Any]) -> None:
        """Set several variables with one write; nothing is written if any value fails to encode."""
        patches = []
        for name, value in values.items():
            offset, codec = self._entry(name)
            patches.append((offset, codec.encode(value, path=name)))
        self._store.write(patches)

    @property
    def _mapping(self) -> ArrayMapping | None:
        """The memory mapping the variables live in (None for other backings)."""
        store = self._store
        return store.mapping if isinstance(store, _MappedStore) else None

    def _type(self, name: str) -> Codec:
        """The codec of variable ``name`` (its ``name`` attribute spells the C type)."""
        return self._entry(name)[1]

    def __repr__(self) -> str:
        return f"<Variables {', '.join(self._codecs)}>"
