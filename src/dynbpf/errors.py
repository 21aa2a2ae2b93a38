"""The one exception hierarchy of dynbpf.

Every error says what failed, where, and what to do about it. Raw ``OSError``,
``struct.error`` or ``IndexError`` never escape a public call: lower layers
translate them into one of these. This module is the base every layer may
import; it imports nothing from dynbpf.
"""

from __future__ import annotations

import errno as _errno
import os

TYPE_CHECKING = False  # not typing's: `import dynbpf` imports this module and nothing heavy (docs/architecture.md)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any


class DynbpfError(Exception):
    """Root of all dynbpf errors."""


class SyscallError(DynbpfError):
    """A system call (usually bpf(2)) failed.

    ``errno`` is the kernel's answer; ``hint`` explains it in plain language for
    the command that failed, because the same errno means different things for
    different commands (EINVAL from an old kernel vs. a malformed request).
    """

    def __init__(self, command: str, errno: int, hint: str = "", detail: str = "") -> None:
        self.command = command
        self.errno = errno
        self.hint = hint
        self.detail = detail
        name = _errno.errorcode.get(errno, "ENOTSUPP" if errno == 524 else f"errno {errno}")
        text = "unknown error 524 (kernel-internal ENOTSUPP)" if errno == 524 else os.strerror(errno)
        msg = f"{command} failed: {name} ({text})"
        if detail:
            msg += f" [{detail}]"
        if hint:
            msg += f": {hint}"
        super().__init__(msg)


