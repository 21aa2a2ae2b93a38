"""Names for the addresses of stack traces (BCC's ``ksym`` and ``sym``).

A kernel address is named by the closest code symbol below it in
``/proc/kallsyms`` (modules' symbols, and BPF programs' as module
``bpf``, included). A user address belongs to a process: its mappings
(``/proc/PID/maps``) say which file is mapped there and at what offset,
and the file's load segments and symbols say which function that is
(:mod:`dynbpf._elf.functions`), wherever the loader placed it.

Everything read is kept, because a tool names the same addresses over and
over: kallsyms once (modules and BPF programs loaded later need
:meth:`Symbolizer.refresh`), each process's mappings until an address
falls outside all of them (then they are read again, as the process may
have mapped more) or :meth:`Symbolizer.forget`, each binary once per file
(same device, inode, size and modification time: a rebuilt binary is read
anew). An address nothing names is a frame without a function, printed as
its address, never an exception: a process may exit before its stack is
read, and JIT code or a stripped binary have no symbols.
"""

from __future__ import annotations

import bisect
import os
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynbpf._elf.functions import FunctionTable, read_functions
from dynbpf._sys import kallsyms, procmaps

if TYPE_CHECKING:
    from dynbpf._maps.map import Map


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One address of a stack, named: ``function+0xoff [module]`` (kernel) or ``function+0xoff (binary)`` (user).

    ``function`` is None when nothing names the address; ``module`` is a
    kernel module (``bpf`` for BPF programs; None for the kernel image) or
    the file a user address lies in (its path as the process sees it, or a
    region such as ``[vdso]``; None for anonymous memory and for a process
    that is gone).
    """

    address: int
    function: str | None
    offset: int
    module: str | None
    kernel: bool

    def __str__(self) -> str:
        name = f"{self.function}+{self.offset:#x}" if self.function is not None else None
        if self.kernel:
            if name is None:
                return f"{self.address:#x}"
            return f"{name} [{self.module}]" if self.module else name
        if self.module is None:
            return f"{self.address:#x}"
        return f"{name or '[unknown]'} ({self.module})"


class _KernelSymbols:
    """Code symbols of the running kernel sorted by address (at one address, the first listed)."""

    def __init__(self, text: str) -> None:
        rows = sorted(
            (s.address, i, s.name, s.module)
            for i, s in enumerate(kallsyms.parse(text))
            if s.type in kallsyms.TEXT and s.address
        )
        self.starts: list[int] = []
        self.names: list[str] = []
        self.modules: list[str] = []
        for address, _, name, module in rows:
            if self.starts and self.starts[-1] == address:
                continue
            self.starts.append(address)
            self.names.append(name)
            self.modules.append(module)

    def frame(self, address: int) -> StackFrame:
        i = bisect.bisect_right(self.starts, address) - 1
        if i < 0:
            return StackFrame(address, None, 0, None, kernel=True)
        return StackFrame(address, self.names[i], address - self.starts[i], self.modules[i] or None, kernel=True)


class Symbolizer:
    """Names kernel and user-space addresses, keeping what it read (see the module docstring); thread-safe.

    One per tool: every lookup after the first of a binary or of the
    kernel is a binary search.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kernel: _KernelSymbols | None = None
        self._processes: dict[int, tuple[list[procmaps.Region], list[int]]] = {}  # with their starts
        self._binaries: dict[tuple[int, int, int, int], FunctionTable | None] = {}
        self._warned: set[str] = set()

    # --- kernel ---------------------------------------------------------------------------------

    def kernel(self, address: int) -> StackFrame:
        """The kernel function ``address`` lies in, as ``function+0xoff`` (``[module]`` for a module's)."""
        _whole("address", address)
        with self._lock:
            if self._kernel is None:
                self._kernel = self._read_kallsyms()
            return self._kernel.frame(address)

    def kernel_stack(self, stacks: Map, stack_id: int) -> list[StackFrame]:
        """Stack ``stack_id`` of stack trace map ``stacks`` (a kernel stack), innermost frame first.

        ``stack_id`` is what ``bpf_get_stackid(ctx, &stacks, 0)`` returned:
        see :meth:`Map.stack <dynbpf.Map.stack>` for the ids that raise.
        """
        return [self.kernel(address) for address in stacks.stack(stack_id)]

    def _read_kallsyms(self) -> _KernelSymbols:
        try:
            table = _KernelSymbols(kallsyms.read_text())
        except (OSError, ValueError) as e:
            self._warn(kallsyms.KALLSYMS, f"kernel addresses stay unnamed: {kallsyms.KALLSYMS}: {e}")
            return _KernelSymbols("")
        if not table.starts:
            self._warn(
                kallsyms.KALLSYMS,
                f"kernel addresses stay unnamed: {kallsyms.KALLSYMS} lists no addresses to this process "
                "(kernel.kptr_restrict hides them from processes without CAP_SYSLOG)",
            )
        return table

    # --- user space -----------------------------------------------------------------------------

    def user(self, address: int, pid: int) -> StackFrame:
        """The function of process ``pid`` that ``address`` lies in, as ``function+0xoff (binary)``."""
        _whole("address", address)
        if _whole("pid", pid) == 0:
            raise ValueError("pid=0 is no process: user addresses belong to the process bpf_get_stackid() ran in")
        with self._lock:
            region = self._region(address, pid)
            if region is None:
                return StackFrame(address, None, 0, None, kernel=False)
            if not region.file or "x" not in region.perms:  # not code: a frame pointer chain gone astray
                return StackFrame(address, None, 0, region.path or None, kernel=False)
            table = self._binary(pid, region)
            found = None
            if table is not None:
                vaddr = table.address(address - region.start + region.offset)
                found = table.function(vaddr) if vaddr is not None else None
            if found is None:
                return StackFrame(address, None, 0, region.path, kernel=False)
            return StackFrame(address, found[0], found[1], region.path, kernel=False)

    def user_stack(self, stacks: Map, stack_id: int, pid: int) -> list[StackFrame]:
        """Stack ``stack_id`` of ``stacks`` taken in process ``pid`` (``BPF_F_USER_STACK``), innermost first."""
        return [self.user(address, pid) for address in stacks.stack(stack_id)]

    def _region(self, address: int, pid: int) -> procmaps.Region | None:
        """The mapping of ``pid`` holding ``address``, reading the mappings again once if none does."""
        cached = self._processes.get(pid)
        for fresh in (False, True) if cached is not None else (True,):
            if fresh:
                try:
                    regions = procmaps.read(pid)
                except (OSError, ValueError):  # gone, or hidden from us: its addresses stay numbers
                    self._processes.pop(pid, None)
                    return None
                cached = self._processes[pid] = (regions, [r.start for r in regions])
            assert cached is not None
            regions, starts = cached
            i = bisect.bisect_right(starts, address) - 1
            if i >= 0 and address in regions[i]:
                return regions[i]
        return None

    def _binary(self, pid: int, region: procmaps.Region) -> FunctionTable | None:
        """The functions of the file mapped at ``region``, read once per file."""
        if region.deleted:  # replaced since it was mapped: only the mapping itself still reaches the old file
            candidates = [f"/proc/{pid}/map_files/{region.start:x}-{region.end:x}"]
        else:  # the process's own view of the file system first (it may run in another mount namespace)
            candidates = [f"/proc/{pid}/root{region.path}", region.path]
        for path in candidates:
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self._binaries:
                try:
                    self._binaries[key] = read_functions(path)
                except (OSError, ValueError) as e:
                    self._warn(region.path, f"addresses in {region.path} stay unnamed: {e}")
                    self._binaries[key] = None
            return self._binaries[key]
        self._warn(region.path, f"addresses in {region.path} stay unnamed: cannot open it as {' or '.join(candidates)}")
        return None

    # --- caches ---------------------------------------------------------------------------------

    def forget(self, pid: int) -> None:
        """Drop what was read of process ``pid``'s mappings (it exited, and its number may come back)."""
        with self._lock:
            self._processes.pop(pid, None)

    def refresh(self) -> None:
        """Read everything again on next use: kallsyms (modules and BPF programs loaded since), mappings, binaries."""
        with self._lock:
            self._kernel = None
            self._processes.clear()
            self._binaries.clear()
            self._warned.clear()

    def _warn(self, about: str, message: str) -> None:
        """Say once per file why its addresses stay numbers: not an error, but not to be lost either."""
        if about not in self._warned:
            self._warned.add(about)
            warnings.warn(f"dynbpf.Symbolizer: {message}", RuntimeWarning, stacklevel=4)


def _whole(what: str, value: object) -> int:
    """``value`` if it is a non-negative int (an address, a pid); a wrong one is not silently unnamed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, not {value}")
    return value


__all__ = ["StackFrame", "Symbolizer"]
