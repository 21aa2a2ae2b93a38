"""Random lifecycle operations from several threads on the stress fixture, checked against the kernel every step.

A run is a series of rounds; each round opens ``tests/bpf/stress.bpf.c``
with its own mix of map policies (eager, on demand, pinned under a private
bpffs directory) and a few disabled programs, then runs steps: in each step
every worker thread performs one operation (load, unload, reload, attach,
detach, clone, test run, parallel ``coll.load(names, workers=2)``, ...) at
the same time, and once all are done — nothing else touches the collection
— the runtime's view is compared with what ``/proc`` and the kernel say
(``tests/kernel_state.py``): no fd leak, the program, map and link ids this
process holds are exactly the runtime's, on-demand maps exist exactly while
a loaded program (or a map that always exists) needs them, reserved fd
numbers never move, prog arrays and maps of maps hold what the object
declares. After ``coll.close()`` nothing of the round may remain except
pinned maps (and what they hold); after the run, with the pins removed,
nothing at all.

Every round also runs the programs of a few tracing hooks as an
application's features (issue 14): a random :class:`FeatureMap` over them
(hooks with alternative variants on compatible kernel hooks, shared hooks,
best-effort hooks, features requiring others, and variants that fail: a
requirement the kernel refuses, an attach target that does not exist, a
program disabled at open), switched by apply, pause, resume, variant switch
(``use=``) and ``set_constants`` operations among the others. The other
operations act on the programs no feature declares (``set_constants``
reloads those too). Every check then also compares the application's
status with the configuration: each hook of an enabled feature runs a
variant that works with every program attached; a hook only paused
features need is loaded, not attached; nothing of a hook no feature needs is
loaded; a hook is failed only when none of its variants can work. An apply
that fails must fail only for hooks without a working variant; one run
alone (``apply_alone``) must, when it fails, leave the process holding the
very programs, links and maps it held before. Every apply asks, while it
holds the application's lock, for ``status()`` from another thread, which
must answer.

The operations depend only on the seed (never on outcomes), so a seed
replays the same sequence; with one thread the outcomes replay too.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dynbpf
from dynbpf._elf.reader import read
from dynbpf._features.application import Application, ApplyError
from dynbpf._features.model import Feature, FeatureMap, Hook, Requirement, Variant
from dynbpf._features.requirements import check as check_requirement
from dynbpf._probes.result import Support
from dynbpf._sys import commands, fs
from dynbpf._sys.commands import ObjKind
from dynbpf._sys.constants import MapType
from dynbpf.errors import AttachError, FeatureMapError, StateError, SyscallError
from tests import kernel_state as ks
from tests.bpfbuild import build

FIXTURE = "stress"
NAME_LEN = 15  # BPF_OBJ_NAME_LEN without the NUL
PACKET = bytes(64)
#: A dispatcher's verdict when its tail call finds no program in the slot.
FALLTHROUGH = {"xdp": 2, "socket": 1}
#: What each stage program returns, so a dispatcher's verdict says which program its slot held.
STAGE_VERDICT = {
    "sx_xdp_stage0": 1,
    "sx_xdp_stage1": 3,
    "sx_xdp_stage2": 1,
    "sx_xdp_stage3": 3,
    "sx_sk_stage0": 7,
    "sx_sk_stage1": 9,
}
#: Dispatchers: the (prog array, slot) their tail call jumps through.
DISPATCHERS = {
    **{f"sx_xdp_disp{i}": ("sx_jmp", i) for i in range(4)},
    **{f"sx_sk_disp{i}": ("sx_sjmp", i) for i in range(2)},
}
ATTACHABLE = ("tp/", "raw_tp/", "tp_btf/", "iter/")
RUNNABLE = ("xdp", "socket")
MAPS_OF_MAPS = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
FD_ARRAYS = (MapType.PROG_ARRAY, *MAPS_OF_MAPS)

#: Relative frequency of each operation.
WEIGHTS: Mapping[str, int] = {
    "load": 20,
    "unload": 12,
    "reload": 6,
    "attach": 12,
    "detach": 6,
    "clone": 5,
    "run": 8,
    "load_many": 5,
    "unload_many": 3,
    "load_all": 1,
    "unload_all": 1,
    "peek": 5,
    "poke": 4,
}
ATTACH_OPS = ("attach", "detach")
WHOLE = ("load_all", "unload_all")  # operations on every program (in a round with features: every free one)

#: Relative frequency of each feature operation, in rounds with features (beside the operations above).
FEATURE_WEIGHTS: Mapping[str, int] = {
    "apply": 6,
    "apply_alone": 2,
    "pause": 3,
    "resume": 3,
    "switch": 3,
    "set_constants": 1,
    "status": 2,
}
ALONE = ("apply_alone",)  # run after the step's other operations, with nothing else under way
FEATURE_STATES = ("enabled", "enabled", "paused", "disabled")
_RANK = {"disabled": 0, "paused": 1, "enabled": 2}

#: Hooks a round's feature map may declare, each with its alternatives: programs that implement it on
#: compatible kernel hooks (the BTF and the raw tracepoints of one event; a syscall's entry and its exit).
#: Few are perf tracepoints: detaching one costs the kernel tens of milliseconds (an RCU grace period).
HOOKS: Mapping[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        "syscalls": (("sx_btf_sys_ent", "sx_btf_sys_exit"), ("sx_raw_sys_ent", "sx_raw_sys_exit")),
        "switch": (("sx_btf_switch",), ("sx_raw_switch",)),
        "fork": (("sx_btf_fork",), ("sx_raw_fork",)),
        "pgid": (("sx_tp_getpgid",), ("sx_tpx_getpgid",)),  # perf tracepoints: one link per program there
        "task": (("sx_raw_newtask",),),
        "rename": (("sx_btf_rename",),),
    }
)
#: A requirement no kernel meets (a variant that needs it is skipped) and one this kernel meets.
REFUSED = Requirement("function", "sx_no_such_kernel_function")
GRANTED = Requirement("tracepoint", "syscalls/sys_enter_getpgid")
#: Attach targets that do not exist, per kind: a variant attaching there loads, then fails to attach.
MISSING_TARGET = {"tp": "syscalls/sys_enter_sx_missing", "raw_tp": "sx_missing_tracepoint"}
#: Values set_constants gives the fixture's sx_step.
STEPS = (1, 2, 3, 5)
#: How long status() may take while an apply holds the application's lock (it must not wait for it).
STATUS_TIMEOUT = 10.0

#: A run that keeps failing to open the object has nothing left to test.
MAX_FAILED_OPENS = 20


class InvariantError(AssertionError):
    """The runtime and the kernel disagree, or an operation failed in a way it must not."""


@dataclass(frozen=True, slots=True)
class Op:
    """One operation a worker performs; chosen from the seed alone."""

    kind: str
    programs: tuple[str, ...] = ()
    map: str = ""
    flag: bool = False  # load_many: atomic; clone: with a log buffer; attach: read the iterator; apply: not atomic
    config: tuple[tuple[str, str], ...] = ()  # apply: feature -> state; pause, resume: the features
    use: tuple[tuple[str, str], ...] = ()  # apply, switch: hook -> the variant to try first
    value: int = 0  # set_constants: sx_step

    def __str__(self) -> str:
        what = ",".join(self.programs) or self.map
        what += ",".join(f"{k}={v}" if v else k for k, v in self.config)
        what += "".join(f" use {h}={v}" for h, v in self.use)
        what += f"sx_step={self.value}" if self.kind == "set_constants" else ""
        return f"{self.kind}({what}{', flag' if self.flag else ''})"


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """How one round opens the object."""

    index: int
    policies: Mapping[str, str]
    disabled: frozenset[str]
    features: FeatureMap | None = None

    def describe(self) -> str:
        by_policy: dict[str, list[str]] = {}
        for name, policy in sorted(self.policies.items()):
            by_policy.setdefault(policy, []).append(name)
        parts = [f"{p}: {', '.join(ns)}" for p, ns in sorted(by_policy.items())]
        text = f"round {self.index}: disabled={sorted(self.disabled)}; " + "; ".join(parts)
        return text + (f"\n{describe_features(self.features)}" if self.features is not None else "")

    def free(self, programs: Iterable[str]) -> tuple[str, ...]:
        """The programs no feature declares: the other operations' own."""
        taken = {p for h in self.features.hooks.values() for p in h.programs} if self.features else set()
        return tuple(p for p in programs if p not in taken)


