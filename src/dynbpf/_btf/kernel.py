"""The running kernel's BTF: vmlinux and module BTF, parsed once per process.

Every caller (probes, CO-RE, attach-target lookup) shares one
:class:`~dynbpf._btf.spec.Spec` per blob, so its decoded-type cache and name
index are built at most once. Module BTF is split BTF on top of vmlinux.
:class:`KernelBtf` is the one search of kernel types by name (vmlinux, then
each module's own types) that every such caller uses.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from dynbpf._btf.errors import NameNotFound
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf.errors import KernelUnsupported

BTF_DIR = "/sys/kernel/btf"
VMLINUX_PATH = f"{BTF_DIR}/vmlinux"

_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_lock = threading.Lock()
_vmlinux: list[Spec | None] = []  # empty until loaded; [None] when the kernel has no BTF
_modules: dict[str, Spec] = {}


def vmlinux() -> Spec | None:
    """The kernel's own BTF, or None if it was built without (no ``/sys/kernel/btf/vmlinux``)."""
    if _vmlinux:
        return _vmlinux[0]
    with _lock:
        if not _vmlinux:
            _vmlinux.append(_load(VMLINUX_PATH, None))
        return _vmlinux[0]


def module(name: str) -> Spec:
    """BTF of the loaded kernel module ``name``, split on top of :func:`vmlinux`."""
    if name == "vmlinux" or not _MODULE_NAME.fullmatch(name):
        raise NameNotFound(f"{name!r} is not a kernel module name")
    spec = _modules.get(name)
    if spec is not None:
        return spec
    base = vmlinux()
    if base is None:
        raise KernelUnsupported("kernel BTF", f"{VMLINUX_PATH} does not exist, so module BTF cannot be read")
    with _lock:
        spec = _modules.get(name)
        if spec is None:
            spec = _load(f"{BTF_DIR}/{name}", base)
            if spec is None:
                raise NameNotFound(f"no BTF for kernel module {name!r} (is it loaded? see {BTF_DIR})")
            _modules[name] = spec
        return spec


def module_names() -> list[str]:
    """Modules that have BTF right now (``/sys/kernel/btf`` minus vmlinux), sorted."""
    try:
        return sorted(n for n in os.listdir(BTF_DIR) if n != "vmlinux")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise KernelUnsupported("kernel BTF", f"listing {BTF_DIR}: {e.strerror}") from None


@dataclass(frozen=True, slots=True)
class Found:
    """A type found by name in kernel BTF: the blob it is in, its id there, and that blob's module (None: vmlinux)."""

    module: str | None
    spec: Spec
    type_id: int


def own_ids(spec: Spec, name: str, kinds: Collection[Kind]) -> list[int]:
    """Ids of ``spec``'s own types called ``name`` of one of ``kinds``, in id order.

    A module's split BTF also answers for its base's types; those belong to
    vmlinux, which every search asks first, so they must not be found again.
    """
    return [i for i in spec.find(name) if i >= spec.first_id and spec.kind(i) in kinds]


class KernelBtf:
    """The kernel BTF a search by name covers: a vmlinux, and module BTF split on it.

    The one place that decides what a kernel type's name finds, so externs,
    attach targets, CO-RE candidates and requirements agree (libbpf's order):

    - vmlinux first, then each module's own types, modules in name order;
    - ``modules`` None means the running kernel's loaded modules, listed
      once, the first time a search gets past vmlinux (a module unloaded
      since it was listed is skipped) — but only when ``vmlinux`` is the
      running kernel's own: module BTF is split on that one, and libbpf
      likewise ignores modules once vmlinux BTF is overridden;
    - ``vmlinux`` None: the kernel has no BTF, and nothing is found.
    """

    def __init__(self, vmlinux: Spec | None, modules: Mapping[str, Spec] | None = None) -> None:
        self.vmlinux = vmlinux
        self._modules: list[tuple[str, Spec]] | None = list(modules.items()) if modules is not None else None
        self._running = modules is None and vmlinux is not None and _is_running(vmlinux)

    @classmethod
    def running(cls) -> KernelBtf:
        """The running kernel's BTF: vmlinux (parsed now, if not yet) and its loaded modules."""
        return cls(vmlinux())

    def modules(self) -> list[tuple[str, Spec]]:
        """Module BTF by name, in search order."""
        if self._modules is None:
            loaded = []
            if self._running:
                for name in module_names():
                    try:
                        loaded.append((name, module(name)))
                    except NameNotFound:
                        continue  # unloaded since it was listed
            self._modules = loaded
        return self._modules

    def module(self, name: str) -> Spec:
        """Module ``name``'s BTF; :class:`NameNotFound` if it has none here."""
        if self.vmlinux is None:
            raise KernelUnsupported("kernel BTF", f"{VMLINUX_PATH} does not exist, so module BTF cannot be read")
        if self._running:
            return module(name)
        for known, spec in self.modules():
            if known == name:
                return spec
        raise NameNotFound(f"no BTF for kernel module {name!r} in the kernel BTF given")

    def find(self, name: str, kinds: Collection[Kind], *, only: str | None = None) -> Found | None:
        """The first type ``name`` of one of ``kinds``: in vmlinux, else in a module; None if none has it.

        ``only`` restricts the search to ``"vmlinux"`` or to one module (an
        attach target's ``module:name``); a module that is not there raises
        :class:`NameNotFound`.
        """
        for where, spec in self._blobs(only):
            ids = own_ids(spec, name, kinds)
            if ids:
                return Found(where, spec, ids[0])
        return None

    def _blobs(self, only: str | None) -> Iterator[tuple[str | None, Spec]]:
        """The blobs :meth:`find` asks, in order, with their module names; modules listed only if reached."""
        if only is not None and only != "vmlinux":
            yield only, self.module(only)
        elif self.vmlinux is not None:
            yield None, self.vmlinux
            if only is None:
                yield from self.modules()


def search(name: str, kinds: Collection[Kind]) -> tuple[str, int] | None:
    """Where the running kernel's BTF has a type ``name`` of one of ``kinds``: ``("vmlinux", id)`` or ``(module, id)``.

    :meth:`KernelBtf.find` on the running kernel, in the form requirement
    evidence names it. None if there is no such type, or the kernel has no BTF.
    """
    found = KernelBtf.running().find(name, kinds)
    return None if found is None else (found.module or "vmlinux", found.type_id)


def clear_cache() -> None:
    """Forget the parsed kernel BTF (a module was reloaded; tests). Specs already handed out stay valid."""
    with _lock:
        _vmlinux.clear()
        _modules.clear()


def _is_running(spec: Spec) -> bool:
    """Is ``spec`` the running kernel's vmlinux? Asked without parsing it: a spec handed out was cached."""
    return bool(_vmlinux) and _vmlinux[0] is spec


def _load(path: str, base: Spec | None) -> Spec | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KernelUnsupported("kernel BTF", f"reading {path}: {e.strerror}") from None
    return Spec.parse(data, base=base, section=path)
