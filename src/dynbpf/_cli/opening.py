"""Opening an object from the command line: ``-p``, ``--const``, ``--map``, ``--workers``, all checked first.

``load`` and ``run`` share these. Every name and value is checked against
the object before anything is created: a misspelt program, a constant that
does not fit its type, a map edit of a map the object lacks exits with
status 2 and the kernel is never asked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dynbpf._cli.common import bad_input

if TYPE_CHECKING:
    from dynbpf._elf.spec import ObjectSpec
    from dynbpf._features.model import FeatureMap
    from dynbpf._runtime.collection import Collection
    from dynbpf._runtime.mapedit import MapEdit
    from dynbpf.errors import DynbpfError

F = TypeVar("F", bound=Callable[..., Any])

#: the map edit fields ``--map NAME.FIELD=VALUE`` takes (MapEdit's integer fields, its type and create)
EDITABLE = ("max_entries", "key_size", "value_size", "flags", "numa_node", "map_extra", "type", "create")


def object_options(func: F) -> F:
    """``OBJ`` and the options that say how to open and load it."""
    options = [
        click.argument("obj", type=click.Path(exists=True, dir_okay=False, path_type=str)),
        click.option(
            "-p",
            "--program",
            "programs",
            multiple=True,
            metavar="PROG",
            help="A program to load (repeatable; default: every program the object loads by default).",
        ),
        click.option(
            "--const",
            "consts",
            multiple=True,
            metavar="NAME=VALUE",
            help="A read-only global (.rodata) before loading, read as its BTF type (repeatable).",
        ),
        click.option(
            "--map",
            "edits",
            multiple=True,
            metavar="NAME.FIELD=N",
            help=f"Change a map before it is created, e.g. events.max_entries=65536 ({', '.join(EDITABLE)}).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            metavar="N",
            help="Verify N programs at once (default: one per CPU).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass(frozen=True, slots=True)
class Request:
    """An object and how to open it, every part checked against the object."""

    path: str
    spec: ObjectSpec
    programs: tuple[str, ...]
    constants: dict[str, Any]
    map_edits: dict[str, MapEdit]
    workers: int | None

    def open(self) -> Collection:
        from dynbpf._runtime.collection import Collection

        return Collection(self.spec, constants=self.constants, map_edits=self.map_edits)


def request(
    path: str, programs: Sequence[str], consts: Sequence[str], edits: Sequence[str], workers: int | None
) -> Request:
    """Read ``path`` and check the options against it (exit status 2 for anything wrong)."""
    spec = read(path)
    return Request(
        path,
        spec,
        chosen_programs(spec, programs),
        constants(spec, consts),
        map_edits(spec, edits),
        workers,
    )


def read(path: str) -> ObjectSpec:
    import dynbpf
    from dynbpf.errors import ObjectFormatError

    try:
        return dynbpf.read(path)
    except ObjectFormatError as e:
        raise bad_input(f"{path} is not a BPF object dynbpf can read: {e}", option="OBJ") from e
    except OSError as e:
        raise bad_input(f"cannot read {path}: {e.strerror}", option="OBJ") from e


def chosen_programs(spec: ObjectSpec, names: Sequence[str]) -> tuple[str, ...]:
    from dynbpf.errors import NotFound

    for name in names:
        if name not in spec.programs:
            error = NotFound(f"object {spec.name!r}", "program", name, spec.programs)
            raise bad_input(str(error), option="-p")
    if names:
        return tuple(dict.fromkeys(names))
    return tuple(n for n, p in spec.programs.items() if p.kind.autoload)


def constants(spec: ObjectSpec, items: Iterable[str]) -> dict[str, Any]:
    """``--const NAME=VALUE`` items as values of their variables' BTF types."""
    from dynbpf import _section_names as section_names
    from dynbpf._btf.graph import format_type
    from dynbpf._cli.values import ValueSyntaxError, parse
    from dynbpf._maps.codec import codec_for
    from dynbpf.errors import NotFound

    out: dict[str, Any] = {}
    readonly = {v.name: v for v in spec.variables.values() if section_names.is_read_only_data(v.section)}
    for item in items:
        name, value = _assignment(item, "--const", "NAME=VALUE")
        var = readonly.get(name)
        if var is None:
            error = NotFound(f"object {spec.name!r}", "read-only global", name, sorted(readonly))
            raise bad_input(str(error), option=f"--const {item}")
        if spec.btf is None:
            raise bad_input(f"object {spec.name!r} has no BTF, so its constants have no types", option="--const")
        declared = format_type(spec.btf, var.type_id).removeprefix("const ").removeprefix("volatile ")
        try:
            out[name] = parse(codec_for(spec.btf, var.type_id, size=var.size), value, what=name, declared=declared)
        except ValueSyntaxError as e:
            raise bad_input(str(e), option=f"--const {item}") from None
    return out