@dataclass(slots=True)
class Report:
    """What a run did and found."""

    seed: int
    threads: int
    operations: int = 0
    steps: int = 0
    rounds: int = 0
    checks: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Fixture:
    """The stress object's names, read from its spec (not from any runtime)."""

    path: Path
    programs: tuple[str, ...]
    sections: Mapping[str, str]
    maps: tuple[str, ...]
    map_types: Mapping[str, MapType]
    contents: Mapping[str, tuple[tuple[int, str], ...]]
    max_entries: Mapping[str, int]

    @classmethod
    def load(cls) -> Fixture:
        path = build(FIXTURE)
        spec = read(path)
        maps = spec.maps
        return cls(
            path=path,
            programs=tuple(spec.programs),
            sections={n: p.section for n, p in spec.programs.items()},
            maps=tuple(maps),
            map_types={n: MapType(m.type) for n, m in maps.items()},
            contents={n: m.contents for n, m in maps.items()},
            max_entries={n: m.max_entries for n, m in maps.items()},
        )

    def kind(self, program: str) -> str:
        return self.sections[program].split("/", 1)[0]

    def attachable(self) -> tuple[str, ...]:
        return tuple(p for p in self.programs if self.sections[p].startswith(ATTACHABLE))

    def runnable(self) -> tuple[str, ...]:
        return tuple(p for p in self.programs if self.sections[p] in RUNNABLE)

    def closure(self, names: Iterable[str]) -> set[str]:
        """The maps named and, for maps of maps, the inner maps they declare (recursively)."""
        out: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in out:
                out.add(name)
                if self.map_types[name] in MAPS_OF_MAPS:
                    todo.extend(inner for _, inner in self.contents[name])
        return out

    def pin_name(self, name: str) -> str:
        """libbpf's pin file name: the kernel name with '_' for '.' (bpffs refuses '.') for section maps."""
        return self.kernel_map_name(name).replace(".", "_") if name.startswith(".") else name

    def kernel_map_name(self, name: str) -> str:
        """libbpf's kernel name for a map: a section map gets the object name as a prefix, cut so that
        the section keeps at least 7 characters; a custom section (a second dot) gets none."""
        if name.startswith(".") and "." not in name[1:]:
            return (FIXTURE[: max(0, NAME_LEN - max(7, len(name)))] + name)[:NAME_LEN]
        return name[:NAME_LEN]


# --- choosing ---------------------------------------------------------------------------------


def choose_round(rng: random.Random, fixture: Fixture, index: int) -> RoundConfig:
    """Map policies (all one policy, or mixed per map), zero to two disabled programs, and features.

    The first round always has features, later ones mostly: a short run
    still switches some, and some rounds keep every program to the other
    operations.
    """
    mode = rng.choice(("on_demand", "on_demand", "mixed", "mixed", "eager", "pinned"))
    if mode == "mixed":
        choices = ("on_demand", "on_demand", "eager", "pinned")
        policies = {name: rng.choice(choices) for name in fixture.maps}
    else:
        policies = dict.fromkeys(fixture.maps, mode)
    disabled = set(rng.sample(fixture.programs, rng.choice((0, 0, 1, 2))))
    features = choose_features(rng, fixture) if index == 0 or rng.random() < 0.8 else None
    if features is not None and rng.random() < 0.5:  # a variant whose program cannot load
        disabled.add(rng.choice(sorted({p for h in features.hooks.values() for p in h.programs})))
    return RoundConfig(index, policies, frozenset(disabled), features)


def choose_features(rng: random.Random, fixture: Fixture) -> FeatureMap:
    """Two to five of :data:`HOOKS`, their alternatives in a random order with sometimes a broken one
    among them (or only broken ones), in two to four features that share some hooks, have best-effort
    ones and require each other."""
    names = sorted(rng.sample(sorted(HOOKS), rng.randint(2, 5)))
    hooks = []
    for name in names:
        alternatives = list(HOOKS[name])
        rng.shuffle(alternatives)
        variants = [Variant(p, requires=(GRANTED,) if rng.random() < 0.6 else ()) for p in alternatives]
        if rng.random() < 0.15:  # no variant works: the features that need it fail, unless best effort
            variants = [_broken(rng, fixture, programs) for programs in alternatives]
        elif rng.random() < 0.5:
            broken = _broken(rng, fixture, rng.choice(alternatives))
            variants.insert(rng.randint(0, len(variants)), broken)
        hooks.append(Hook(name, tuple(variants)))
    count = rng.randint(2, 4)
    required: list[list[str]] = [[] for _ in range(count)]
    best_effort: list[list[str]] = [[] for _ in range(count)]
    for name in names:  # every hook in one feature or two
        for owner in rng.sample(range(count), min(count, rng.choice((1, 1, 2)))):
            (best_effort if rng.random() < 0.25 else required)[owner].append(name)
    features = []
    for i in range(count):
        if not required[i] and not best_effort[i]:
            required[i].append(rng.choice(names))
        requires = [f"f{rng.randrange(i)}"] if i and rng.random() < 0.3 else []
        features.append(Feature(f"f{i}", hooks=required[i], best_effort=best_effort[i], requires=requires))
    return FeatureMap.of(features, hooks, source="stress")


