"""``dynbpf inspect``: what an object contains, for people (tables) and machines (JSON)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dynbpf._asm.disasm import format_listing
from dynbpf._asm.insn import Insn
from dynbpf._btf import graph
from dynbpf._btf.types import Datasec
from dynbpf._elf.spec import (
    DataReference,
    ExternReference,
    FunctionPointer,
    KfuncCall,
    MapReference,
    MapSpec,
    ObjectSpec,
    SubprogramCall,
)
from dynbpf._sys.constants import HELPER_NAMES, AttachType, MapFlags, MapType, ProgType, type_name
from dynbpf.errors import DynbpfError, NotFound


def summary(spec: ObjectSpec) -> dict[str, Any]:
    """Everything ``inspect`` shows, as plain JSON-able data."""
    users: dict[str, list[str]] = {m: [] for m in spec.maps}
    programs = []
    for name, prog in spec.programs.items():
        reach = spec.reachable(name)
        maps = spec.maps_used(name)
        for m in maps:
            users.setdefault(m, []).append(name)
        k = prog.kind
        programs.append(
            {
                "name": name,
                "section": prog.section,
                "type": type_name(ProgType, k.prog_type),
                "attach_type": (
                    type_name(AttachType, k.expected_attach_type) if k.expected_attach_type is not None else None
                ),
                "target": str(k.target) if k.target is not None else None,
                "error": k.error,
                "sleepable": k.sleepable,
                "autoload": k.autoload,
                "instructions": sum(len(f.instructions) for f in reach[:1]),
                "instructions_with_subprograms": sum(len(f.instructions) for f in reach),
                "subprograms": [f.name for f in reach[1:]],
                "maps": list(maps),
                "externs": list(spec.externs_used(name)),
                "core_relocations": sum(len(f.core_relocations) for f in reach),
            }
        )
    return {
        "name": spec.name,
        "license": spec.license,
        "kernel_version": spec.kernel_version,
        "programs": programs,
        "subprograms": [
            {"name": f.name, "instructions": len(f.instructions), "global": f.global_function}
            for f in spec.subprograms.values()
        ],
        "maps": [_map(spec, m, users.get(m.name, [])) for m in spec.maps.values()],
        "variables": [
            {
                "name": v.name,
                "section": v.section,
                "offset": v.offset,
                "size": v.size,
                "type": _type_name(spec, v.type_id),
                "global": v.is_global,
            }
            for v in spec.variables.values()
        ],
        "externs": [
            {"name": e.name, "kind": e.kind.value, "type": _type_name(spec, e.type_id), "weak": e.weak}
            for e in spec.externs.values()
        ],
    }


def _map(spec: ObjectSpec, m: MapSpec, users: list[str]) -> dict[str, Any]:
    flags = [f.name.lower() for f in MapFlags if f.value and m.flags & f.value and f.name]
    return {
        "name": m.name,
        "section": m.section,
        "type": type_name(MapType, m.type),
        "key": {"type": _type_name(spec, m.key_type), "size": m.key_size},
        "value": {"type": _type_name(spec, m.value_type), "size": m.value_size},
        "max_entries": m.max_entries,
        "flags": flags,
        "pinning": m.pinning.name.lower(),
        "inner": _map(spec, m.inner, []) if m.inner else None,
        "initial_contents": [{"slot": s, "target": t} for s, t in m.contents],
        "struct_ops_slots": dict(m.program_slots),
        "used_by": users,
    }


def _type_name(spec: ObjectSpec, type_id: int) -> str | None:
    if not type_id or spec.btf is None:
        return None
    try:
        t = spec.btf[type_id]
        if isinstance(t, Datasec):  # a global data map's value: the section itself
            return t.name
        return graph.format_type(spec.btf, type_id)
    except DynbpfError:
        return f"type #{type_id}"


def render(info: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    info = _safe(info)  # every string here came from the object: no markup, no escapes, printable
    console.print(
        f"[bold]{info['name']}[/bold]  license {info['license'] or '(none)'}  "
        f"{len(info['programs'])} programs, {len(info['subprograms'])} subprograms, {len(info['maps'])} maps"
    )
    t = Table(title="Programs", title_justify="left", expand=True)
    for col in ("name", "section", "type / attach", "target", "insns", "subprograms", "maps", "CO-RE"):
        t.add_column(col, overflow="fold")
    for p in info["programs"]:
        kind = p["type"] + (f" / {p['attach_type']}" if p["attach_type"] else "")
        if p["sleepable"]:
            kind += " (sleepable)"
        name = p["name"] if p["autoload"] else f"{p['name']} (no autoload)"
        insns = str(p["instructions"])
        if p["subprograms"]:
            insns += f" (+{p['instructions_with_subprograms'] - p['instructions']})"
        t.add_row(
            name,
            p["section"],
            kind,
            p["target"] or ("[red]unusable: see --json[/red]" if p["error"] else ""),
            insns,
            ", ".join(p["subprograms"]),
            ", ".join(p["maps"]),
            str(p["core_relocations"] or ""),
        )
    console.print(t)
    t = Table(title="Maps", title_justify="left", expand=True)
    for col in ("name", "type", "key", "value", "max", "flags", "pinning", "contents", "used by"):
        t.add_column(col, overflow="fold")
    for m in info["maps"]:
        contents = [f"[{c['slot']}]={c['target']}" for c in m["initial_contents"]]
        contents += [f".{member}={prog}" for member, prog in m["struct_ops_slots"].items()]
        t.add_row(
            m["name"],
            m["type"],
            _sized(m["key"]),
            _sized(m["value"]),
            str(m["max_entries"]),
            ", ".join(m["flags"]),
            "" if m["pinning"] == "none" else m["pinning"],
            " ".join(contents),
            ", ".join(m["used_by"]),
        )
    console.print(t)
    if info["variables"]:
        t = Table(title="Global variables", title_justify="left", expand=True)
        for col in ("name", "section", "offset", "size", "type"):
            t.add_column(col, overflow="fold")
        for v in info["variables"]:
            t.add_row(v["name"], v["section"], str(v["offset"]), str(v["size"]), v["type"] or "")
        console.print(t)
    if info["externs"]:
        t = Table(title="Externs", title_justify="left", expand=True)
        for col in ("name", "kind", "type", "weak"):
            t.add_column(col, overflow="fold")
        for e in info["externs"]:
            t.add_row(e["name"], e["kind"], e["type"] or "", "weak" if e["weak"] else "")
        console.print(t)


def _sized(part: dict[str, Any]) -> str:
    return f"{part['type']} ({part['size']})" if part["type"] else str(part["size"])


def disassembly(spec: ObjectSpec, program: str) -> str:
    """A program and the subprograms it calls, with relocations and source lines annotated."""
    if program not in spec.programs:
        raise NotFound(f"object {spec.name!r}", "program", program, sorted(spec.programs))
    parts = []
    for fn in spec.reachable(program):
        notes: dict[int, str] = {}
        for r in fn.relocations:
            if isinstance(r, MapReference):
                notes[r.index] = f"map {r.map}"
            elif isinstance(r, DataReference):
                notes[r.index] = f"{r.map}+{r.offset}"
            elif isinstance(r, SubprogramCall | FunctionPointer):
                notes[r.index] = r.function
            elif isinstance(r, ExternReference | KfuncCall):
                notes[r.index] = f"extern {r.extern}"
        for r in fn.core_relocations:
            notes[r.index] = (notes.get(r.index, "") + f" CO-RE {r.kind.name.lower()} {r.access}").strip()
        lines = {index: info for index, info in fn.line_info}

        def annotate(index: int, insn: Insn, notes: dict[int, str] = notes) -> str | None:
            if index in notes:
                return notes[index]
            if insn.is_helper_call and 0 <= insn.imm < len(HELPER_NAMES):
                return HELPER_NAMES[insn.imm]
            return None

        def source(index: int, lines: dict[int, Any] = lines) -> str | None:
            li = lines.get(index)
            if li is None or not li.line_num:  # line 0: compiler-generated code, no source
                return None
            return f"{li.file_name.rsplit('/', 1)[-1]}:{li.line_num}: {li.line.strip()}"

        parts.append(f"{fn.name} ({fn.section}+{fn.offset:#x}):")
        parts.append(format_listing(list(fn.instructions), annotate=annotate, source=source))
    return shown("\n".join(parts))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(shown(value))
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def shown(text: str) -> str:
    """Text from the object made safe to print: bytes that are not UTF-8 and control characters escaped.

    Names and source lines come from the object, so from whoever wrote it:
    a byte that is not UTF-8 would stop a strict UTF-8 terminal with
    UnicodeEncodeError, and an escape sequence would drive the terminal.
    """
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in raw)
