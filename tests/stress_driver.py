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

The operations depend only on the seed (never on outcomes), so a seed
replays the same sequence; with one thread the outcomes replay too.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dynbpf
from dynbpf._elf.reader import read
from dynbpf._sys import commands, fs
from dynbpf._sys.commands import ObjKind
from dynbpf._sys.constants import MapType
from dynbpf.errors import AttachError, StateError, SyscallError
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
WHOLE = ("load_all", "unload_all")  # operations on every program

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
    flag: bool = False  # load_many: atomic; clone: with a log buffer; attach: read the iterator

    def __str__(self) -> str:
        what = ",".join(self.programs) or self.map
        return f"{self.kind}({what}{', flag' if self.flag else ''})"


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """How one round opens the object."""

    index: int
    policies: Mapping[str, str]
    disabled: frozenset[str]

    def describe(self) -> str:
        by_policy: dict[str, list[str]] = {}
        for name, policy in sorted(self.policies.items()):
            by_policy.setdefault(policy, []).append(name)
        parts = [f"{p}: {', '.join(ns)}" for p, ns in sorted(by_policy.items())]
        return f"round {self.index}: disabled={sorted(self.disabled)}; " + "; ".join(parts)


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
    """Map policies (all one policy, or mixed per map) and zero to two disabled programs."""
    mode = rng.choice(("on_demand", "on_demand", "mixed", "mixed", "eager", "pinned"))
    if mode == "mixed":
        choices = ("on_demand", "on_demand", "eager", "pinned")
        policies = {name: rng.choice(choices) for name in fixture.maps}
    else:
        policies = dict.fromkeys(fixture.maps, mode)
    disabled = frozenset(rng.sample(fixture.programs, rng.choice((0, 0, 1, 2))))
    return RoundConfig(index, policies, disabled)


def choose_op(rng: random.Random, fixture: Fixture, kinds: Sequence[str], weights: Sequence[int]) -> Op:
    kind = rng.choices(kinds, weights)[0]
    if kind in ATTACH_OPS:
        return Op(kind, (rng.choice(fixture.attachable()),), flag=rng.random() < 0.5)
    if kind == "run":
        return Op(kind, (rng.choice(fixture.runnable()),))
    if kind in ("load_many", "unload_many"):
        return Op(kind, tuple(rng.sample(fixture.programs, rng.randint(2, 8))), flag=rng.random() < 0.3)
    if kind == "peek":
        return Op(kind, map=rng.choice(fixture.maps))
    if kind == "poke" or kind in WHOLE:
        return Op(kind)
    return Op(kind, (rng.choice(fixture.programs),), flag=rng.random() < 0.3)


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
                failures = coll.load(workers=2)
                if failures:
                    raise InvariantError(f"{op}: failures though disabled programs are left out: {failures}")
            case "unload_all":
                coll.unload()
            case "peek":
                return self._peek(op)
            case "poke":
                _poke()
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
        self._check_slots(snap)
        self._check_tail_calls(snap)
        self._check_fds(snap)
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
        """Close the collection; return what of it remains (pins and what they hold aside)."""
        problems: list[str] = []
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
        stop_on_violation: bool = True,
        progress: Callable[[Report], None] | None = None,
    ) -> None:
        self.seed = seed
        self.threads = threads
        self.stop_on_violation = stop_on_violation
        self.progress = progress
        self.fixture = Fixture.load()
        self.kinds = [k for k in WEIGHTS if attach or k not in ATTACH_OPS]
        self.weights = [WEIGHTS[k] for k in self.kinds]
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
        ops = [choose_op(self.rng, self.fixture, self.kinds, self.weights) for _ in range(self.threads)]
        touched = Counter(p for op in ops for p in set(self.fixture.programs if op.kind in WHOLE else op.programs))
        contested = frozenset(p for p, n in touched.items() if n > 1)
        self.history.append(f"step {step}: " + " | ".join(map(str, ops)))
        results = list(pool.map(_guarded, [rnd] * len(ops), ops, [contested] * len(ops)))
        report.operations += len(ops)
        report.steps += 1
        report.outcomes.update(r for r in results if not r.startswith("!"))
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


def run(*, seed: int, operations: int, threads: int = 4, attach: bool = True, stop_on_violation: bool = True) -> Report:
    return Stress(seed=seed, threads=threads, attach=attach, stop_on_violation=stop_on_violation).run(operations)
