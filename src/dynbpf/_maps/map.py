"""A BPF map as a Python mapping: keys and values encoded by codecs, one syscall per operation.

:class:`Map` borrows a map fd (it never closes it: the runtime owns map
lifetimes) and reads the map's type and sizes from the kernel once. Every
call allocates its own buffers, so one ``Map`` may be used from any number
of threads; what two threads see of each other's writes is the kernel's
business (hash map updates are atomic per element, array values are not).

Shapes by map type:

- per-CPU maps (``percpu_hash``, ``percpu_array``, ``lru_percpu_hash``):
  a value is a list with one element per possible CPU;
- array-like maps: keys are indices (``int``) even without BTF;
- maps of maps and prog arrays: a value is written as an fd (``int``,
  :class:`~dynbpf._sys.fd.Fd`, or a :class:`Map`) and read back as the inner
  object's kernel id, as the kernel reports it;
- queues, stacks, ring buffers, bloom filters and arenas have no keys to
  look up: :class:`~dynbpf._maps.errors.MapTypeError`.

Batch operations are used only when the caller says the kernel has them
(``batch=True``, decided by the runtime's feature probe); otherwise, or when
the kernel answers that this map type has no batch support, they fall back
to one syscall per element with the same results.
"""

from __future__ import annotations

import ctypes
import errno
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from dynbpf._btf.spec import Spec
from dynbpf._maps.codec import Codec, IntCodec, RawCodec, ReadableBuffer, ScalarCodec, as_int, codec_for
from dynbpf._maps.errors import CodecError, MapTypeError
from dynbpf._sys import commands
from dynbpf._sys.attrs import BtfInfo
from dynbpf._sys.constants import Cmd, MapFlags, MapType, UpdateFlags, type_name
from dynbpf._sys.cpus import possible_cpus
from dynbpf._sys.fd import Fd, FdSource, raw_fd
from dynbpf._sys.syscall import error_for
from dynbpf.errors import KernelDataError, StateError

#: "this map type has no batch operations" (ENOTSUPP is kernel-internal 524); the request
#: count is then left as it was, nothing having been processed
_NO_BATCH = frozenset({524, errno.EOPNOTSUPP})

PER_CPU = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE})
INDEXED = frozenset(
    {
        MapType.ARRAY,
        MapType.PERCPU_ARRAY,
        MapType.PROG_ARRAY,
        MapType.PERF_EVENT_ARRAY,
        MapType.CGROUP_ARRAY,
        MapType.ARRAY_OF_MAPS,
        MapType.DEVMAP,
        MapType.CPUMAP,
        MapType.XSKMAP,
        MapType.SOCKMAP,
        MapType.REUSEPORT_SOCKARRAY,
    }
)
FD_VALUES = frozenset(
    {MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY}
)
_NO_KEYS = {
    MapType.QUEUE: "are FIFOs without keys (push/pop, not lookup)",
    MapType.STACK: "are LIFOs without keys (push/pop, not lookup)",
    MapType.RINGBUF: "are read with a ring buffer reader, not by key",
    MapType.USER_RINGBUF: "are written with a ring buffer producer, not by key",
    MapType.BLOOM_FILTER: "have no keys (push and peek values only)",
    MapType.ARENA: "are memory to mmap, not keyed values",
}
_BATCH_CHUNK = 256
_ITERATION_SLACK = 4096


