"""The states a program moves through and the policies a map can follow (DESIGN.md, "Program lifecycle")."""

from __future__ import annotations

import enum

from dynbpf.errors import OptionError


class ProgramState(enum.Enum):
    """Where a program is in its lifecycle.

    DISABLED programs never load: the caller excluded them at open, or
    preparing them failed (loading one raises that failure). A program is
    ATTACHED while at least one of its links is live.
    """

    DISABLED = "disabled"
    PREPARED = "prepared"
    LOADED = "loaded"
    ATTACHED = "attached"


class MapPolicy(enum.Enum):
    """When a map exists.

    ``EAGER``: from open to close, like libbpf. ``ON_DEMAND``: exactly while
    a loaded program needs it; its fd number stays reserved in between, so
    prepared instructions never change. ``PINNED``: like eager, but reused
    from (or pinned to) bpffs, so it outlives the process.
    """

    EAGER = "eager"
    ON_DEMAND = "on_demand"
    PINNED = "pinned"

    @classmethod
    def of(cls, value: MapPolicy | str, *, where: str) -> MapPolicy:
        if isinstance(value, MapPolicy):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(p.value) for p in cls)
            raise OptionError(f"{where}: unknown map policy {value!r} (allowed: {allowed})") from None
