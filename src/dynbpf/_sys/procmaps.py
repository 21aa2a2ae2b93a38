"""``/proc/PID/maps``: which file a process has mapped where, parsed in one place.

A uprobe on a bare library name probes the copy the process really runs,
found here; a user-space address from a stack trace is turned back into a
file and an offset in it the same way. Each line is ``start-end perms
offset dev inode [path]``: ``offset`` is where in the file the region
starts, the path is absent for anonymous memory, bracketed for the kernel's
own regions (``[heap]``, ``[vdso]``), and ends in `` (deleted)`` once the
file was removed or replaced after it was mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

_DELETED = " (deleted)"


@dataclass(frozen=True, slots=True)
class Region:
    start: int
    end: int  # exclusive
    perms: str  # "r-xp": readable, executable, private
    offset: int  # of ``start`` in the file
    inode: int
    path: str  # "" for anonymous memory; without the " (deleted)" suffix
    deleted: bool

    @property
    def file(self) -> bool:
        """Whether a file is mapped here (not anonymous memory or a kernel region such as ``[vdso]``)."""
        return self.path.startswith("/")

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.start <= address < self.end


def parse(text: str) -> list[Region]:
    """The regions listed in ``text``, in address order; ``ValueError`` names a malformed line."""
    regions = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 5)
        if not parts:
            continue
        try:
            low, _, high = parts[0].partition("-")
            path = parts[5] if len(parts) == 6 else ""
            deleted = path.endswith(_DELETED)
            region = Region(
                int(low, 16),
                int(high, 16),
                parts[1],
                int(parts[2], 16),
                int(parts[4]),
                path.removesuffix(_DELETED) if deleted else path,
                deleted,
            )
        except (ValueError, IndexError):
            raise ValueError(f"line {number} is not 'start-end perms offset dev inode [path]': {line[:80]!r}") from None
        regions.append(region)
    return regions


def read(pid: int) -> list[Region]:
    """The regions process ``pid`` has mapped now; ``OSError`` if it is gone or hidden from us."""
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


__all__ = ["Region", "parse", "read"]
