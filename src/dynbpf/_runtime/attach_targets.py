"""``dynbpf.open(..., attach_targets=...)``: programs whose hook is a function of another BPF program.

fentry/fexit/fmod_ret on a BPF program and freplace are verified against
the target program's function: the load names the program (``attach_prog_fd``)
and the function's id in that program's BTF (``attach_btf_id``). This is
libbpf's ``bpf_program__set_attach_target(prog, fd, name)`` given at open:
the target must already be loaded; its fd is duplicated and held by the
collection until it closes, so every load of the program (a reload, a
variant switch) is verified against the same kernel program, even if the
caller's own handle goes away or the target program is reloaded meanwhile.
"""

from __future__ import annotations

import fcntl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynbpf._btf.kinds import Kind
from dynbpf._elf.spec import ObjectSpec
from dynbpf._sys import commands
from dynbpf._sys.constants import AttachType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf.errors import DynbpfError, NotFound, OptionError

#: program kinds whose hook can be a BPF program's function
_ON_PROGRAMS = frozenset({AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN})


@dataclass(frozen=True, slots=True)
class ProgramTarget:
    """The target program (our own fd of it) and the BTF id of the function hooked."""

    fd: Fd
    btf_id: int
    function: str


def resolve(spec: ObjectSpec, targets: Mapping[str, Any]) -> dict[str, ProgramTarget]:
    """``{program: (target, function)}`` checked and resolved; on any error nothing stays open."""
    resolved: dict[str, ProgramTarget] = {}
    try:
        for name, value in targets.items():
            resolved[name] = _one(spec, name, value)
    except BaseException:
        for target in resolved.values():
            target.fd.close()
        raise
    return resolved


def _one(spec: ObjectSpec, name: str, value: Any) -> ProgramTarget:
    where = f"attach_targets[{name!r}]"
    prog = spec.programs.get(name)
    if prog is None:
        raise NotFound(f"object {spec.name!r}", "program", name, spec.programs, option="attach_targets=")
    kind = prog.kind
    if kind.prog_type != ProgType.EXT and not (
        kind.prog_type == ProgType.TRACING and kind.expected_attach_type in _ON_PROGRAMS
    ):
        raise OptionError(
            f"{where}: program {name!r} (section {kind.section!r}) cannot hook a BPF program; "
            "only fentry, fexit, fmod_ret and freplace programs can"
        )
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str) and value[1]):
        raise OptionError(f"{where} takes (target program, function name), not {value!r}")
    target, function = value
    number = _fd_number(where, target)
    fd = Fd(fcntl.fcntl(number, fcntl.F_DUPFD_CLOEXEC, 3), "program")
    try:
        btf_id = int(commands.prog_info(fd.raw).btf_id)
        if not btf_id:
            raise OptionError(f"{where}: the target program carries no BTF, so its function {function!r} has no id")
        from dynbpf._maps.map import btf_by_id  # only for this option: `import dynbpf; dynbpf.open` stays lean

        btf = btf_by_id(btf_id)
        found = btf.find(function, Kind.FUNC)
        if not found:
            funcs = sorted(str(getattr(t, "name", "")) for _, t in btf.types() if t.kind is Kind.FUNC)
            raise OptionError(
                f"{where}: the target program has no function {function!r} (its functions: {', '.join(funcs)})"
            )
        return ProgramTarget(fd, found[0], function)
    except BaseException:
        fd.close()
        raise


def _fd_number(where: str, target: Any) -> int:
    """The fd of a loaded program: a ``Program``, an ``Fd`` or a plain number."""
    if isinstance(target, bool):
        raise OptionError(f"{where}: {target!r} is not a program")
    if isinstance(target, int):
        number = target
    else:
        try:
            number = target.fd if hasattr(target, "state") else target.raw  # a Program, or an Fd
        except DynbpfError as e:
            raise OptionError(f"{where}: the target program must be loaded first ({e})") from None
        except AttributeError:
            raise OptionError(f"{where}: {target!r} is not a program, an Fd or an fd number") from None
    if not isinstance(number, int) or number < 0:
        raise OptionError(f"{where}: {target!r} is not a program, an Fd or an fd number")
    try:
        info = commands.prog_info(number)
    except DynbpfError as e:
        raise OptionError(f"{where}: fd {number} is not a loaded BPF program ({e})") from None
    del info
    return number
