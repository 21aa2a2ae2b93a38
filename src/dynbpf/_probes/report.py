"""The full capability report behind ``dynbpf probe``."""

from __future__ import annotations

import os
import platform
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dynbpf._probes.btf_kinds import BLOBS, btf_kind
from dynbpf._probes.capabilities import ATTACH_KINDS, KERNEL_FEATURES
from dynbpf._probes.maps import map_type
from dynbpf._probes.programs import helper, helper_name, probeable_for_helpers, prog_type
from dynbpf._probes.result import Support
from dynbpf._sys.constants import HELPER_NAMES, MapType, ProgType, type_name


def _distinct(enum: type[ProgType] | type[MapType]) -> list[Any]:
    """Enumerators without aliases or UNSPEC."""
    return [m for m in enum if m.value != 0]


@dataclass(frozen=True)
class Report:
    kernel: dict[str, str]
    program_types: dict[str, Support]
    map_types: dict[str, Support]
    btf: dict[str, Support]
    kernel_features: dict[str, Support]
    attach: dict[str, Support]
    helpers: dict[str, dict[str, Support]] = field(default_factory=dict)

    def sections(self) -> dict[str, dict[str, Support]]:
        return {
            "program_types": self.program_types,
            "map_types": self.map_types,
            "btf": self.btf,
            "kernel_features": self.kernel_features,
            "attach": self.attach,
        }

    def to_json(self) -> dict[str, Any]:
        def entry(s: Support) -> dict[str, Any]:
            return {"supported": s.supported, "how": s.how}

        out: dict[str, Any] = {"kernel": self.kernel}
        for name, section in self.sections().items():
            out[name] = {k: entry(v) for k, v in section.items()}
        out["helpers"] = {pt: {h: entry(s) for h, s in hs.items()} for pt, hs in self.helpers.items()}
        return out


def collect(*, helpers: bool = True, workers: int | None = None) -> Report:
    """Run every probe (each at most once per process) and gather the results.

    Helper probes are ~6,000 program loads; they run on a thread pool because
    bpf(2) releases the GIL.
    """
    uname = platform.uname()
    info = {"release": uname.release, "version": uname.version, "machine": uname.machine}
    helper_matrix: dict[str, dict[str, Support]] = {}
    if helpers:
        types = [pt for pt in _distinct(ProgType) if probeable_for_helpers(pt)]
        pairs = [(pt, h) for pt in types for h in range(1, len(HELPER_NAMES))]
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda p: helper(*p), pairs))
        for (pt, h), res in zip(pairs, results, strict=True):
            helper_matrix.setdefault(type_name(ProgType, pt), {})[helper_name(h)] = res
    return Report(
        kernel=info,
        program_types={type_name(ProgType, pt): prog_type(pt) for pt in _distinct(ProgType)},
        map_types={type_name(MapType, mt): map_type(mt) for mt in _distinct(MapType)},
        btf={kind: btf_kind(kind) for kind in BLOBS},
        kernel_features={name: fn() for name, fn in KERNEL_FEATURES.items()},
        attach={name: fn() for name, fn in ATTACH_KINDS.items()},
        helpers=helper_matrix,
    )
