"""A running application: which features are on, which variant implements each hook, and why.

``Application.apply(config)`` moves the collection from what runs now to
what ``config`` asks, in three steps:

1. **Plan.** Each feature's state (enabled / paused / disabled), widened
   to the features it requires, gives each hook a wanted state: *enabled*
   (loaded and attached), *paused* (loaded, detached) or *off*. A hook two
   features share takes the stronger of their states.
2. **Make.** Hooks that must come up (or be chosen again) try their
   variants in order: a variant whose requirements the kernel refuses is
   skipped; the others are loaded, in parallel across hooks, with the
   collection's scheduler; a verifier rejection or (for enabled hooks) an
   attach failure unloads that variant and moves the hook on to its next
   one. Nothing that runs now is touched in this step.
3. **Break, or roll back.** If every required hook found a variant, what
   is no longer wanted is detached and unloaded (after the new links
   exist: make before break). Otherwise everything step 2 made is undone
   and :class:`ApplyError` names each hook and why each variant failed; the
   kernel holds the same programs, links and maps as before the call.

Every choice is recorded with its evidence (:meth:`Application.explain`);
a hook's choice sticks across later applies unless re-selection is asked.
Applies are serialised; :meth:`Application.status` reads the last committed
state and never waits for an apply under way.
"""

from __future__ import annotations

import copy
import enum
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dynbpf._features.model import FeatureMap, Hook, Requirement, Variant
from dynbpf._sys.closing import Closing
from dynbpf.errors import ApplyError, DynbpfError, FeatureMapError, StateError, VerifierError

if TYPE_CHECKING:
    from dynbpf._attach.link import Link
    from dynbpf._probes.result import Support
    from dynbpf._runtime.collection import Collection
    from dynbpf._sys.fd import Fd


class FeatureState(enum.StrEnum):
    """What the application's configuration says of a feature."""

    ENABLED = "enabled"  # loaded and attached
    PAUSED = "paused"  # loaded, not attached: resuming costs an attach, not a verification
    DISABLED = "disabled"  # not loaded

    @classmethod
    def of(cls, value: FeatureState | str, *, where: str) -> FeatureState:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(f"{where}: {value!r} is not a feature state ({allowed})") from None


_RANK = {FeatureState.DISABLED: 0, FeatureState.PAUSED: 1, FeatureState.ENABLED: 2}


@dataclass(frozen=True, slots=True)
class Decision:
    """One step of choosing a hook's variant, with its evidence.

    ``outcome``: ``skipped`` (a requirement refused), ``rejected`` (the
    verifier refused a program), ``attach-failed``, ``chosen``, ``kept``
    (the choice of an earlier apply still stands) or ``adopted`` (the
    variant an earlier process ran, taken over from its pins).
    """

    hook: str
    variant: str
    outcome: str
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "variant": self.variant,
            "outcome": self.outcome,
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }

    def __str__(self) -> str:
        return f"{self.hook}: {self.variant} {self.outcome}: {self.reason}"


@dataclass(slots=True)
class _HookRun:
    """What runs for one hook: its variant, loaded. Its links are its programs' (:meth:`Application._links`):
    a reload re-makes a link, so a copy kept here would go stale."""

    variant: Variant


Checker = Callable[[Requirement], "Support"]


