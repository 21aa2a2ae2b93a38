"""What one attach call is about, and how its failures are reported.

Every failure names the program, the kind of hook and the target, because
"EINVAL" alone never tells a user which of two hundred programs failed where.
A kernel refusal is reported as :class:`KernelUnsupported` only when a
``dynbpf._probes`` probe confirms that the kernel lacks the capability;
otherwise it is an :class:`AttachError` carrying the syscall error as cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from dynbpf._probes.result import Support
from dynbpf.errors import AttachError, KernelUnsupported, SyscallError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """One attachment being made: ``program`` (its name), ``kind`` (``tracepoint``...), ``target`` as text."""

    program: str
    kind: str
    target: str = ""

    def at(self, target: str) -> Request:
        return replace(self, target=target)

    @property
    def what(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind

    def error(self, reason: str) -> AttachError:
        return AttachError(f"cannot attach program {self.program!r} ({self.what}): {reason}")

    def unsupported(self, support: Support) -> KernelUnsupported:
        return KernelUnsupported(
            f"{support.name} (needed to attach program {self.program!r}, {self.what})", support.how
        )

    def require(self, support: Support) -> None:
        if not support.supported:
            raise self.unsupported(support)

    def call(
        self,
        fn: Callable[[], T],
        *,
        probe: Callable[[], Support] | None = None,
        reasons: Mapping[int, str] | None = None,
    ) -> T:
        """Run one kernel operation; a refusal becomes KernelUnsupported (if ``probe`` says so) or AttachError.

        ``reasons`` explain an errno in this operation's terms (ENOENT from
        RAW_TRACEPOINT_OPEN means "no such tracepoint"); the syscall's own
        message is kept either way.
        """
        try:
            return fn()
        except SyscallError as e:
            if probe is not None:
                support = probe()
                if not support.supported:
                    raise self.unsupported(support) from e
            reason = (reasons or {}).get(e.errno)
            raise self.error(f"{reason} ({e})" if reason else str(e)) from e


def take(request: Request, target: Mapping[str, Any], accepted: tuple[str, ...]) -> dict[str, Any]:
    """The target keywords, refusing ones this kind does not understand (a typo must not be ignored)."""
    unknown = sorted(set(target) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) or "none"
        raise TypeError(
            f"attach() of program {request.program!r} ({request.kind}) got unexpected target arguments "
            f"{', '.join(unknown)} (accepted: {allowed})"
        )
    return {k: v for k, v in target.items() if v is not None}


def integer(request: Request, options: Mapping[str, Any], name: str, default: int, *, bits: int = 64) -> int:
    """A non-negative integer keyword of at most ``bits`` bits (kernel fields are unsigned)."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise request.error(f"{name}={value!r} is not an integer in 0..2**{bits}-1")
    return value


def integers(request: Request, values: Any, name: str, most: int) -> list[int]:
    """A list keyword of at most ``most`` unsigned 64-bit integers (cookies, offsets, addresses)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise request.error(f"{name}= takes a list of integers")
    if len(values) > most or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64 for v in values
    ):
        raise request.error(f"{name}= takes at most {most} integers in 0..2**64-1")
    return list(values)


def text(request: Request, options: Mapping[str, Any], name: str) -> str | None:
    """An optional non-empty string keyword without NUL bytes (it ends up in a C string)."""
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise request.error(f"{name}={value!r} is not a non-empty string without NUL bytes")
    return value