class ObjectFormatError(DynbpfError):
    """A BPF object (ELF, BTF) is malformed; names the section and offset."""

    def __init__(self, message: str, *, section: str | None = None, offset: int | None = None) -> None:
        self.section = section
        self.offset = offset
        where = []
        if section is not None:
            where.append(f"section {section!r}")
        if offset is not None:
            where.append(f"offset {offset:#x}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class RelocationError(DynbpfError):
    """An instruction could not be relocated (program, instruction, access path)."""


class VerifierError(SyscallError):
    """BPF_PROG_LOAD was rejected: which program, which instruction, which source line, and why.

    ``log`` is the whole verifier log of this load (never shared with another
    load). ``message`` is the verifier's complaint, ``instruction`` the slot
    it rejected and ``disassembly`` that instruction as text; ``source`` is
    the line of C it came from (from line_info) and ``core`` the CO-RE
    relocation that poisoned it, when that is the reason. The runtime fills
    these in from the log; they are None when the log does not say.
    """

    def __init__(
        self,
        program: str,
        errno: int,
        log: str,
        hint: str = "",
        *,
        message: str = "",
        instruction: int | None = None,
        disassembly: str | None = None,
        source: str | None = None,
        core: str | None = None,
    ) -> None:
        self.program = program
        self.log = log
        self.message = message
        self.instruction = instruction
        self.disassembly = disassembly
        self.source = source
        self.core = core
        super().__init__("BPF_PROG_LOAD", errno, hint, detail=f"program {program!r}")

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.message:
            parts.append("verifier: " + self.message.replace("\n", "\n    "))
        if self.instruction is not None:
            at = f"at instruction {self.instruction}"
            parts.append(f"{at}: {self.disassembly}" if self.disassembly else at)
        if self.source:
            parts.append(f"source: {self.source}")
        if self.core:
            parts.append(f"CO-RE relocation failed: {self.core}")
        tail = "\n".join(self.log.rstrip().splitlines()[-20:])
        if tail:
            parts.append(f"verifier log (last lines):\n{tail}")
        return "\n".join(parts)


class KernelUnsupported(DynbpfError):  # noqa: N818 - the name DESIGN.md gives it
    """The running kernel lacks a capability; says which and how that was decided."""

    def __init__(self, capability: str, how: str) -> None:
        self.capability = capability
        self.how = how
        super().__init__(f"the running kernel does not support {capability} (probed: {how})")


class StateError(DynbpfError):
    """An operation is illegal in the object's current state; says what is allowed."""


class OptionError(DynbpfError, ValueError):
    """An option's value does not fit this object or this kernel; the message names the option.

    ``constants=`` for an object without BTF, a policy for a map that is not
    created, an unknown policy name, ``cache=`` with a stand-in kernel: the
    call is well-typed, but what it asks for cannot be done. Raised before
    anything is created. An option naming something the object does not have
    is :class:`NotFound` instead.
    """


class NotFound(DynbpfError, KeyError, ValueError):  # noqa: N818 - reads as "program: not found", like KeyError
    """A name the object does not have: a program, map, data section or global, asked for or named in an option.

    One class wherever the name comes from, so one ``except`` catches it. It
    is a ``KeyError`` because ``coll.programs[name]`` and ``coll.maps[name]``
    are mappings, whose contract that is, and a ``ValueError`` because an
    option naming an unknown program (``disabled=``, ``map_policies=``,
    ``map_edits=``, ``constants=``, ``coll.load([...])``) is a wrong value.
    ``name`` is what was asked for, ``known`` what exists; the message lists
    them with the close matches first.
    """

    #: at most this many known names are listed (an agent may have hundreds); close matches always are
    LISTED = 30

    def __init__(self, owner: str, kind: str, name: str, known: Iterable[str], option: str = "") -> None:
        self.owner = owner
        self.kind = kind
        self.name = name
        self.known = tuple(known)
        self.option = option
        message = f"{owner} has no {kind} {name!r}"
        close = _closest(name, self.known) if isinstance(name, str) else []
        if close:
            message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        listed = ", ".join(self.known[: self.LISTED]) or "none"
        if len(self.known) > self.LISTED:
            listed += f", ... ({len(self.known)} in all)"
        #: the message without the option's name, for callers whose users never wrote ``option``
        self.detail = f"{message} ({kind}s: {listed})"
        super().__init__(f"{option}: {self.detail}" if option else self.detail)

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own __str__ would print the message as a quoted repr

    def __reduce__(self) -> tuple[type[NotFound], tuple[str, str, str, tuple[str, ...], str]]:
        return type(self), (self.owner, self.kind, self.name, self.known, self.option)


class AttributeNotFound(NotFound, AttributeError):  # type: ignore[misc]  # noqa: N818 - name: str here, always set
    """A name asked for as an attribute (``coll.maps.events``, ``coll.bss.hits``) that the object does not have.

    A :class:`NotFound`, so one ``except`` still catches every unknown
    name, and an ``AttributeError``, as ``getattr(view, name, default)``
    and ``hasattr()`` require of a missing attribute.
    """


def _closest(name: str, known: tuple[str, ...]) -> list[str]:
    """The known names most like ``name`` (ties kept, in order), if any is close enough to be a typo of it."""
    import difflib  # only a miss pays for it

    scores = {k: difflib.SequenceMatcher(None, name, k).ratio() for k in known if isinstance(k, str)}
    best = max(scores.values(), default=0.0)
    return [k for k, score in scores.items() if score == best] if best >= 0.6 else []


class PinError(DynbpfError):
    """A pin path, or what is pinned there, cannot be used; ``path`` says which.

    The path is not on a BPF filesystem, a directory on the way does not
    exist, it goes through a symbolic link, or the object pinned there is not
    the one asked for (a map whose definition or frozen values differ from
    the object's, a program where a link was expected).
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class KernelDataError(DynbpfError):
    """What the kernel handed over is not what its ABI documents; says what and where.

    A garbled CPU list in sysfs, a ring or perf buffer record claiming more
    bytes than were written: not a caller's mistake and not a missing
    capability, but nothing dynbpf can decode either.
    """


class MapEditError(OptionError):
    """A map edit (``dynbpf.MapEdit``) does not fit the map it names; ``map`` and ``field`` say which.

    Raised by ``dynbpf.open`` before anything is created.
    """

    def __init__(self, map_name: str, field: str | None, message: str) -> None:
        self.map = map_name
        self.field = field
        where = f"map {map_name!r}" + (f", {field}" if field else "")
        super().__init__(f"map_edits: {where}: {message}")


class AttachError(DynbpfError):
    """Attaching a program to its hook failed."""


class FeatureMapError(DynbpfError, ValueError):
    """A feature declaration (features, hooks, variants) is inconsistent; ``where`` says where it was declared.

    ``where`` is a file and line (``features.toml:12``), a BTF decl tag
    (``decl tag 'dynbpf:hook=exec' on handle_exec``) or empty for Python.
    """

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ApplyError(DynbpfError):
    """A feature configuration could not be applied; ``rolled_back`` says whether the previous one still runs.

    ``failures`` maps each required hook left without a working variant to
    the decisions (``variant``, ``outcome``, ``reason``, ``evidence``) that
    say why each of its variants failed.
    """

    def __init__(self, failures: Mapping[str, tuple[Any, ...]], *, rolled_back: bool = True) -> None:
        self.failures = dict(failures)
        self.rolled_back = rolled_back
        hooks = ", ".join(repr(h) for h in failures)
        outcome = (
            "the previous configuration stays"
            if rolled_back
            else "the rest of the new configuration was applied (atomic=False)"
        )
        lines = [f"no working variant for {hooks}; {outcome}"]
        for hook, decisions in failures.items():
            lines.append(f"  hook {hook!r}:")
            lines.extend(f"    {d.variant}: {d.outcome}: {d.reason}" for d in decisions)
            if not decisions:
                lines.append("    (no variant was tried)")
        super().__init__("\n".join(lines))
