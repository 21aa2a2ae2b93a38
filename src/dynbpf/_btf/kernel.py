"""The running kernel's BTF: vmlinux and module BTF, parsed once per process.

Every caller (probes, CO-RE, attach-target lookup) shares one
:class:`~dynbpf._btf.spec.Spec` per blob, so its decoded-type cache and name
index are built at most once. Module BTF is split BTF on top of vmlinux.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Collection

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


def search(name: str, kinds: Collection[Kind]) -> tuple[str, int] | None:
    """Where the running kernel's BTF has a type ``name`` of one of ``kinds``: ``("vmlinux", id)`` or ``(module, id)``.

    vmlinux first, then each loaded module's own types in name order (the
    order libbpf searches for ksyms and attach targets). None if there is no
    such type, or the kernel has no BTF.
    """
    base = vmlinux()
    if base is None:
        return None
    found = [i for i in base.find(name) if base.kind(i) in kinds]
    if found:
        return "vmlinux", found[0]
    for module_name in module_names():
        try:
            spec = module(module_name)
        except NameNotFound:
            continue  # unloaded since it was listed
        own = [i for i in spec.find(name) if i >= spec.first_id and spec.kind(i) in kinds]
        if own:
            return module_name, own[0]
    return None


def clear_cache() -> None:
    """Forget the parsed kernel BTF (a module was reloaded; tests). Specs already handed out stay valid."""
    with _lock:
        _vmlinux.clear()
        _modules.clear()


def _load(path: str, base: Spec | None) -> Spec | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KernelUnsupported("kernel BTF", f"reading {path}: {e.strerror}") from None
    return Spec.parse(data, base=base, section=path)