class FdCodec(ScalarCodec):
    """Values of maps of maps and prog arrays: an fd on the way in, the object's id on the way out."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("fd (in) / id (out)", 4, False)

    def to_int(self, value: Any, path: str) -> int:
        if isinstance(value, Map):
            return value.fd
        if isinstance(value, Fd):
            return value.raw
        return as_int(value, path, "an fd")

    def from_int(self, raw: int) -> int:
        return raw


def _cbuf(buf: bytearray) -> ctypes.Array[ctypes.c_char]:
    """A ctypes view of ``buf`` (no copy) to hand to the kernel."""
    return (ctypes.c_char * len(buf)).from_buffer(buf)


def btf_by_id(btf_id: int) -> Spec:
    """The BTF object ``btf_id`` as the kernel holds it (a map's creator loaded it; it is standalone)."""
    with commands.fd_by_id(commands.ObjKind.BTF, btf_id) as btf_fd:
        size = commands.btf_info(btf_fd.raw).btf_size
        data = ctypes.create_string_buffer(size)
        info = commands.obj_info(btf_fd.raw, BtfInfo(btf=ctypes.addressof(data), btf_size=size))
        if info.kernel_btf:
            raise KernelDataError(f"BTF id {btf_id} is kernel or module BTF, not a map's own")
    return Spec.parse(data.raw[: info.btf_size], section=f"BTF id {btf_id}")


def _pairs(items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    if isinstance(items, Mapping) or hasattr(items, "items"):
        return list(items.items())  # anything dict-like, a Map included
    return list(items)


class Map:
    """Dict-like access to one BPF map; see the module docstring for value shapes."""

    __slots__ = (
        "_btf_types",
        "_fd",
        "_stride",
        "batch",
        "cpus",
        "flags",
        "id",
        "key",
        "key_size",
        "max_entries",
        "name",
        "type",
        "value",
        "value_size",
    )

    def __init__(
        self,
        fd: FdSource | int,
        *,
        key: Codec | None = None,
        value: Codec | None = None,
        batch: bool = False,
        cpus: int | None = None,
    ) -> None:
        """Wrap ``fd`` (borrowed, never closed here).

        ``key``/``value`` default to raw bytes, except that indices of
        array-like maps are ``int`` and maps of maps take fds. ``batch``
        says the kernel has batch operations; ``cpus`` overrides the number
        of possible CPUs (per-CPU maps only).
        """
        info = commands.map_info(raw_fd(fd))
        self._fd = fd
        try:
            self.type: MapType | int = MapType(info.type)
        except ValueError:
            self.type = int(info.type)
        self.name = info.name.decode(errors="replace")
        self.id = int(info.id)
        self.key_size = int(info.key_size)
        self.value_size = int(info.value_size)
        self.max_entries = int(info.max_entries)
        self.flags = int(info.map_flags)
        reason = _NO_KEYS.get(self.type)  # type: ignore[call-overload]  # an unknown int type is simply absent
        if reason is not None:
            raise MapTypeError(f"map {self.name!r}: {self._type_name} maps {reason}")
        self.batch = batch
        per_cpu = self.type in PER_CPU
        self.cpus = (cpus if cpus is not None else possible_cpus()) if per_cpu else 0
        self._stride = (self.value_size + 7) & ~7
        self._btf_types: tuple[Spec, int, int] | None = None  # what with_btf decoded with, for with_strings
        self.key = key if key is not None else self._default_key()
        self.value = value if value is not None else self._default_value()
        for role, codec, size in (("key", self.key, self.key_size), ("value", self.value, self.value_size)):
            if codec.size != size:
                raise CodecError(role, f"map {self.name!r} has {size}-byte {role}s, but the codec is {codec!r}")

    @classmethod
    def with_btf(
        cls,
        fd: FdSource | int,
        btf: Spec | None,
        key_type: int,
        value_type: int,
        *,
        batch: bool = False,
        strings: bool = False,
    ) -> Map:
        """A map whose key and value types are BTF ids in ``btf`` (0: no BTF for that side).

        ``strings``: ``char`` arrays decode to ``str`` up to their NUL (they take ``str`` or bytes either way).
        """
        info = commands.map_info(raw_fd(fd))
        key = codec_for(btf, key_type, size=info.key_size, strings=strings) if key_type else None
        value = codec_for(btf, value_type, size=info.value_size, strings=strings) if value_type else None
        made = cls(fd, key=key, value=value, batch=batch)
        if btf is not None and (key_type or value_type):
            made._btf_types = (btf, key_type, value_type)
        return made

    def with_strings(self) -> Map:
        """Another view of the same map (the same borrowed fd) whose ``char`` arrays read as ``str``.

        Text in a map (a command name, a path) is a NUL-padded array; this view
        gives it up to the NUL, as the event readers' ``strings=True`` does.
        """
        if self._btf_types is None:
            raise CodecError("", f"map {self.name!r} is viewed without BTF types: no char arrays to read as text")
        btf, key_type, value_type = self._btf_types
        return Map.with_btf(self._fd, btf, key_type, value_type, batch=self.batch, strings=True)

    @classmethod
    def with_kernel_btf(cls, fd: FdSource | int, *, batch: bool = False) -> Map:
        """A map decoded with the BTF the kernel holds for it (from its creator); raw bytes without one.

        Lets a tool read maps it did not create, e.g. found by id or pin.
        """
        info = commands.map_info(raw_fd(fd))
        if not info.btf_id or not (info.btf_key_type_id or info.btf_value_type_id):
            return cls(fd, batch=batch)
        btf = btf_by_id(int(info.btf_id))
        return cls.with_btf(fd, btf, int(info.btf_key_type_id), int(info.btf_value_type_id), batch=batch)

    def _default_key(self) -> Codec:
        if self.type in INDEXED and self.key_size == 4:
            return IntCodec("index", 4, False)
        return RawCodec(self.key_size)

    def _default_value(self) -> Codec:
        if self.type in FD_VALUES and self.value_size == 4:
            return FdCodec()
        return RawCodec(self.value_size)

    @property
    def closed(self) -> bool:
        """Whether the map behind this view is gone (its collection closed, or an on-demand map freed)."""
        return not isinstance(self._fd, int) and self._fd.closed

    @property
    def fd(self) -> int:
        return raw_fd(self._fd)

    @property
    def per_cpu(self) -> bool:
        return self.cpus > 0

    @property
    def _type_name(self) -> str:
        return type_name(MapType, self.type)

    @property
    def _value_buf_size(self) -> int:
        return self._stride * self.cpus if self.cpus else self.value_size

    # --- encoding ---------------------------------------------------------------------------

    def _key_bytes(self, key: Any) -> bytearray:
        buf = bytearray(self.key_size)
        self.key.pack_into(buf, 0, key, path="key")
        return buf

    def _pack_value(self, buf: bytearray, offset: int, value: Any, path: str = "value") -> None:
        if not self.cpus:
            self.value.pack_into(buf, offset, value, path=path)
            return
        if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
            raise CodecError(path, f"a per-CPU map takes a list of {self.cpus} values, got {type(value).__name__}")
        if len(value) != self.cpus:
            raise CodecError(path, f"a per-CPU map takes one value per possible CPU ({self.cpus}), got {len(value)}")
        for cpu, item in enumerate(value):
            self.value.pack_into(buf, offset + cpu * self._stride, item, path=f"{path}[{cpu}]")

    def _value_bytes(self, value: Any) -> bytearray:
        buf = bytearray(self._value_buf_size)
        self._pack_value(buf, 0, value)
        return buf

    def _unpack_value(self, buf: ReadableBuffer, offset: int) -> Any:
        if not self.cpus:
            return self.value.unpack_from(buf, offset)
        return [self.value.unpack_from(buf, offset + cpu * self._stride) for cpu in range(self.cpus)]

    # --- single elements ---------------------------------------------------------------------

    def _lookup_raw(self, key: bytearray) -> bytearray | None:
        out = bytearray(self._value_buf_size)
        if commands.map_lookup_elem(self.fd, _cbuf(key), _cbuf(out)):
            return out
        return None

    def get(self, key: Any, default: Any = None) -> Any:
        out = self._lookup_raw(self._key_bytes(key))
        return default if out is None else self._unpack_value(out, 0)

    def __getitem__(self, key: Any) -> Any:
        out = self._lookup_raw(self._key_bytes(key))
        if out is None:
            raise KeyError(key)
        return self._unpack_value(out, 0)

    def __contains__(self, key: Any) -> bool:
        return self._lookup_raw(self._key_bytes(key)) is not None

    def set(self, key: Any, value: Any, *, flags: int = UpdateFlags.ANY) -> None:
        """Write one element; ``flags`` as for ``bpf_map_update_elem`` (NOEXIST, EXIST, F_LOCK)."""
        k, v = self._key_bytes(key), self._value_bytes(value)
        commands.map_update_elem(self.fd, _cbuf(k), _cbuf(v), flags)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def delete(self, key: Any) -> bool:
        """Delete ``key``; False if it was absent."""
        return commands.map_delete_elem(self.fd, _cbuf(self._key_bytes(key)))

    def __delitem__(self, key: Any) -> None:
        if not self.delete(key):
            raise KeyError(key)

    # --- stack trace maps -----------------------------------------------------------------------------

    def stack(self, stack_id: int) -> tuple[int, ...]:
        """The instruction addresses of stack ``stack_id`` in a stack trace map, innermost first.

        ``stack_id`` is what ``bpf_get_stackid()`` returned; a negative one
        is that helper's error (nothing was stored) and raises ``ValueError``
        naming it; an id the map does not hold (never stored, or since
        replaced) is a ``KeyError``. Names for the addresses: ``dynbpf.Symbolizer``.
        """
        if self.type != MapType.STACK_TRACE:
            raise MapTypeError(f"map {self.name!r} is a {self._type_name} map, not a stack_trace map")
        if self.flags & MapFlags.STACK_BUILD_ID:
            raise MapTypeError(
                f"map {self.name!r} stores build ids and file offsets (BPF_F_STACK_BUILD_ID), not addresses"
            )
        if isinstance(stack_id, bool) or not isinstance(stack_id, int):
            raise TypeError(f"a stack id is an int (what bpf_get_stackid() returned), not {stack_id!r}")
        if stack_id < 0:
            name = errno.errorcode.get(-stack_id, str(-stack_id))
            raise ValueError(
                f"stack id {stack_id} is bpf_get_stackid()'s error {name}, so no stack was stored "
                "(EFAULT: there was none to walk, e.g. a user stack of a kernel thread; "
                "EEXIST: its bucket held another stack and BPF_F_REUSE_STACKID was not given)"
            )
        if stack_id >= 1 << 32:
            raise KeyError(stack_id)
        out = self._lookup_raw(bytearray(stack_id.to_bytes(4, sys.byteorder)))
        if out is None:
            raise KeyError(stack_id)
        addresses = memoryview(out)[: len(out) - len(out) % 8].cast("Q")
        depth = len(addresses)
        while depth and not addresses[depth - 1]:  # the kernel zero-fills the rest of the value
            depth -= 1
        return tuple(addresses[:depth])

    # --- iteration ----------------------------------------------------------------------------------

    def _raw_keys(self) -> Iterator[bytes]:
        """Every key once, even while the caller deletes them.

        The next key is fetched before the current one is handed out, so
        deleting the current key (the usual clean-up loop) costs nothing; a
        key deleted by someone else after it was fetched may still be handed
        out. If the key the walk continues from vanishes, the kernel restarts
        a hash map walk from the beginning; keys already seen are skipped
        then. A map changing faster than it can be walked (the number of
        steps exceeds a few times its capacity) ends the iteration with
        :class:`~dynbpf.errors.StateError` instead of going on forever.
        """
        out = bytearray(self.key_size)
        cout = _cbuf(out)
        if not commands.map_get_next_key(self.fd, None, cout):
            return
        seen: set[bytes] = set()
        budget = 4 * self.max_entries + _ITERATION_SLACK
        nxt: bytes | None = bytes(out)
        while nxt is not None:
            cur, nxt = nxt, None
            seen.add(cur)
            prev = cur
            while commands.map_get_next_key(self.fd, prev, cout):
                budget -= 1
                if budget < 0:
                    raise StateError(
                        f"map {self.name!r} changed too much to iterate ({len(seen)} keys seen); "
                        "use lookup_batch() or retry"
                    )
                candidate = bytes(out)
                if candidate not in seen:
                    nxt = candidate
                    break
                prev = candidate
            yield cur

    def keys(self) -> Iterator[Any]:
        decode = self.key.decode
        for raw in self._raw_keys():
            yield decode(raw, path="key")

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def _items_per_element(self) -> Iterator[tuple[Any, Any]]:
        for raw in self._raw_keys():
            out = self._lookup_raw(bytearray(raw))
            if out is not None:  # deleted since it was listed
                yield self.key.decode(raw, path="key"), self._unpack_value(out, 0)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value); in chunks of batch lookups when ``batch`` is on."""
        return self.lookup_batch() if self.batch else self._items_per_element()

    def values(self) -> Iterator[Any]:
        return (value for _, value in self.items())

    def update(
        self, other: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (), *, flags: int = UpdateFlags.ANY
    ) -> None:
        """Write every pair of ``other`` (a mapping, a Map or (key, value) pairs)."""
        self.update_batch(other, flags=flags)

    def clear(self) -> None:
        """Delete every key (array maps cannot delete: the kernel refuses with EINVAL)."""
        keys = list(self._raw_keys())
        if keys:
            self._delete_raw(keys)

    # --- batches -------------------------------------------------------------------------------------

    def _batch_call(
        self,
        cmd: Cmd,
        keys: bytearray,
        values: bytearray | None,
        count: int,
        *,
        in_batch: bytearray | None = None,
        out_batch: bytearray | None = None,
        flags: int = 0,
    ) -> tuple[int, int]:
        """(elements processed, errno): the count matters on failure too, so no raising here."""
        return commands.map_batch_raw(
            cmd,
            self.fd,
            keys=_cbuf(keys),
            values=_cbuf(values) if values is not None else None,
            count=count,
            in_batch=_cbuf(in_batch) if in_batch is not None else None,
            out_batch=_cbuf(out_batch) if out_batch is not None else None,
            elem_flags=flags,
        )

    def _walk_batches(self, cmd: Cmd, chunk: int, fallback: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        """Batch lookups from the start to the end of the map; ``fallback`` if the map type has none."""
        vsize, ksize = self._value_buf_size, self.key_size
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a whole number of elements, at least 1, not {chunk!r}")
        chunk = min(chunk, max(1, self.max_entries))  # no batch returns more than the map holds
        keys, values = bytearray(chunk * ksize), bytearray(chunk * vsize)
        cursor: bytearray | None = None
        out = bytearray(max(ksize, 4))  # the position token: a key, or a u32 bucket for hash maps
        while True:
            count, err = self._batch_call(cmd, keys, values, chunk, in_batch=cursor, out_batch=out)
            if cursor is None and err in _NO_BATCH:
                yield from fallback
                return
            if err == errno.ENOSPC and count == 0 and chunk < max(self.max_entries, 1):
                # one hash bucket holds more elements than fit: the kernel wants a bigger chunk
                chunk = min(2 * chunk, max(self.max_entries, 1))
                keys, values = bytearray(chunk * ksize), bytearray(chunk * vsize)
                continue
            if err and err != errno.ENOENT:
                raise error_for(cmd, err, f"map {self.name!r}")
            decoded = [
                (self.key.unpack_from(keys, i * ksize, path="key"), self._unpack_value(values, i * vsize))
                for i in range(count)
            ]
            yield from decoded
            if err == errno.ENOENT or (count == 0 and cursor is not None):
                return
            cursor = bytearray(out)

    def lookup_batch(self, *, chunk: int = _BATCH_CHUNK) -> Iterator[tuple[Any, Any]]:
        """Every (key, value), read ``chunk`` elements per syscall (per element without batch support)."""
        if not self.batch:
            return self._items_per_element()
        return self._walk_batches(Cmd.MAP_LOOKUP_BATCH, chunk, self._items_per_element())

    def lookup_and_delete_batch(self, *, chunk: int = _BATCH_CHUNK) -> Iterator[tuple[Any, Any]]:
        """Drain the map: every (key, value), deleted as read (atomically per chunk with batch support)."""
        if not self.batch:
            return self._drain_per_element()
        return self._walk_batches(Cmd.MAP_LOOKUP_AND_DELETE_BATCH, chunk, self._drain_per_element())

    def _drain_per_element(self) -> Iterator[tuple[Any, Any]]:
        for raw in self._raw_keys():
            key = bytearray(raw)
            out = self._lookup_raw(key)
            if out is not None and commands.map_delete_elem(self.fd, _cbuf(key)):
                yield self.key.decode(raw, path="key"), self._unpack_value(out, 0)

    def update_batch(
        self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]], *, flags: int = UpdateFlags.ANY
    ) -> int:
        """Write every pair; returns how many. Everything is encoded before anything is written."""
        pairs = _pairs(items)
        if not pairs:
            return 0
        ksize, vsize = self.key_size, self._value_buf_size
        keys, values = bytearray(len(pairs) * ksize), bytearray(len(pairs) * vsize)
        for i, (k, v) in enumerate(pairs):
            self.key.pack_into(keys, i * ksize, k, path=f"key #{i}")
            self._pack_value(values, i * vsize, v, path=f"value #{i}")
        if self.batch:
            count, err = self._batch_call(Cmd.MAP_UPDATE_BATCH, keys, values, len(pairs), flags=flags)
            if not err:
                return count
            if err not in _NO_BATCH:
                raise error_for(Cmd.MAP_UPDATE_BATCH, err, f"map {self.name!r}: {count} of {len(pairs)} written")
        for i in range(len(pairs)):
            k, v = keys[i * ksize : (i + 1) * ksize], values[i * vsize : (i + 1) * vsize]
            commands.map_update_elem(self.fd, _cbuf(k), _cbuf(v), flags)
        return len(pairs)

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """Delete every key; returns how many.

        A missing key raises ``KeyError`` naming it, after the keys before it
        were deleted (as the kernel's batch delete does).
        """
        decoded = list(keys)
        raw = [bytes(self._key_bytes(k)) for k in decoded]
        try:
            return self._delete_raw(raw)
        except _MissingKey as e:
            raise KeyError(decoded[e.index]) from None

    def _delete_raw(self, raw: list[bytes]) -> int:
        if not raw:
            return 0
        if self.batch:
            buf = bytearray(b"".join(raw))
            count, err = self._batch_call(Cmd.MAP_DELETE_BATCH, buf, None, len(raw))
            if not err:
                return count
            if err == errno.ENOENT:
                raise _MissingKey(count)
            if err not in _NO_BATCH:
                raise error_for(Cmd.MAP_DELETE_BATCH, err, f"map {self.name!r}: {count} of {len(raw)} deleted")
        for i, k in enumerate(raw):
            if not commands.map_delete_elem(self.fd, _cbuf(bytearray(k))):
                raise _MissingKey(i)
        return len(raw)

    def __repr__(self) -> str:
        fd = "closed" if not isinstance(self._fd, int) and self._fd.closed else self.fd
        return f"<Map {self._type_name} {self.name!r} id={self.id} fd={fd}>"


class _MissingKey(Exception):  # noqa: N818 - internal signal, never escapes
    def __init__(self, index: int) -> None:
        self.index = index