def _broken(rng: random.Random, fixture: Fixture, programs: tuple[str, ...]) -> Variant:
    """A variant that never works: one needing what no kernel has, or attaching where nothing is."""
    base = "+".join(programs)
    if rng.random() < 0.5 and all(fixture.kind(p) in MISSING_TARGET for p in programs):
        attach = {p: {"tracepoint": MISSING_TARGET[fixture.kind(p)]} for p in programs}
        return Variant(programs, attach=attach, name=f"{base}!missing")
    return Variant(programs, requires=(REFUSED,), name=f"{base}!refused")


def works(variant: Variant, state: str, disabled: Iterable[str]) -> bool:
    """Whether ``variant`` can run in ``state`` (enabled or paused) in a round that disabled ``disabled``.

    Only :func:`_broken` variants need :data:`REFUSED` or name attach targets.
    """
    if REFUSED in variant.requires or set(variant.programs) & set(disabled):
        return False
    return not (state == "enabled" and variant.attach)


def describe_features(features: FeatureMap) -> str:
    lines = []
    for f in features.features.values():
        extra = f" best-effort {list(f.best_effort)}" if f.best_effort else ""
        extra += f" requires {list(f.requires)}" if f.requires else ""
        lines.append(f"  feature {f.name}: hooks {list(f.hooks)}{extra}")
    for h in features.hooks.values():
        lines.append(f"  hook {h.name}: " + " | ".join(f"{v.name}{list(map(str, v.requires))}" for v in h.variants))
    return "features:\n" + "\n".join(lines)


def choose_op(
    rng: random.Random,
    fixture: Fixture,
    kinds: Sequence[str],
    weights: Sequence[int],
    config: RoundConfig | None = None,
) -> Op:
    """One operation; with a round ``config`` that has features, the others act on the programs free of them."""
    kind = rng.choices(kinds, weights)[0]
    features = config.features if config is not None else None
    if kind in FEATURE_WEIGHTS:
        if features is None:
            raise ValueError(f"{kind} needs a round with features")
        return _choose_feature_op(rng, kind, features)
    free = set(config.free(fixture.programs)) if config is not None else set(fixture.programs)
    programs = [p for p in fixture.programs if p in free]
    if kind in ATTACH_OPS:
        return Op(kind, (rng.choice([p for p in fixture.attachable() if p in free]),), flag=rng.random() < 0.5)
    if kind == "run":
        return Op(kind, (rng.choice(fixture.runnable()),))
    if kind in ("load_many", "unload_many"):
        return Op(kind, tuple(rng.sample(programs, rng.randint(2, 8))), flag=rng.random() < 0.3)
    if kind == "peek":
        return Op(kind, map=rng.choice(fixture.maps))
    if kind == "poke" or kind in WHOLE:
        return Op(kind)
    return Op(kind, (rng.choice(programs),), flag=rng.random() < 0.3)


def _choose_feature_op(rng: random.Random, kind: str, features: FeatureMap) -> Op:
    names = sorted(features.features)
    if kind in ("apply", "apply_alone"):
        config = tuple((f, rng.choice(FEATURE_STATES)) for f in names if rng.random() < 0.8)
        use: tuple[tuple[str, str], ...] = ()
        if kind == "apply" and rng.random() < 0.2:
            hook = features.hooks[rng.choice(sorted(features.hooks))]
            use = ((hook.name, rng.choice(hook.variants).name),)
        return Op(kind, config=config, use=use, flag=kind == "apply" and rng.random() < 0.15)
    if kind in ("pause", "resume"):
        return Op(kind, config=tuple((f, "") for f in rng.sample(names, rng.choice((1, 1, 2)))))
    if kind == "switch":
        hook = features.hooks[rng.choice(sorted(features.hooks))]
        return Op(kind, use=((hook.name, rng.choice(hook.variants).name),))
    if kind == "set_constants":
        return Op(kind, value=rng.choice(STEPS))
    return Op(kind)


def _poke() -> None:
    """System calls the fixture's tracepoint programs count when attached."""
    os.getpgid(0)
    os.getppid()
    os.getuid()
    os.getgid()
    os.geteuid()
    os.getegid()
    os.getsid(0)
    os.getpriority(os.PRIO_PROCESS, 0)
    os.sched_yield()


# --- one round --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Snapshot:
    """What /proc and the kernel show at a quiescent point, built up by the checks."""

    fds: dict[int, str]
    held: dict[int, ks.HeldFd]
    accounted: set[int]
    exists: dict[str, bool] = field(default_factory=dict)  # map -> a kernel map sits at its number
    map_ids: dict[str, int] = field(default_factory=dict)
    loaded: dict[str, int] = field(default_factory=dict)  # program -> kernel id
    problems: list[str] = field(default_factory=list)