class Application(Closing):
    """A collection's programs switched by feature (docs/features.md).

    ``features`` is a :class:`FeatureMap` (default: the one the object
    declares in ``dynbpf:`` decl tags); its programs must be the
    collection's and its requirements known ones. ``check`` answers requirements (default: the kernel's
    probes, :func:`dynbpf._features.requirements.check`); ``workers`` is
    handed to :meth:`Collection.load`.
    """

    def __init__(
        self,
        collection: Collection,
        features: FeatureMap | None = None,
        *,
        workers: int | None = None,
        check: Checker | None = None,
    ) -> None:
        if features is None:
            features = FeatureMap.from_object(collection.spec)
            if features is None:
                raise FeatureMapError(
                    f"object {collection.spec.name!r} declares no features (no 'dynbpf:' BTF decl tags on its "
                    "programs); pass a FeatureMap (FeatureMap.from_toml reads one from a TOML file)"
                )
        if not isinstance(features, FeatureMap):
            raise TypeError(f"features must be a dynbpf.FeatureMap, not {type(features).__name__}")
        features.check(collection.programs)
        from dynbpf._features.requirements import validate

        for hook in features.hooks.values():
            for variant in hook.variants:
                for req in variant.requires:
                    validate(req, where=variant.where or hook.where)
        if collection._feature_owner is not None:
            raise StateError(
                f"object {collection.spec.name!r} is run by another Application already: one application owns "
                "its programs (close() the other first)"
            )
        collection._feature_owner = self
        collection._feature_state = self._pinned_state
        self.collection = collection
        self.features = features
        self._workers = workers
        self._check = check
        self._apply_lock = threading.Lock()
        self._config: dict[str, FeatureState] = dict.fromkeys(features.features, FeatureState.DISABLED)
        self._runs: dict[str, _HookRun] = {}  # hooks with a variant loaded
        self._chosen: dict[str, str] = {}  # hook -> the variant name that won last (sticky)
        self._decisions: dict[str, tuple[Decision, ...]] = {}
        self._failed: dict[str, tuple[Decision, ...]] = {}  # best-effort hooks left without a variant
        self._stats: Fd | None = None
        self._by_hand: set[str] = set()  # programs of hooks the caller loaded before an apply: it never unloads them
        self._strays: set[str] = set()  # adopted programs of no complete variant: unloaded at the next apply
        self._snapshot: dict[str, Any] = self._make_snapshot()
        adoption = collection.adoption
        if adoption is not None:
            self._restore(adoption.root, adoption.application or {}, adoption.programs, adoption.replaced)

    # --- configuring ---------------------------------------------------------------

    @property
    def config(self) -> Mapping[str, FeatureState]:
        """Each feature's configured state, as the last apply that took effect left it (``atomic=False`` too)."""
        return MappingProxyType(dict(self._snapshot["config"]))

    def apply(
        self,
        config: Mapping[str, FeatureState | str],
        *,
        reselect: bool | Iterable[str] = False,
        use: Mapping[str, str] | None = None,
        atomic: bool = True,
    ) -> dict[str, Any]:
        """Make the features run as ``config`` says; returns :meth:`explain` for what this call decided.

        ``config`` gives each feature's state; features it leaves out are
        disabled. ``reselect`` chooses variants again (for all hooks, or the
        hooks named) instead of keeping earlier choices; ``use`` maps hooks
        to the variant to try first (then the others, in order). A new
        choice replaces the old variant make-before-break. ``atomic=False`` keeps
        what worked when a required hook has no working variant (the error
        is still raised).
        """
        wanted = self._parse(config)
        if isinstance(reselect, str):
            reselect = (reselect,)
        again = set(self.features.hooks) if reselect is True else set(reselect or ())
        first = dict(use or {})
        unknown = (again | set(first)) - set(self.features.hooks)
        if unknown:
            raise FeatureMapError(f"reselect/use name unknown hooks {sorted(unknown)}")
        for hook, variant in first.items():
            names = [v.name for v in self.features.hooks[hook].variants]
            if variant not in names:
                raise FeatureMapError(f"use: hook {hook!r} has no variant {variant!r} (variants: {', '.join(names)})")
        again |= set(first)
        with self._apply_lock:
            self.collection._require_open()
            return self._apply(wanted, again, atomic, first)

    def enable(self, *features: str) -> dict[str, Any]:
        """Enable ``features`` and keep the others as they are."""
        return self._change(features, FeatureState.ENABLED)

    def pause(self, *features: str) -> dict[str, Any]:
        """Detach ``features``' programs but keep them loaded (resuming costs an attach, not a verification)."""
        return self._change(features, FeatureState.PAUSED)

    def disable(self, *features: str) -> dict[str, Any]:
        """Disable ``features``: programs no enabled or paused feature needs are unloaded."""
        return self._change(features, FeatureState.DISABLED)

    def collect_stats(self, on: bool = True) -> None:
        """Have the kernel count each program's runs and run time (``BPF_ENABLE_STATS``) for :meth:`status`.

        The kernel counts while any process holds stats enabled; this
        application holds it until ``collect_stats(False)`` or :meth:`close`.
        """
        from dynbpf._sys import commands

        with self._apply_lock:
            if on and self._stats is None:
                self._stats = commands.enable_stats()
            elif not on and self._stats is not None:
                self._stats.close()
                self._stats = None

    def set_constants(self, constants: Mapping[str, Any]) -> tuple[str, ...]:
        """New ``.rodata`` values for the running programs, make-before-break (:meth:`Collection.set_constants`).

        Serialised with applies; atomic like them. Returns the programs reloaded.
        """
        with self._apply_lock:
            return self.collection.set_constants(constants)

    def close(self) -> None:
        """Disable every feature (the collection stays open, and another Application may run it now)."""
        self.collect_stats(False)
        try:
            if self.collection.closed:
                with self._apply_lock:
                    self._runs.clear()
                    self._config = dict.fromkeys(self.features.features, FeatureState.DISABLED)
                    self._snapshot = self._make_snapshot()
            else:
                self.apply({})
        finally:
            if self.collection._feature_owner is self:
                self.collection._feature_owner = None
                self.collection._feature_state = None

    # --- surviving a restart (docs/runtime.md, "Restart without a blind window") ---------

    def _pinned_state(self) -> dict[str, Any]:
        """What a pinned root records of this application: each feature's state, each hook's variant."""
        snap = self._snapshot
        return {
            "config": {name: state.value for name, state in snap["config"].items()},
            "variants": {name: hook["variant"] for name, hook in snap["hooks"].items() if hook["variant"]},
        }

    def _restore(self, root: str, recorded: Mapping[str, Any], adopted: Iterable[str], replaced: Iterable[str]) -> None:
        """Start from what an earlier process ran: each hook whose variant's programs are all loaded (adopted,
        or loaded in place of the earlier ones by ``replace_pinned``) runs that variant (the recorded one
        first), and each feature has the state that process recorded.

        The next apply keeps what matches its configuration, attached as it is, and takes down the rest.
        """
        fresh = set(replaced)
        taken = set(adopted) | fresh
        variants = recorded.get("variants", {}) if isinstance(recorded.get("variants"), dict) else {}
        config = recorded.get("config", {}) if isinstance(recorded.get("config"), dict) else {}
        programs = self.collection.programs
        ours: set[str] = set()
        for name, hook in self.features.hooks.items():
            complete = [v for v in hook.variants if all(programs[p].loaded for p in v.programs)]
            complete = [v for v in complete if taken & set(v.programs)]
            if not complete:
                continue
            variant = next((v for v in complete if v.name == variants.get(name)), complete[0])
            self._runs[name] = _HookRun(variant)
            self._chosen[name] = variant.name
            ours.update(variant.programs)
            why = "taken over from the pins of an earlier process"
            if fresh & set(variant.programs):
                why = "taken over from the pins of an earlier process, its changed programs loaded anew in place"
            self._decisions[name] = (Decision(name, variant.name, "adopted", why, {"root": root}),)
        for name, state in config.items():
            if name in self.features.features and state in {s.value for s in FeatureState}:
                self._config[name] = FeatureState(state)
        self._strays = {p for hook in self.features.hooks.values() for p in hook.programs if p in taken} - ours
        effective = self._effective(self._config)
        wanted, required = self._wanted_hooks(effective)
        self._snapshot = self._make_snapshot(effective, wanted, required)

    # --- reading ---------------------------------------------------------------------

    def explain(self) -> dict[str, Any]:
        """Every hook's decisions, JSON-serialisable: which variant won and why the others did not."""
        decided = self._snapshot["decisions"]
        return copy.deepcopy({hook: [d.as_dict() for d in decisions] for hook, decisions in decided.items()})

    def status(self) -> dict[str, Any]:
        """Per feature, hook and program: state, chosen variant, timings, links and kernel run statistics.

        JSON-serialisable, and the caller's to change. Reads what the last
        apply committed and the programs' own state: never waits for an
        apply under way, never prepares a program. A hook's ``state`` is
        read from its programs: ``enabled`` (every program attached),
        ``paused`` (loaded, detached), ``detached`` (wanted enabled, but a
        link is gone: a reload could not re-make it, or it was detached by
        hand), ``failed`` (no variant worked) or ``off``.
        """
        snap = copy.deepcopy(self._snapshot)
        programs: dict[str, Any] = {}
        for hook in snap["hooks"].values():
            for name in hook["programs"]:
                programs[name] = self._program_status(name)
            if hook["variant"] is not None:
                hook["state"] = _hook_state(hook, programs)
        return {
            "stats": self._stats is not None,
            "features": snap["features"],
            "hooks": snap["hooks"],
            "programs": programs,
        }

    # --- the work --------------------------------------------------------------------

    def _parse(self, config: Mapping[str, FeatureState | str]) -> dict[str, FeatureState]:
        if not isinstance(config, Mapping):
            raise TypeError(f"config maps feature names to states, not {type(config).__name__}")
        wanted = dict.fromkeys(self.features.features, FeatureState.DISABLED)
        for name, state in config.items():
            if name not in self.features.features:
                self.features.closure(name)  # raises, naming close matches
            wanted[name] = FeatureState.of(state, where=f"feature {name!r}")
        return wanted

    def _change(self, features: Iterable[str], state: FeatureState) -> dict[str, Any]:
        for name in features:
            if not isinstance(name, str):
                raise TypeError(f"give feature names as arguments (app.pause('a', 'b')), not {name!r}")
        with self._apply_lock:
            self.collection._require_open()
            config: dict[str, FeatureState | str] = dict(self._config)
            for name in features:
                config[name] = state
            return self._apply(self._parse(config), set(), True, {})

    def _effective(self, config: Mapping[str, FeatureState]) -> dict[str, FeatureState]:
        """Each feature's state once the features it requires are switched on with it."""
        out = dict(config)
        for name, state in config.items():
            for needed in self.features.closure(name):
                if _RANK[state] > _RANK[out[needed]]:
                    out[needed] = state
        return out

    def _wanted_hooks(self, effective: Mapping[str, FeatureState]) -> tuple[dict[str, FeatureState], set[str]]:
        hooks: dict[str, FeatureState] = {}
        required: set[str] = set()
        for name, state in effective.items():
            if state is FeatureState.DISABLED:
                continue
            feature = self.features.features[name]
            for hook in feature.all_hooks:
                if _RANK[state] > _RANK[hooks.get(hook, FeatureState.DISABLED)]:
                    hooks[hook] = state
            required.update(feature.hooks)
        return hooks, required

    def _apply(
        self, config: dict[str, FeatureState], again: set[str], atomic: bool, first: Mapping[str, str]
    ) -> dict[str, Any]:
        effective = self._effective(config)
        wanted, required = self._wanted_hooks(effective)
        for hook in first:
            if hook not in wanted:
                raise FeatureMapError(f"use: no enabled or paused feature needs hook {hook!r}, so it runs no variant")
        ours = {name for run in self._runs.values() for name in run.variant.programs}
        self._by_hand = {
            name
            for hook in self.features.hooks.values()
            for name in hook.programs
            if name not in ours and name not in self._strays and self.collection.programs[name].loaded
        }
        made: dict[str, _HookRun] = {}  # hooks given a new variant by this call
        attached: dict[str, list[Link]] = {}  # hooks whose kept variant this call attached
        decisions: dict[str, list[Decision]] = {}
        try:
            pending: dict[str, list[Variant]] = {}
            for hook, state in wanted.items():
                run = self._runs.get(hook)
                if run is not None and hook not in again:
                    decisions[hook] = [Decision(hook, run.variant.name, "kept", "chosen by an earlier apply")]
                    if state is FeatureState.ENABLED and not self._attached(run.variant):
                        failure = self._attach(hook, run.variant)
                        if isinstance(failure, Decision):
                            decisions[hook].append(failure)
                            pending[hook] = [v for v in self._order(hook, first=None) if v != run.variant]
                        else:
                            attached[hook] = failure
                    continue
                pending[hook] = self._order(
                    hook, first=first.get(hook) or (None if hook in again else self._chosen.get(hook))
                )
            tried = list(pending)
            kept = self._select(pending, wanted, made, attached, decisions)
        except BaseException:
            self._undo(made, attached)
            raise
        failed = {
            h: tuple(d for d in decisions.get(h, ()) if d.outcome != "kept")
            for h in tried
            if h not in made and h not in kept
        }
        hard = {h: d for h, d in failed.items() if h in required}
        if hard and atomic:
            self._undo(made, attached)
            raise ApplyError(hard)
        self._commit(wanted, made, attached, failed)
        self._config = dict(config)
        for hook, ds in decisions.items():
            self._decisions[hook] = tuple(ds)
        self._failed = {h: d for h, d in failed.items() if h not in self._runs}
        self._snapshot = self._make_snapshot(effective, wanted, required)
        if hard:
            raise ApplyError(hard, rolled_back=False)
        return {hook: [d.as_dict() for d in ds] for hook, ds in decisions.items()}

    def _order(self, hook: str, *, first: str | None) -> list[Variant]:
        """The variants to try for ``hook``: the sticky choice first, then the declared order."""
        variants = list(self.features.hooks[hook].variants)
        if first is not None:
            variants.sort(key=lambda v: v.name != first)
        return variants

    def _select(
        self,
        pending: dict[str, list[Variant]],
        wanted: Mapping[str, FeatureState],
        made: dict[str, _HookRun],
        attached: dict[str, list[Link]],
        decisions: dict[str, list[Decision]],
    ) -> set[str]:
        """Rounds of: pick each pending hook's next acceptable variant, load them all in parallel, attach.

        Returns the hooks whose pick was the variant that runs already: it
        stays as it is (attached if need be, into ``attached``), since
        loading and attaching it anew would give it a second link, which the
        kernel refuses for a program on one perf tracepoint.
        """
        kept: set[str] = set()
        while pending:
            picks: dict[str, Variant] = {}
            for hook, candidates in list(pending.items()):
                run = self._runs.get(hook)
                while candidates:
                    variant = candidates.pop(0)
                    refusal = self._refusal(hook, variant)
                    if refusal is not None:
                        decisions.setdefault(hook, []).append(refusal)
                    elif run is None or variant != run.variant:
                        picks[hook] = variant
                        break
                    elif (again := self._keep(hook, run, wanted[hook], decisions)) is not None:
                        if again:
                            attached[hook] = again
                        kept.add(hook)
                        break
                if hook not in picks:
                    del pending[hook]  # out of variants, or kept
            if not picks:
                return kept
            names = [p for v in picks.values() for p in v.programs]
            was_loaded = {p for p in names if self.collection.programs[p].loaded}
            try:
                self._round(
                    picks,
                    names=names,
                    was_loaded=was_loaded,
                    wanted=wanted,
                    made=made,
                    pending=pending,
                    decisions=decisions,
                )
            except BaseException:  # an interrupt: what this round loaded or attached and did not record goes
                for hook, variant in picks.items():
                    if hook not in made:
                        self._detach(variant, keep=was_loaded)
                        self._unload(variant, keep=was_loaded)
                raise
        return kept

    def _round(
        self,
        picks: Mapping[str, Variant],
        *,
        names: list[str],
        was_loaded: set[str],
        wanted: Mapping[str, FeatureState],
        made: dict[str, _HookRun],
        pending: dict[str, list[Variant]],
        decisions: dict[str, list[Decision]],
    ) -> None:
        """Load one round's picks in parallel, attach those of enabled hooks, record what worked."""
        started = time.monotonic()
        failures = self.collection.load(names, workers=self._workers)
        wall = time.monotonic() - started
        for hook, variant in picks.items():
            bad = {p: failures[p] for p in variant.programs if p in failures}
            if bad:
                self._unload(variant, keep=was_loaded)
                decisions.setdefault(hook, []).append(_rejected(hook, variant, bad))
                continue
            links: list[Link] = []
            if wanted[hook] is FeatureState.ENABLED:
                got = self._attach(hook, variant)
                if isinstance(got, Decision):
                    self._unload(variant, keep=was_loaded)
                    decisions.setdefault(hook, []).append(got)
                    continue
                links = got
            made[hook] = _HookRun(variant)
            decisions.setdefault(hook, []).append(_chosen(hook, variant, self.collection, wall, bool(links)))
            del pending[hook]

    def _keep(
        self, hook: str, run: _HookRun, state: FeatureState, decisions: dict[str, list[Decision]]
    ) -> list[Link] | None:
        """Chosen again, the variant that runs stays: the links made for it (none if it needs none), or None if
        it needs them and cannot attach."""
        decisions.setdefault(hook, []).append(Decision(hook, run.variant.name, "kept", "chosen again; it runs already"))
        if state is not FeatureState.ENABLED or self._attached(run.variant):
            return []
        got = self._attach(hook, run.variant)
        if isinstance(got, Decision):
            decisions[hook].append(got)
            return None
        return got

    def _refusal(self, hook: str, variant: Variant) -> Decision | None:
        check = self._check or _default_check()
        for req in variant.requires:
            try:
                answer = check(req)
            except DynbpfError as e:
                return Decision(hook, variant.name, "skipped", f"{req}: {e}", {"requirement": str(req)})
            if not answer.supported:
                evidence = {"requirement": str(req), "probe": answer.name, "how": answer.how}
                how = answer.how.removeprefix(f"{req}: ")
                return Decision(hook, variant.name, "skipped", f"{req} refused ({how})", evidence)
        return None

    def _attach(self, hook: str, variant: Variant) -> list[Link] | Decision:
        links: list[Link] = []
        for name in variant.programs:
            program = self.collection.programs[name]
            try:
                links.append(program.attach(**dict(variant.attach.get(name, {}))))
            except Exception as e:  # a TypeError of a misspelt attach keyword too: the variant cannot attach
                for link in links:
                    link.detach()
                evidence = {"program": name, "error": type(e).__name__, "message": str(e)}
                return Decision(hook, variant.name, "attach-failed", f"{name}: {e}", evidence)
            except BaseException:
                for link in links:
                    link.detach()
                raise
        return links

    def _unload(self, variant: Variant, *, keep: set[str]) -> None:
        """Unload ``variant``'s programs but those in ``keep`` and those the caller loaded by hand."""
        for name in variant.programs:
            if name not in keep and name not in self._by_hand:
                self.collection.programs[name].unload()

    def _links(self, variant: Variant) -> list[Link]:
        return [link for name in variant.programs for link in self.collection.programs[name].links]

    def _attached(self, variant: Variant) -> bool:
        """Whether every program of ``variant`` is attached (has a live link)."""
        return all(self.collection.programs[name].links for name in variant.programs)

    def _detach(self, variant: Variant, *, keep: Iterable[str] = ()) -> None:
        kept = set(keep)
        for name in variant.programs:
            if name not in kept:
                self.collection.programs[name].detach()

    def _undo(self, made: Mapping[str, _HookRun], attached: Mapping[str, list[Link]]) -> None:
        """Take back what an apply made, leaving what ran before it as it was."""
        for links in attached.values():
            for link in links:
                link.detach()
        for hook, run in made.items():
            old = self._runs.get(hook)
            keep = set(old.variant.programs) if old is not None else set()
            self._detach(run.variant, keep=keep)
            self._unload(run.variant, keep=keep)

    def _commit(
        self,
        wanted: Mapping[str, FeatureState],
        made: Mapping[str, _HookRun],
        attached: Mapping[str, list[Link]],
        failed: Mapping[str, tuple[Decision, ...]],
    ) -> None:
        """Break what the new configuration no longer needs, now that its replacements run."""
        for hook, run in made.items():
            old = self._runs.get(hook)
            self._runs[hook] = run
            self._chosen[hook] = run.variant.name
            if old is not None:
                self._detach(old.variant, keep=set(run.variant.programs))
                self._unload(old.variant, keep=set(run.variant.programs))
        for hook in list(self._runs):
            state = wanted.get(hook, FeatureState.DISABLED)
            run = self._runs[hook]
            # An enabled hook left without links: its variant (chosen while paused) failed to attach and no
            # other worked. It is failed, not paused: nothing of it stays loaded.
            stranded = state is FeatureState.ENABLED and not self._attached(run.variant) and hook in failed
            if state is FeatureState.DISABLED or stranded:
                del self._runs[hook]  # first: an interrupt from here on leaves less running than recorded, not more
                self._detach(run.variant)
                self._unload(run.variant, keep=set())
            elif state is FeatureState.PAUSED:
                self._detach(run.variant)
        running = {name for run in self._runs.values() for name in run.variant.programs}
        strays, self._strays = self._strays - running, set()
        for name in strays:  # adopted, but no variant of theirs could run: nothing will take them down later
            self.collection.programs[name].unload()

    # --- status ----------------------------------------------------------------------

    def _make_snapshot(
        self,
        effective: Mapping[str, FeatureState] | None = None,
        wanted: Mapping[str, FeatureState] | None = None,
        required: set[str] | None = None,
    ) -> dict[str, Any]:
        effective = effective or self._config
        wanted = wanted or {}
        features = {}
        for name, feature in self.features.features.items():
            features[name] = {
                "configured": self._config[name].value,
                "state": effective[name].value,
                "hooks": list(feature.hooks),
                "best_effort": list(feature.best_effort),
                "requires": list(feature.requires),
            }
        hooks = {}
        for name, hook in self.features.hooks.items():
            run = self._runs.get(name)
            if run is not None:
                state = "enabled" if self._attached(run.variant) else "paused"
            elif name in self._failed:
                state = "failed"
            else:
                state = "off"
            hooks[name] = {
                "state": state,
                "wanted": wanted.get(name, FeatureState.DISABLED).value,
                "required": name in (required or set()),
                "variant": run.variant.name if run is not None else None,
                "programs": list(run.variant.programs) if run is not None else _first_programs(hook),
                "variants": [v.name for v in hook.variants],
                "decisions": [d.as_dict() for d in self._decisions.get(name, ())],
            }
        return {
            "config": dict(self._config),
            "features": features,
            "hooks": hooks,
            "decisions": dict(self._decisions),
        }

    def _program_status(self, name: str) -> dict[str, Any]:
        from dynbpf._sys import commands

        program = self.collection.programs[name]
        links = program.links
        state = "attached" if links else "loaded" if program.loaded else "not loaded"
        out: dict[str, Any] = {"state": state, "verification_ms": None, "links": []}
        try:
            fd = program.fd
        except StateError:
            return out  # not loaded (asking for its lifecycle state would prepare it)
        out["verification_ms"] = round(program.seconds * 1000, 3)
        out["links"] = [link.description for link in program.links]
        try:
            info = commands.prog_info(fd)
        except DynbpfError:
            return out  # unloaded since the state was read
        out.update(id=int(info.id), run_cnt=int(info.run_cnt), run_time_ns=int(info.run_time_ns))
        return out


