"""Names a package exports without importing their modules until first use (PEP 562).

``import dynbpf`` has to stay cheap (docs/architecture.md, "Lazy imports"):
a tool that only names an error class, or ``dynbpf --help``, must not pay for
the runtime, the attachers and pyelftools. A package ``__init__`` therefore
lists where each public name lives and hands this module's pair to Python as
its module ``__getattr__`` and ``__dir__``; the real import happens on the
first attribute access and the value is then cached in the package, so the
second access is an ordinary global lookup. Type checkers see the same names
through ``TYPE_CHECKING`` imports next to the table.

Standard library only, so every layer may use it.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # not typing's, whose import would double the cost of a bare `import dynbpf`
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any


def exports(
    package: str, names: Mapping[str, Iterable[str]], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, exporting ``names`` (module → its names) and ``submodules``."""
    where = {name: module for module, exported in names.items() for name in exported}
    where.update({name: f"{package}.{name}" for name in submodules})

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's required name
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module hook's required name
        return sorted(set(vars(sys.modules[package])) | where.keys())

    return __getattr__, __dir__