class Round:
    """One open collection, the operations on it and the checks of it."""

    def __init__(
        self, fixture: Fixture, config: RoundConfig, pin_root: str, seen: dict[ObjKind, set[int]] | None = None
    ) -> None:
        self.fixture = fixture
        self.config = config
        self.pin_root = pin_root
        self.baseline = ks.open_fds()
        self.reused = {n for n in _pinned(pin_root, fixture) if config.policies.get(n) == "pinned"}
        self.coll = dynbpf.open(
            fixture.path,
            constants={"target_tgid": os.getpid()},
            map_policies=dict(config.policies),
            pin_root=pin_root,
            disabled=sorted(config.disabled),
        )
        self.numbers = {name: self.coll.map_fd_number(name) for name in fixture.maps}
        self.btf_fds = {fd.raw for fd in [self.coll.prepared.btf_fd] if fd is not None}
        #: Kernel ids observed (of this round, or of the whole run when the caller passes its own).
        self.seen = seen if seen is not None else new_seen()
        self.free = config.free(fixture.programs)
        self.app: Application | None = None
        if config.features is not None:
            self.app = Application(self.coll, config.features, workers=2, check=self._check_requirement)
        self.step = 1  # the sx_step the last set_constants left
        self._step_lock = threading.Lock()
        self._local = threading.local()  # per worker: whether its apply still owes a status() probe
        self._notes_lock = threading.Lock()
        #: Outcomes of the status() probes made inside applies, for the report.
        self.notes: Counter[str] = Counter()

    # --- operations -----------------------------------------------------------------------------

    def execute(self, op: Op, contested: frozenset[str]) -> str:
        """Perform ``op``; return its outcome, or raise InvariantError for a failure it must not have.

        ``contested`` names programs another operation of the same step also
        touches: the raw fd of a test run may be closed under it.
        """
        loaded = op.kind in ("attach", "run") and self.coll.programs[op.programs[0]].loaded
        try:
            return self._execute(op, contested)
        except InvariantError:
            raise
        except StateError as e:
            if self._may_refuse(op, loaded, contested):
                return f"{op.kind}:refused"
            raise InvariantError(f"{op} raised StateError: {e}") from e
        except Exception as e:
            raise InvariantError(f"{op} raised {type(e).__name__}: {e}\n{traceback.format_exc()}") from e

    def _may_refuse(self, op: Op, loaded: bool, contested: frozenset[str]) -> bool:
        """Disabled programs refuse everything; unloaded ones attach and run nothing; absent maps cannot be read.

        ``loaded``: whether an attach or run's program was loaded just before
        (another operation of the step may unload it meanwhile).
        """
        if op.kind in ("load", "reload", "clone"):
            return op.programs[0] in self.config.disabled
        if op.kind in ("attach", "run"):
            return not loaded or op.programs[0] in contested
        if op.kind == "peek":
            return self.config.policies[op.map] == "on_demand"
        if op.kind == "set_constants":
            return self.config.policies[".rodata"] == "pinned"  # others read a pinned map's frozen values
        return False

    def _execute(self, op: Op, contested: frozenset[str]) -> str:
        coll = self.coll
        program = coll.programs[op.programs[0]] if op.programs else None
        match op.kind:
            case "load":
                assert program is not None
                return "load:new" if program.load() else "load:noop"
            case "unload":
                assert program is not None
                program.unload()
            case "reload":
                assert program is not None
                program.reload()
            case "detach":
                assert program is not None
                program.detach()
            case "attach":
                return self._attach(op, contested)
            case "clone":
                return self._clone(op)
            case "run":
                return self._run(op, contested)
            case "load_many":
                failures = coll.load(op.programs, workers=2, atomic=op.flag)
                wrong = {n: e for n, e in failures.items() if n not in self.config.disabled}
                wrong |= {n: e for n, e in failures.items() if not isinstance(e, StateError)}
                if wrong:
                    raise InvariantError(f"{op}: unexpected failures {wrong}")
            case "unload_many":
                coll.unload(op.programs)
            case "load_all":
                every = [p for p in self.free if p not in self.config.disabled] if self.app is not None else None
                failures = coll.load(every, workers=2)  # None: every program, the disabled left out
                if failures:
                    raise InvariantError(f"{op}: failures though disabled programs are left out: {failures}")
            case "unload_all":
                coll.unload(self.free if self.app is not None else None)
            case "peek":
                return self._peek(op)
            case "poke":
                _poke()
            case "apply" | "apply_alone" | "pause" | "resume" | "switch":
                return self._feature_op(op)
            case "set_constants":
                return self._set_constants(op)
            case "status":
                self._status(str(op))
            case _:
                raise AssertionError(f"unknown operation {op}")
        return op.kind

    def _attach(self, op: Op, contested: frozenset[str]) -> str:
        program = self.coll.programs[op.programs[0]]
        attached = bool(program.links)
        try:
            link = program.attach()
        except AttachError as e:
            # The kernel runs a program once per tracepoint: attaching it again there is refused.
            if "EEXIST" in str(e) and (attached or program.name in contested):
                return "attach:exists"
            raise
        if not (op.flag and self.fixture.kind(program.name) == "iter"):
            return "attach"
        try:
            data = link.read()
        except (StateError, SyscallError):
            if program.name in contested:
                return "attach:iter-detached"  # another worker detached or unloaded it first
            raise
        tids = {int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data) - len(data) % 4, 4)}
        if len(data) % 4 or os.getpid() not in tids:
            raise InvariantError(f"{op}: the iterator wrote {len(data)} bytes without this process's tid: {data!r}")
        return "attach:iter-read"

    def _clone(self, op: Op) -> str:
        program = self.coll.programs[op.programs[0]]
        log = bytearray(4096) if op.flag else None
        clone = program.clone(log_buffer=log) if log is not None else program.clone()
        try:
            name = ks.prog_name(clone.raw)
            if name != program.name[:NAME_LEN]:
                raise InvariantError(f"{op}: the clone's kernel name is {name!r}")
        finally:
            clone.close()
        return "clone:log" if log is not None else "clone"

    def _run(self, op: Op, contested: frozenset[str]) -> str:
        program = self.coll.programs[op.programs[0]]
        try:
            commands.prog_test_run(program.fd, data_in=PACKET)
        except SyscallError:
            if program.name in contested:
                return "run:raced"
            raise
        return "run"

    def _peek(self, op: Op) -> str:
        try:
            sum(1 for _ in self.coll.maps[op.map])
        except SyscallError:
            if self.config.policies[op.map] == "on_demand":
                return "peek:raced"  # freed by another worker between the lookup and the read
            raise
        return "peek"

    # --- feature operations ---------------------------------------------------------------------

    def _feature_op(self, op: Op) -> str:
        app = self.app
        assert app is not None
        assert self.config.features is not None
        call: Callable[[], object]
        wanted: dict[str, str] | None = None  # each feature's state, where the driver knows what was asked
        if op.kind in ("apply", "apply_alone"):
            wanted = dict.fromkeys(self.config.features.features, "disabled") | dict(op.config)
            call = partial(app.apply, dict(op.config), use=dict(op.use), atomic=not op.flag)
        elif op.kind == "switch":
            wanted = {f: s.value for f, s in app.config.items()}  # what runs now, with another variant first
            call = partial(app.apply, dict(wanted), use=dict(op.use))
        else:
            call = partial(app.pause if op.kind == "pause" else app.enable, *(f for f, _ in op.config))
        before = self._held() if op.kind in ALONE else None
        self._local.probe = True
        try:
            call()
        except FeatureMapError as e:
            # use= of a hook no enabled or paused feature needs is refused: a fine answer, nothing changed
            if op.use and "no enabled or paused feature needs hook" in str(e):
                return f"{op.kind}:not-needed"
            raise
        except ApplyError as e:
            self._check_failure(op, e, wanted)
            if before is not None:
                after = self._held()
                if after != before:
                    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
                    raise InvariantError(
                        f"{op}: a failed atomic apply changed what the process holds: {changed}"
                    ) from e
                return f"{op.kind}:rolled-back"
            return f"{op.kind}:failed"
        finally:
            self._local.probe = False
        return op.kind

    def _held(self) -> dict[str, Any]:
        """What an atomic apply that fails must leave as it was: kernel objects held, and the status."""
        assert self.app is not None
        status = self.app.status()
        for program in status["programs"].values():
            program.pop("run_cnt", None)
            program.pop("run_time_ns", None)
        perf = sum(1 for h in ks.held() if h.kind == "perf_event")
        return {
            "progs": ks.held_prog_ids(),
            "links": ks.held_link_ids(),
            "maps": ks.held_map_ids(),
            "perf events": perf,
            "status": status,
        }

    def _check_failure(self, op: Op, error: ApplyError, wanted: Mapping[str, str] | None) -> None:
        """An apply may fail only for hooks none of whose variants can work.

        Where the driver knows the configuration asked (apply, switch), the
        hook's state comes from it; else (pause, resume) a hook is failed
        rightly only if no variant could even be enabled.
        """
        fm = self.config.features
        assert fm is not None
        states = _hook_states(fm, wanted) if wanted is not None else {}
        for hook, decisions in error.failures.items():
            state = states.get(hook, "enabled")
            working = [v.name for v in fm.hooks[hook].variants if works(v, state, self.config.disabled)]
            if working:
                why = "; ".join(f"{d.variant}: {d.outcome}: {d.reason}" for d in decisions)
                raise InvariantError(f"{op}: hook {hook} ({state}) failed though {working} can work ({why})")

    def _set_constants(self, op: Op) -> str:
        assert self.app is not None
        with self._step_lock:  # the application serialises the calls; this, the driver's record of them
            reloaded = self.app.set_constants({"sx_step": op.value})
            if op.value == self.step and reloaded:
                raise InvariantError(f"{op}: reloaded {reloaded} though sx_step was already {op.value}")
            self.step = op.value
        return "set_constants" if reloaded else "set_constants:none"

    def _status(self, what: str) -> dict[str, Any]:
        """``app.status()`` from another thread, which must answer within :data:`STATUS_TIMEOUT` (and be JSON)."""
        assert self.app is not None
        app = self.app
        got: dict[str, Any] = {}

        def ask() -> None:
            try:
                got["status"] = json.loads(json.dumps(app.status()))
            except Exception as e:
                got["error"] = f"{type(e).__name__}: {e}"

        thread = threading.Thread(target=ask, name="stress-status", daemon=True)
        thread.start()
        thread.join(STATUS_TIMEOUT)
        if thread.is_alive():
            raise InvariantError(f"{what}: status() did not answer within {STATUS_TIMEOUT} s")
        if "error" in got:
            raise InvariantError(f"{what}: status() raised {got['error']}")
        return got["status"]

    def _check_requirement(self, req: Requirement) -> Support:
        """The kernel's answer; the first asked within an apply operation also asks ``status()`` meanwhile.

        The application calls this while its apply holds the lock: a
        ``status()`` that waited for that lock would never answer.
        """
        if getattr(self._local, "probe", False):
            self._local.probe = False
            assert self.app is not None
            if not self.app._apply_lock.locked():
                raise InvariantError(f"requirement {req} was checked outside an apply")
            self._status(f"status() during an apply (at requirement {req})")
            with self._notes_lock:
                self.notes["status:during-apply"] += 1
        return check_requirement(req)

    # --- invariants -----------------------------------------------------------------------------

    def check(self) -> list[str]:
        """Compare the runtime with /proc and the kernel; nothing may be running. Returns the problems."""
        fds = ks.open_fds()
        snap = _Snapshot(fds, {h.fd: h for h in ks.held(fds)}, set(self.btf_fds))
        self._check_map_numbers(snap)
        self._check_pins(snap)
        self._check_programs(snap)
        self._check_links(snap)
        self._check_needed_maps(snap)
        self._check_program_maps(snap)
        self._check_slots(snap)
        self._check_tail_calls(snap)
        self._check_fds(snap)
        if self.app is not None:
            self._check_features(snap)
        return snap.problems

    def _check_map_numbers(self, snap: _Snapshot) -> None:
        """Reserved numbers never move; behind each, the map itself or this map's placeholder."""
        coll = self.coll
        for name, number in self.numbers.items():
            if coll.map_fd_number(name) != number:
                snap.problems.append(f"map {name}: reserved fd {number} moved to {coll.map_fd_number(name)}")
            snap.accounted.add(number)
            h = snap.held.get(number)
            map_id = h.obj_id if h is not None and h.kind == "map" else None
            snap.exists[name] = map_id is not None
            if map_id is not None:
                snap.map_ids[name] = map_id
                kname = ks.map_name(number)
                if kname != self.fixture.kernel_map_name(name):
                    snap.problems.append(f"map {name}: fd {number} holds kernel map {kname!r} (id {map_id})")
            elif h is None or h.placeholder_of != name:
                target = h.target if h is not None else "closed"
                snap.problems.append(f"map {name}: reserved fd {number} is {target}, neither map nor its placeholder")
            if coll.map_exists(name) != snap.exists[name]:
                snap.problems.append(f"map {name}: map_exists() is {not snap.exists[name]}, fd {number} disagrees")
        self.seen[ObjKind.MAP].update(snap.map_ids.values())

    def _check_pins(self, snap: _Snapshot) -> None:
        """A pinned map is the one pinned under libbpf's name in the pin root."""
        for name, policy in self.config.policies.items():
            if policy != "pinned" or not snap.exists[name]:
                continue
            path = os.path.join(self.pin_root, self.fixture.pin_name(name))
            if self.coll.map_pin_path(name) != path:
                snap.problems.append(f"map {name}: map_pin_path() is {self.coll.map_pin_path(name)}, not {path}")
            try:
                with commands.obj_get(path) as pinned:
                    pinned_id = int(commands.map_info(pinned.raw).id)
            except SyscallError as e:
                snap.problems.append(f"map {name}: no pin at {path} ({e})")
                continue
            if pinned_id != snap.map_ids[name]:
                snap.problems.append(f"map {name}: {path} pins map {pinned_id}, fd holds {snap.map_ids[name]}")

    def _check_programs(self, snap: _Snapshot) -> None:
        """States match fds; each loaded program's fd holds the kernel program its id names; no other."""
        for name, program in self.coll.programs.items():
            state, links = program.state.value, program.links
            if name in self.config.disabled:
                if state != "disabled" or program.loaded:
                    snap.problems.append(f"program {name}: disabled at open but {state}")
                continue
            if not program.loaded:
                if state != "prepared" or links:
                    snap.problems.append(f"program {name}: not loaded but {state} with {len(links)} links")
                continue
            want = "attached" if links else "loaded"
            if state != want:
                snap.problems.append(f"program {name}: {state} with {len(links)} links (want {want})")
            fd = program.fd
            h = snap.held.get(fd)
            if h is None or h.kind != "prog" or h.obj_id is None:
                snap.problems.append(f"program {name}: its fd {fd} is {h.target if h else 'closed'}")
                continue
            if h.obj_id != program.id:
                snap.problems.append(f"program {name}: fd {fd} holds prog {h.obj_id}, Program.id is {program.id}")
            if ks.prog_name(fd) != name[:NAME_LEN]:
                snap.problems.append(f"program {name}: fd {fd} holds kernel program {ks.prog_name(fd)!r}")
            snap.loaded[name] = h.obj_id
            snap.accounted.add(fd)
        held = Counter(h.obj_id for h in snap.held.values() if h.kind == "prog" and h.obj_id is not None)
        extra = {i: n for i, n in held.items() if i not in snap.loaded.values() or n > 1}
        if extra:
            snap.problems.append(f"prog ids held (id: fds) beyond one fd per loaded program: {extra}")
        self.seen[ObjKind.PROG].update(held)

    def _check_links(self, snap: _Snapshot) -> None:
        """The runtime's links are exactly the link fds held, each running its program."""
        link_ids: dict[int, str] = {}
        for name, program in self.coll.programs.items():
            for link in program.links:
                if link.closed:
                    snap.problems.append(f"program {name}: lists a detached link {link.description}")
                    continue
                h = snap.held.get(link.fd)
                if h is not None and h.kind == "perf_event":
                    snap.accounted.add(link.fd)  # PERF_EVENT_IOC_SET_BPF: the perf event is the attachment
                    continue
                if h is None or h.kind != "link" or h.obj_id is None:
                    snap.problems.append(f"program {name}: link fd {link.fd} is {h.target if h else 'closed'}")
                    continue
                snap.accounted.add(link.fd)
                link_ids[h.obj_id] = name
                runs, own = int(h.info.get("prog_id", "0")), snap.loaded.get(name)
                if runs != own:
                    snap.problems.append(f"program {name}: link {h.obj_id} runs prog {runs}, not its own {own}")
        held = Counter(h.obj_id for h in snap.held.values() if h.kind == "link" and h.obj_id is not None)
        extra = {i: n for i, n in held.items() if i not in link_ids or n > 1}
        if extra:
            snap.problems.append(f"link ids held (id: fds) that no program's links account for: {extra}")
        self.seen[ObjKind.LINK].update(held)

    def _check_needed_maps(self, snap: _Snapshot) -> None:
        """On-demand maps exist exactly while needed: by a loaded program, or inside a map that always exists."""
        fx = self.fixture
        used = [m for name in snap.loaded for m in self.coll.programs[name].maps]
        always = [n for n in fx.maps if self.config.policies[n] != "on_demand"]
        needed = fx.closure(used + always)
        for name in fx.maps:
            if snap.exists[name] != (name in needed):
                why = "needed but missing" if name in needed else "exists though nothing needs it"
                snap.problems.append(f"map {name} ({self.config.policies[name]}): {why}")

    def _check_program_maps(self, snap: _Snapshot) -> None:
        """Each loaded program uses the maps at the reserved numbers now, not ones that were there before.

        ``set_constants`` puts a new ``.rodata`` at its number and reloads
        the programs that read it: none may keep the old one (and its old
        values), even bound beside the new. Programs that only have
        ``.rodata`` bound (as libbpf binds it to every program) are not
        reloaded and keep the old one bound.
        """
        current = set(snap.map_ids.values())
        for name, prog_id in snap.loaded.items():
            program = self.coll.programs[name]
            used = set(commands.prog_map_ids(program.fd))
            old = sorted(m for m in program.prepared.maps if m in snap.map_ids and snap.map_ids[m] not in used)
            if old:
                snap.problems.append(f"program {name} (id {prog_id}) does not use the maps {old} at their numbers now")
            if ".rodata" in program.prepared.maps and used - current:
                stale = sorted(used - current)
                snap.problems.append(f"program {name} (id {prog_id}) reads .rodata and uses maps {stale} gone since")
        if snap.exists[".rodata"]:
            var = self.coll.spec.variables["sx_step"]
            value = ctypes.create_string_buffer(self.coll.spec.maps[".rodata"].value_size)
            commands.map_lookup_elem(self.numbers[".rodata"], bytes(4), value)  # not a view: no mapping to keep
            step = int.from_bytes(value.raw[var.offset : var.offset + var.size], "little")
            if step != self.step:
                snap.problems.append(f".rodata holds sx_step {step}, set_constants left {self.step}")

    def _check_features(self, snap: _Snapshot) -> None:
        """The application's status says what runs, and that is what the configuration asks.

        Each hook's wanted state comes from the configured feature states,
        widened to the features they require (the driver's own reckoning,
        not the application's).
        """
        app, fm = self.app, self.config.features
        assert app is not None
        assert fm is not None
        try:
            status = self._status("status() at a check")
        except InvariantError as e:
            snap.problems.append(str(e))
            return
        configured = {name: state.value for name, state in app.config.items()}
        effective = _effective(fm, configured)
        for name, state in effective.items():
            got = status["features"][name]
            if (got["state"], got["configured"]) != (state, configured[name]):
                snap.problems.append(f"feature {name}: status {got['state']} ({got['configured']}), want {state}")
        wanted = _hook_states(fm, configured)
        for name, hook in fm.hooks.items():
            want = wanted.get(name, "disabled")
            got = status["hooks"][name]
            loaded = [p for p in hook.programs if self.coll.programs[p].loaded]
            if want == "disabled" or got["state"] == "failed":
                working = [v.name for v in hook.variants if works(v, want, self.config.disabled)]
                if want == "disabled" and got["state"] != "off":
                    snap.problems.append(f"hook {name}: no enabled or paused feature needs it, yet {got['state']}")
                elif want != "disabled" and working:
                    snap.problems.append(f"hook {name} ({want}): failed though {working} can work")
                if loaded:
                    snap.problems.append(f"hook {name} ({got['state']}, wanted {want}): {loaded} loaded")
                continue
            state = "enabled" if want == "enabled" else "paused"
            variant = next((v for v in hook.variants if v.name == got["variant"]), None)
            if got["state"] != state or variant is None:
                snap.problems.append(f"hook {name}: {got['state']} with variant {got['variant']}, want {state}")
                continue
            if not works(variant, want, self.config.disabled):
                snap.problems.append(f"hook {name} ({want}): runs {variant.name}, which cannot work")
            for p in hook.programs:
                program = self.coll.programs[p]
                links, reported = len(program.links), status["programs"].get(p, {}).get("state")
                if p not in variant.programs:
                    if program.loaded:
                        snap.problems.append(f"hook {name} runs {variant.name}, yet {p} of another variant is loaded")
                elif not program.loaded or links != (want == "enabled"):
                    snap.problems.append(f"hook {name} ({want}): its program {p} {program.state.value}, {links} links")
                elif reported != program.state.value:
                    snap.problems.append(f"hook {name}: status says {p} is {reported}, it is {program.state.value}")

    def take_notes(self) -> Counter[str]:
        """The status() probes made inside applies since the last call."""
        with self._notes_lock:
            notes, self.notes = self.notes, Counter()
        return notes

    def _check_slots(self, snap: _Snapshot) -> None:
        """Prog arrays hold the loaded programs declared in them; maps of maps their declared inner maps."""
        fx = self.fixture
        for name in fx.maps:
            kind = fx.map_types[name]
            if kind not in FD_ARRAYS or not snap.exists[name]:
                continue
            if kind in MAPS_OF_MAPS and name in self.reused:
                continue  # a reused pinned map of maps keeps the maps it held, as with libbpf
            declared = fx.contents[name]
            if kind == MapType.PROG_ARRAY:
                want = {i: snap.loaded[p] for i, p in declared if p in snap.loaded}
            else:
                want = {i: snap.map_ids[m] for i, m in declared if m in snap.map_ids}
            got = ks.fd_array_ids(self.numbers[name], fx.max_entries[name])
            if got != want:
                snap.problems.append(f"map {name}: slots hold ids {got}, what is declared there is {want}")

    def _check_tail_calls(self, snap: _Snapshot) -> None:
        """A loaded dispatcher's verdict is its stage's when that stage is loaded, else the fall-through."""
        fx = self.fixture
        for name, (array, slot) in DISPATCHERS.items():
            if name not in snap.loaded:
                continue
            stage = dict(fx.contents[array]).get(slot, "")
            want = STAGE_VERDICT[stage] if stage in snap.loaded else FALLTHROUGH[fx.sections[name]]
            got = commands.prog_test_run(self.coll.programs[name].fd, data_in=PACKET).retval
            if got != want:
                snap.problems.append(f"{name}: verdict {got}, want {want} ({stage} loaded: {stage in snap.loaded})")

    def _check_fds(self, snap: _Snapshot) -> None:
        """Every fd opened since the round began is a reserved number, the BTF, a program or a link."""
        leaked = {fd: t for fd, t in ks.new_fds(self.baseline, snap.fds).items() if fd not in snap.accounted}
        if leaked:
            snap.problems.append(f"fds open that nothing accounts for: {leaked}")

    def close(self) -> list[str]:
        """Close the application (every feature off) and the collection; return what of them remains.

        Pins and what they hold aside.
        """
        problems: list[str] = []
        if self.app is not None:
            self.app.close()
            still = [n for h in self.app.features.hooks.values() for n in h.programs if self.coll.programs[n].loaded]
            if still:
                problems.append(f"after the application's close, {still} still loaded")
        self.coll.close()
        leaked = ks.new_fds(self.baseline)
        if leaked:
            problems.append(f"after close, fds still open: {leaked}")
        kept: set[int] = set()
        for name, (map_id, slots) in _pinned(self.pin_root, self.fixture).items():
            kept.add(map_id)
            if self.fixture.map_types.get(name) == MapType.PROG_ARRAY and slots:
                problems.append(f"after close, pinned prog array {name} still holds programs {slots}")
            if self.fixture.map_types.get(name) in MAPS_OF_MAPS:
                kept.update(slots.values())
        for kind, seen in self.seen.items():
            ids = seen - kept if kind is ObjKind.MAP else seen
            if not ks.eventually(lambda: not ks.alive(kind, ids)):  # noqa: B023 - called right here
                left = sorted(ks.alive(kind, ids))
                problems.append(f"after close, {kind.name.lower()} ids still alive in the kernel: {left}")
        return problems


