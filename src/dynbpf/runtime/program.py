"""One program of a collection: load it, unload it, ask the kernel about it.

A program holds only what its load produced (the fd and the log); the
bytes it loads come from the ``PreparedProgram``, which never changes.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dynbpf.errors import DynbpfError, StateError
from dynbpf.prepare.prepared import PreparedProgram
from dynbpf.runtime.load import LoadOptions, load_program
from dynbpf.sys import commands
from dynbpf.sys.fd import Fd

if TYPE_CHECKING:
    from dynbpf.runtime.collection import Collection


class Program:
    """A program of a :class:`~dynbpf.runtime.collection.Collection`; see :meth:`load`."""

    def __init__(
        self,
        collection: Collection,
        name: str,
        prepared: PreparedProgram | None,
        failure: DynbpfError | None,
    ) -> None:
        self._collection = collection
        self.name = name
        self._prepared = prepared
        self._failure = failure
        self._fd: Fd | None = None
        self._lock = threading.Lock()
        self.log = ""
        self.seconds = 0.0  # how long the kernel took to verify the last successful load

    def __repr__(self) -> str:
        state = "loaded" if self._fd is not None else "prepared" if self._prepared else "unpreparable"
        return f"<Program {self.name!r} {state}>"

    @property
    def prepared(self) -> PreparedProgram:
        """The final load request; raises the prepare error for a program that could not be prepared."""
        if self._prepared is None:
            assert self._failure is not None
            raise self._failure
        return self._prepared

    @property
    def loaded(self) -> bool:
        return self._fd is not None

    @property
    def fd(self) -> int:
        fd = self._fd
        if fd is None:
            raise StateError(f"program {self.name!r} is not loaded; call load() first")
        return fd.raw

    @property
    def tag(self) -> str:
        """The kernel's tag: a hash of the loaded instructions with map fds left out."""
        return bytes(commands.prog_info(self.fd).tag).hex()

    @property
    def id(self) -> int:
        return int(commands.prog_info(self.fd).id)

    def load(self, *, log_level: int = 0, log_size: int = 0) -> None:
        """Load into the kernel; a verifier failure raises ``VerifierError`` with this program's own log.

        ``log_level`` > 0 keeps the verifier's log of a successful load in :attr:`log`.
        """
        prepared = self.prepared
        with self._lock:
            if self._fd is not None:
                raise StateError(f"program {self.name!r} is already loaded; unload() it first")
            coll = self._collection
            coll._require_open()
            loaded = load_program(
                prepared, btf_fd=coll._btf_fd(), options=LoadOptions(log_level=log_level, log_size=log_size)
            )
            self.log, self.seconds = loaded.log, loaded.seconds
            try:
                coll._program_loaded(self.name, loaded.fd)
            except BaseException:
                loaded.fd.close()
                raise
            self._fd = loaded.fd

    def unload(self) -> None:
        """Release the program; the kernel frees it when nothing else (a link, a prog array) holds it."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                self._collection._program_unloaded(self.name)
            finally:
                fd.close()
