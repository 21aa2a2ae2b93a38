"""What ``import dynbpf`` and the first uses of the package import, and what they must not.

The rule (docs/architecture.md, "Lazy imports"): importing the package
imports only the errors; a public name imports its own module on first use;
pyelftools, rich, click, the attach package, the event readers and the
disassembler wait until something needs them. Each case runs in a fresh
interpreter, since this one has imported everything already. How long the
imports take is bench/import_time.py's business, not this file's.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = (
    "dynbpf",
    "dynbpf._asm",
    "dynbpf._attach",
    "dynbpf._btf",
    "dynbpf._elf",
    "dynbpf._probes",
    "dynbpf._maps",
    "dynbpf._sys",
    "dynbpf._tools",
)

THIRD_PARTY = ("elftools", "rich", "click", "aiohttp", "prometheus_client")


def loaded_by(code: str) -> set[str]:
    """Modules a fresh interpreter holds after running ``code``."""
    run = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.splitlines()[-1]))


def under(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_import_dynbpf_imports_only_the_errors() -> None:
    modules = loaded_by("import dynbpf")
    assert under(modules, "dynbpf") == {"dynbpf", "dynbpf._lazy", "dynbpf.errors"}
    assert not under(modules, *THIRD_PARTY)


def test_dynbpf_open_leaves_attaching_event_reading_and_the_cli_for_later() -> None:
    modules = loaded_by("import dynbpf\ndynbpf.open")
    assert "dynbpf._runtime.collection" in modules
    assert not under(modules, *THIRD_PARTY)
    assert not under(
        modules,
        "dynbpf._attach",
        "dynbpf._cli",
        "dynbpf._maps.ringbuf",
        "dynbpf._maps.perfbuf",
        "dynbpf._maps.reader",
        "dynbpf._maps.events",
        "dynbpf._maps.map",
        "dynbpf._asm.disasm",
        "dynbpf._probes.report",
    )


def test_attach_package_reads_elf_symbols_only_for_a_uprobe() -> None:
    modules = loaded_by("import dynbpf._attach")
    assert "dynbpf._attach.symbols" in modules
    assert not under(modules, "elftools")
    lookup = (
        "import sys\nfrom dynbpf._attach.symbols import SymbolError, function_offset\n"
        "try:\n    function_offset(sys.executable, 'main')\nexcept SymbolError:\n    pass"
    )
    modules = loaded_by(lookup)
    assert "elftools.elf.elffile" in modules


def test_cli_imports_rich_only_to_render() -> None:
    modules = loaded_by("import dynbpf._cli.main")
    assert "click" in modules
    assert not under(modules, "rich", "elftools", "dynbpf._runtime", "dynbpf._probes")
    assert not under(modules, "aiohttp", "prometheus_client", "dynbpf._features")  # the agent's, with its use


def test_a_subpackage_name_imports_its_module_and_not_its_siblings() -> None:
    modules = loaded_by("from dynbpf._asm import Insn")
    assert "dynbpf._asm.insn" in modules
    assert "dynbpf._asm.disasm" not in modules
    modules = loaded_by("from dynbpf._probes import attach")
    assert "dynbpf._probes.attach" in modules
    assert "dynbpf._probes.report" not in modules


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_defining_object(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is getattr(module, name), name
        assert name in dir(module), name
    star: dict[str, object] = {}
    exec(f"from {package} import *", star)
    assert {name: star[name] for name in module.__all__} == {name: getattr(module, name) for name in module.__all__}


@pytest.mark.parametrize("package", PACKAGES)
def test_lazy_names_are_what_the_type_checker_is_told(package: str) -> None:
    """Each name imported under ``if TYPE_CHECKING:`` in an ``__init__`` resolves at run time to that very object."""
    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    blocks = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    told = [(i.module, a.name) for b in blocks for i in b.body if isinstance(i, ast.ImportFrom) for a in i.names]
    for source, name in told:
        assert source is not None
        assert getattr(module, name) is getattr(importlib.import_module(source), name), f"{package}.{name}"
    eager = {a.asname or a.name for i in tree.body if isinstance(i, ast.Import | ast.ImportFrom) for a in i.names}
    eager |= {t.id for i in tree.body if isinstance(i, ast.Assign) for t in i.targets if isinstance(t, ast.Name)}
    eager |= {i.name for i in tree.body if isinstance(i, ast.FunctionDef | ast.ClassDef)}
    assert set(module.__all__) <= eager | {name for _, name in told}


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    import dynbpf
    import dynbpf._btf

    with pytest.raises(AttributeError, match=r"module 'dynbpf' has no attribute 'Colection'"):
        _ = dynbpf.Colection  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match=r"module 'dynbpf._btf' has no attribute 'nope'"):
        _ = dynbpf._btf.nope  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="Colection"):
        exec("from dynbpf import Colection", {})


#: The public API, pinned: a change here is a deliberate change of what users may rely on (issue 13 §5).
PUBLIC = {
    # entry points and the three stages: spec -> prepared -> collection
    "open", "read", "ObjectSpec", "PreparedProgram", "Collection", "Program", "ClonedProgram",
    "MapPolicy", "ProgramState", "MapEdit",
    # what a collection hands out
    "Map", "Variables", "Record", "Link", "IterLink", "LinkGroup", "RingBuffer", "PerfBuffer", "EventLoop",
    "StructOps", "StructOpsLink", "Attached", "Adoption",
    # helpers for tools (docs/tools.md): stack symbolisation, BPF timestamps
    "Symbolizer", "StackFrame", "KernelClock",
    "Histogram",
    # the application's features (docs/features.md) and the header declaring them in C
    "FeatureMap", "Feature", "Hook", "Variant", "Requirement", "include_dir", "Application", "FeatureState",
    # errors
    "DynbpfError", "ApplyError", "AttachError", "CacheError", "FeatureMapError", "KernelDataError", "KernelUnsupported",
    "MapEditError", "NotFound", "AttributeNotFound", "CodecError", "MapTypeError", "SymbolError", "BinaryNotFoundError",
    "ObjectFormatError", "OptionError", "PinError", "RelocationError", "StateError", "SyscallError", "VerifierError",
    "__version__",
}  # fmt: skip


def test_the_public_api_is_pinned() -> None:
    import dynbpf

    assert set(dynbpf.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(dynbpf, name) is not None, name


def test_what_a_collection_hands_out_is_public() -> None:
    """A user can name (type-annotate, isinstance) everything the API returns, from dynbpf itself."""
    import dynbpf
    from dynbpf._attach.link import Link
    from dynbpf._maps.map import Map

    assert dynbpf.Map is Map
    assert dynbpf.Link is Link
    assert issubclass(dynbpf.IterLink, dynbpf.Link)
    assert issubclass(dynbpf.CacheError, dynbpf.DynbpfError)


def test_the_version_has_one_source() -> None:
    import importlib.metadata

    import dynbpf

    assert importlib.metadata.version("dynbpf") == dynbpf.__version__
    assert f"## {dynbpf.__version__}" in (Path(__file__).resolve().parent.parent / "CHANGELOG.md").read_text()