def _effective(features: FeatureMap, configured: Mapping[str, str]) -> dict[str, str]:
    """Each feature's state once the features it requires are switched on with it."""
    out = dict.fromkeys(features.features, "disabled") | dict(configured)
    for name, state in configured.items():
        for needed in features.closure(name):
            if _RANK[state] > _RANK[out[needed]]:
                out[needed] = state
    return out


def _hook_states(features: FeatureMap, configured: Mapping[str, str]) -> dict[str, str]:
    """Each hook an enabled or paused feature needs: the strongest state of the features that list it."""
    hooks: dict[str, str] = {}
    for name, state in _effective(features, configured).items():
        if state == "disabled":
            continue
        for hook in features.features[name].all_hooks:
            if _RANK[state] > _RANK[hooks.get(hook, "disabled")]:
                hooks[hook] = state
    return hooks


def _pinned(pin_root: str, fixture: Fixture) -> dict[str, tuple[int, dict[int, int]]]:
    """Maps pinned under ``pin_root``: name -> (id, what its slots hold, for prog arrays and maps of maps).

    Pins are named as libbpf names them (:meth:`Fixture.pin_name`).
    """
    out: dict[str, tuple[int, dict[int, int]]] = {}
    if not os.path.isdir(pin_root):
        return out
    by_pin = {fixture.pin_name(n): n for n in fixture.maps}
    for pin in sorted(os.listdir(pin_root)):
        name = by_pin.get(pin, pin)
        with commands.obj_get(os.path.join(pin_root, pin)) as fd:
            info = commands.map_info(fd.raw)
            slots: dict[int, int] = {}
            if fixture.map_types.get(name) in FD_ARRAYS:
                slots = ks.fd_array_ids(fd.raw, int(info.max_entries))
            out[name] = (int(info.id), slots)
    return out