def _hook_state(hook: Mapping[str, Any], programs: Mapping[str, Mapping[str, Any]]) -> str:
    states = [programs[name]["state"] for name in hook["programs"]]
    if all(s == "attached" for s in states):
        return "enabled"
    if any(s == "not loaded" for s in states):
        return "off"  # unloaded since the apply (the collection closed, or by hand)
    return "detached" if hook["wanted"] == FeatureState.ENABLED.value else "paused"


def _first_programs(hook: Hook) -> list[str]:
    return list(hook.variants[0].programs)


def _rejected(hook: str, variant: Variant, failures: Mapping[str, DynbpfError]) -> Decision:
    name, error = next(iter(failures.items()))
    evidence: dict[str, Any] = {"program": name, "error": type(error).__name__}
    if isinstance(error, VerifierError):
        evidence.update(message=error.message, instruction=error.instruction, source=error.source)
        reason = f"{name}: verifier rejected it: {error.message or error.hint or 'see its log'}"
        if error.source:
            reason += f" (at {error.source})"
    else:
        evidence["message"] = str(error)
        reason = f"{name}: {str(error).splitlines()[0]}"
    return Decision(hook, variant.name, "rejected", reason, evidence)


def _chosen(hook: str, variant: Variant, collection: Collection, wall: float, attached: bool) -> Decision:
    verify = {p: round(collection.programs[p].seconds * 1000, 3) for p in variant.programs}
    ms = sum(verify.values())
    what = "loaded and attached" if attached else "loaded (paused)"
    reason = f"{what}; verification {ms:.1f} ms"
    return Decision(
        hook, variant.name, "chosen", reason, {"verification_ms": verify, "round_ms": round(wall * 1000, 3)}
    )


def _default_check() -> Checker:
    from dynbpf._features.requirements import check

    return check