def map_edits(spec: ObjectSpec, items: Iterable[str]) -> dict[str, MapEdit]:
    """``--map NAME.FIELD=N`` items as one :class:`MapEdit` per map."""
    import dataclasses

    from dynbpf._runtime.mapedit import MapEdit
    from dynbpf._sys.constants import MapType
    from dynbpf.errors import NotFound

    fields: dict[str, dict[str, Any]] = {}
    for item in items:
        target, value = _assignment(item, "--map", "NAME.FIELD=N")
        name, dot, field = target.rpartition(".")
        if not dot or not name or field not in EDITABLE:
            raise bad_input(f"{item!r}: expected NAME.FIELD=N with FIELD one of {', '.join(EDITABLE)}", option="--map")
        if name not in spec.maps:
            raise bad_input(str(NotFound(f"object {spec.name!r}", "map", name, spec.maps)), option=f"--map {item}")
        parsed: Any
        if field == "create":
            parsed = _bool(value)
        elif field == "type" and not value.lstrip("-").isdigit():
            try:
                parsed = MapType[value.upper()]
            except KeyError:
                raise bad_input(f"{item!r}: no map type {value!r}", option="--map") from None
        else:
            try:
                parsed = int(value, 0)
            except ValueError:
                parsed = None
        if parsed is None:
            kind = "true or false" if field == "create" else "an integer"
            raise bad_input(f"{item!r}: {field} takes {kind}, not {value!r}", option="--map")
        fields.setdefault(name, {})[field] = parsed
    return {name: dataclasses.replace(MapEdit(), **values) for name, values in fields.items()}


def _assignment(item: str, option: str, form: str) -> tuple[str, str]:
    name, eq, value = item.partition("=")
    if not eq or not name:
        raise bad_input(f"{item!r} is not {form}", option=option)
    return name.strip(), value


def _bool(text: str) -> bool | None:
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    return None


def load(coll: Collection, names: Sequence[str], *, workers: int | None, progress: bool) -> dict[str, DynbpfError]:
    """``coll.load(names)`` atomically; with a progress bar on stderr when ``progress`` and stderr is a terminal.

    The bar counts programs as they finish verifying; it is left out in a
    pipe, and for one program (nothing to watch).
    """
    from dynbpf._cli.common import console

    err = console(stderr=True)
    if not progress or not err.is_terminal or len(names) < 2:
        return coll.load(names, workers=workers, atomic=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    programs = [coll.programs[n] for n in names]
    done = threading.Event()
    columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("load", total=len(programs))

        def watch() -> None:
            while not done.wait(0.1):
                bar.update(task, completed=sum(p.loaded for p in programs))

        watcher = threading.Thread(target=watch, name="dynbpf-load-progress", daemon=True)
        watcher.start()
        try:
            return coll.load(names, workers=workers, atomic=True)
        finally:
            done.set()
            watcher.join()
            bar.update(task, completed=sum(p.loaded for p in programs))


def failure_report(failures: dict[str, DynbpfError]) -> str:
    """Why the programs did not load, one paragraph each, for the error message."""
    parts = [f"{len(failures)} of the programs did not load, so none stays loaded:"]
    for name, error in failures.items():
        parts.append(f"{name}: {error}")
    return "\n".join(parts)


def elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def default_workers(workers: int | None) -> int:
    return workers or os.cpu_count() or 1


def feature_map(spec: ObjectSpec, obj_path: str, toml: str | None) -> FeatureMap | None:
    """The object's feature map: ``toml`` if given, else its decl tags, else ``<name>.features.toml`` beside it.

    None when none of the three declares one.
    """
    from pathlib import Path

    from dynbpf._features.model import FeatureMap
    from dynbpf._features.toml import beside

    if toml is not None:
        return FeatureMap.from_toml(Path(toml))  # a Path: a file name holding '=' is still a file name
    declared = FeatureMap.from_object(spec, name=os.path.basename(obj_path))
    if declared is not None:
        return declared
    next_to = beside(obj_path)
    return FeatureMap.from_toml(next_to) if next_to.is_file() else None


def feature_map_option(func: F) -> F:
    option = click.option(
        "--feature-map",
        "feature_toml",
        type=click.Path(exists=True, dir_okay=False, path_type=str),
        metavar="TOML",
        help="The feature map (default: the object's decl tags, else NAME.features.toml beside it).",
    )
    return option(func)