# --- a run ------------------------------------------------------------------------------------


def new_seen() -> dict[ObjKind, set[int]]:
    return {ObjKind.PROG: set(), ObjKind.MAP: set(), ObjKind.LINK: set()}


def new_pin_root(seed: int) -> str:
    """A private directory on bpffs for this run's pinned maps."""
    return ensure_pin_root(os.path.join(fs.DEFAULT_BPFFS, f"dynbpf-stress-{os.getpid()}-{seed}"))


def ensure_pin_root(path: str) -> str:
    """``path`` as a directory on bpffs, mounting bpffs at its parent if somebody unmounted it."""
    fs.ensure_bpffs(os.path.dirname(path), mount_if_missing=True)
    os.makedirs(path, exist_ok=True)
    return path


def remove_pins(pin_root: str) -> None:
    if os.path.isdir(pin_root):
        shutil.rmtree(pin_root)  # unlinking a pin drops the kernel's reference to the map


class Stress:
    """A seeded run: rounds of steps of ``threads`` concurrent operations, checked after each step and round."""

    def __init__(
        self,
        *,
        seed: int,
        threads: int = 4,
        attach: bool = True,
        features: bool = True,
        stop_on_violation: bool = True,
        progress: Callable[[Report], None] | None = None,
    ) -> None:
        self.seed = seed
        self.features = features
        self.threads = threads
        self.stop_on_violation = stop_on_violation
        self.progress = progress
        self.fixture = Fixture.load()
        self.kinds = [k for k in WEIGHTS if attach or k not in ATTACH_OPS]
        self.weights = [WEIGHTS[k] for k in self.kinds]
        self.feature_kinds = [*self.kinds, *FEATURE_WEIGHTS]
        self.feature_weights = [*self.weights, *FEATURE_WEIGHTS.values()]
        self.rng = random.Random(seed)
        self.report = Report(seed=seed, threads=threads)
        self.history: deque[str] = deque(maxlen=8)
        self.seen = new_seen()
        self.failed_opens = 0

    def run(self, operations: int) -> Report:
        """Run about ``operations`` operations (whole steps); raise or collect violations as configured."""
        report = self.report
        pin_root = new_pin_root(self.seed)
        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="stress") as pool:
                while report.operations < operations and self.failed_opens < MAX_FAILED_OPENS:
                    config = choose_round(self.rng, self.fixture, report.rounds)
                    if not self.features:
                        config = replace(config, features=None)
                    report.rounds += 1
                    self._round(config, pin_root, pool, operations)
            remove_pins(pin_root)
            left = _leftovers(self.seen)
            if left:
                self._violation(None, "after the run, with the pins removed", left)
        finally:
            report.seconds = time.perf_counter() - started
            remove_pins(pin_root)
        return report

    def _round(self, config: RoundConfig, pin_root: str, pool: ThreadPoolExecutor, operations: int) -> None:
        report = self.report
        self.history.clear()
        try:
            ensure_pin_root(pin_root)
            rnd = Round(self.fixture, config, pin_root, self.seen)
        except Exception as e:
            self.failed_opens += 1
            self._violation(config, "at open", [f"open raised {type(e).__name__}: {e}"])
            return
        where, problems = "right after open", []
        try:
            problems = rnd.check()
            report.checks += 1
            end = min(operations, report.operations + self.rng.randint(300, 900))
            step = 0
            while not problems and report.operations < end:
                where = f"after step {step} of the round"
                problems = self._step(rnd, pool, step)
                step += 1
        finally:
            closing = _safely(rnd.close)
        if problems or closing:
            self._violation(config, where if problems else "at close", problems + closing)

    def _step(self, rnd: Round, pool: ThreadPoolExecutor, step: int) -> list[str]:
        report = self.report
        kinds, weights = (self.feature_kinds, self.feature_weights) if rnd.app else (self.kinds, self.weights)
        ops = [choose_op(self.rng, self.fixture, kinds, weights, rnd.config) for _ in range(self.threads)]
        touched = Counter(p for op in ops for p in set(self.fixture.programs if op.kind in WHOLE else op.programs))
        contested = frozenset(p for p, n in touched.items() if n > 1)
        if any(op.kind == "set_constants" for op in ops):
            contested = frozenset(self.fixture.programs)  # it reloads every loaded program that reads .rodata
        self.history.append(f"step {step}: " + " | ".join(map(str, ops)))
        together = [op for op in ops if op.kind not in ALONE]
        results = list(pool.map(_guarded, [rnd] * len(together), together, [contested] * len(together)))
        results += [_guarded(rnd, op, contested) for op in ops if op.kind in ALONE]  # nothing else under way
        report.operations += len(ops)
        report.steps += 1
        report.outcomes.update(r for r in results if not r.startswith("!"))
        report.outcomes.update(rnd.take_notes())
        problems = [r[1:] for r in results if r.startswith("!")] + rnd.check()
        report.checks += 1
        if self.progress is not None and report.steps % 250 == 0:
            self.progress(report)
        return problems

    def _violation(self, config: RoundConfig | None, where: str, problems: list[str]) -> None:
        lines = [
            f"stress violation {where}: seed={self.seed} threads={self.threads} "
            "(the seed replays the same operations; with threads=1 the outcomes too)"
        ]
        if config is not None:
            lines.append(config.describe())
            lines.append("last steps:")
            lines += [f"  {h}" for h in self.history]
        lines += [f"- {p}" for p in problems]
        text = "\n".join(lines)
        self.report.violations.append(text)
        if self.stop_on_violation:
            raise InvariantError(text)


def _guarded(rnd: Round, op: Op, contested: frozenset[str]) -> str:
    try:
        return rnd.execute(op, contested)
    except InvariantError as e:
        return f"!{e}"


def _safely(fn: Callable[[], list[str]]) -> list[str]:
    try:
        return fn()
    except Exception as e:
        return [f"raised {type(e).__name__}: {e}\n{traceback.format_exc()}"]


def _leftovers(seen: Mapping[ObjKind, set[int]]) -> list[str]:
    """Which kernel objects the run was seen holding are still alive (by id: GET_NEXT_ID only).

    Not by name: a name scan opens every map by id, and opening a prog
    array whose last user reference is going away makes the kernel (6.18)
    leak it for good (see tests/kernel_state.py) — another process's, or a
    concurrent run's. Objects never seen at a check lived within one step;
    they could only outlive it through an fd (the fd checks) or a prog
    array slot (the slot checks).
    """
    problems = []
    for kind, ids in seen.items():
        if not ks.eventually(lambda: not ks.alive(kind, ids)):  # noqa: B023 - called right here
            problems.append(f"{kind.name.lower()} ids seen during the run still alive: {sorted(ks.alive(kind, ids))}")
    return problems


def run(
    *,
    seed: int,
    operations: int,
    threads: int = 4,
    attach: bool = True,
    features: bool = True,
    stop_on_violation: bool = True,
) -> Report:
    stress = Stress(seed=seed, threads=threads, attach=attach, features=features, stop_on_violation=stop_on_violation)
    return stress.run(operations)
