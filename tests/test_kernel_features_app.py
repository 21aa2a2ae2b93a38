"""Features on the real kernel: variant choice with evidence, atomic applies, pause, sharing, no lost events (issue 14).

tests/bpf/features_app.bpf.c implements one hook (getpgid) six ways; each
counts getpgid(SEQ_BASE + seq) calls in `seen[seq]`, so whether a switch
between variants lost an event is a fact the map holds.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dynbpf
from dynbpf._features.application import Application, ApplyError
from dynbpf._features.model import Feature, FeatureMap, Requirement, Variant
from dynbpf._probes import attach as attach_probes
from dynbpf._probes.result import Support
from tests import kernel_state as ks
from tests.bpfbuild import build
from tests.helpers import features_app_counter, numbered_getpgid

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]

GETPGID = ["fexit_getpgid", "broken_getpgid", "missing_getpgid", "btf_getpgid", "tp_getpgid", "raw_getpgid"]


def obj() -> Path:
    return build("features_app")


def features(getpgid: list[str | Variant] | None = None, **extra: list[str | Variant]) -> FeatureMap:
    hooks = {"getpgid": getpgid or ["tp_getpgid"], "getppid": ["tp_getppid"], **extra}
    feats = [
        Feature("seq", hooks=["getpgid"]),
        Feature("ppid", hooks=["getppid"]),
        Feature("extra", hooks=["getppid"], requires=["seq"], best_effort=list(extra)),
    ]
    return FeatureMap.of(feats, {name: [*variants] for name, variants in hooks.items()})


def fexit_first() -> list[str | Variant]:
    return [Variant("fexit_getpgid", requires=["trampolines"]), *GETPGID[1:]]


@pytest.fixture
def app() -> Iterator[Application]:
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, features(fexit_first())) as running:
        yield running


def test_variants_fall_back_on_probe_verifier_and_attach_with_evidence(app: Application) -> None:
    decided = app.apply({"seq": "enabled"})["getpgid"]
    outcomes = [(d["variant"], d["outcome"]) for d in decided]
    trampolines = attach_probes.trampolines()
    if trampolines.supported:  # a kernel that runs fexit takes the first variant
        assert outcomes == [("fexit_getpgid", "chosen")]
    else:
        assert outcomes == [
            ("fexit_getpgid", "skipped"),
            ("broken_getpgid", "rejected"),
            ("missing_getpgid", "attach-failed"),
            ("btf_getpgid", "chosen"),
        ]
        skipped, rejected, missing, chosen = decided
        assert trampolines.how in skipped["evidence"]["how"]
        assert skipped["reason"] == f"trampolines refused ({trampolines.how})"
        assert "invalid bpf_context access" in rejected["reason"]
        assert rejected["evidence"]["source"].endswith(
            "/* a tracepoint's context is read-only: the verifier refuses the write */"
        )
        assert "sys_enter_no_such_syscall" in missing["reason"]
        assert not app.collection.programs["broken_getpgid"].loaded
        assert not app.collection.programs["missing_getpgid"].loaded  # loaded, failed to attach, unloaded again
        assert "verification" in chosen["reason"]
    json.dumps(app.explain())
    json.dumps(app.status())
    for seq in range(10):
        numbered_getpgid(seq)
    assert features_app_counter(app) == 10
    status = app.status()
    winner = status["hooks"]["getpgid"]["variant"]
    assert status["hooks"]["getpgid"]["state"] == "enabled"
    assert status["programs"][winner]["state"] == "attached"
    assert status["programs"][winner]["id"] == app.collection.programs[winner].id


def test_the_choice_sticks_until_reselection_is_asked(app: Application) -> None:
    app.apply({"seq": "enabled"})
    chosen = app.status()["hooks"]["getpgid"]["variant"]
    app.apply({})
    assert app.status()["hooks"]["getpgid"]["state"] == "off"
    again = app.apply({"seq": "enabled"})["getpgid"]
    assert [(d["variant"], d["outcome"]) for d in again] == [(chosen, "chosen")]  # no variant before it tried
    switched = app.apply({"seq": "enabled"}, use={"getpgid": "raw_getpgid"})["getpgid"]
    assert switched[-1]["variant"] == "raw_getpgid"
    assert app.status()["hooks"]["getpgid"]["variant"] == "raw_getpgid"
    assert not app.collection.programs[chosen].loaded  # the old variant went once the new one ran


def test_a_failed_apply_leaves_the_kernel_as_it_was() -> None:
    fm = features(["tp_getpgid"], doomed=["broken_getpgid", "missing_getpgid"])
    fm = FeatureMap.of([*fm.features.values(), Feature("strict", hooks=["doomed"])], fm.hooks)
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as app:
        app.apply({"seq": "enabled"})
        before = (ks.held_prog_ids(), ks.held_link_ids(), ks.held_map_ids(), app.status())
        with pytest.raises(ApplyError) as e:
            app.apply({"seq": "enabled", "ppid": "enabled", "strict": "enabled"})
        assert (ks.held_prog_ids(), ks.held_link_ids(), ks.held_map_ids(), app.status()) == before
        assert list(e.value.failures) == ["doomed"]
        message = str(e.value)
        assert "broken_getpgid: rejected" in message
        assert "missing_getpgid: attach-failed" in message
        assert app.config["ppid"] == "disabled"


def test_a_best_effort_hook_never_fails_an_apply(no_fd_leak: None) -> None:
    fm = features(["tp_getpgid"], flaky=["broken_getpgid"])
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as other:
        other.apply({"extra": "enabled"})
        status = other.status()
        assert status["hooks"]["flaky"]["state"] == "failed"
        assert status["hooks"]["getppid"]["state"] == "enabled"
        assert status["features"]["seq"]["state"] == "enabled"  # required by extra
        assert status["features"]["seq"]["configured"] == "disabled"


def test_a_hook_two_features_share_stays_while_either_needs_it(app: Application) -> None:
    app.apply({"ppid": "enabled", "extra": "enabled"})
    program = app.collection.programs["tp_getppid"]
    first = program.id
    app.apply({"extra": "enabled"})
    assert program.id == first
    assert program.state.value == "attached"
    app.apply({"ppid": "paused"})
    assert program.id == first
    assert program.state.value == "loaded"
    app.apply({})
    assert not program.loaded


def test_pause_and_resume_cost_an_attach_not_a_verification(app: Application) -> None:
    app.apply({"seq": "enabled"})
    winner = app.status()["hooks"]["getpgid"]["variant"]
    program = app.collection.programs[winner]
    ident = program.id
    app.pause("seq")
    numbered_getpgid(1)
    assert features_app_counter(app) == 0  # paused: loaded, not attached
    assert app.collection.map_exists("seen")  # a paused feature's programs still hold their on-demand maps
    app.enable("seq")
    assert program.id == ident
    numbered_getpgid(2)
    assert features_app_counter(app) == 1
    app.apply({})
    assert not app.collection.map_exists("seen")  # freed once no enabled or paused feature needs it


def test_switching_variants_under_load_loses_no_event() -> None:
    """1,000 random reconfigurations, constants changes and reloads while a generator runs: no getpgid is missed."""
    variants = ["btf_getpgid", "tp_getpgid", "raw_getpgid"]
    total = 1 << 20
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, features(variants)) as app:
        app.apply({"seq": "enabled"})
        stop = threading.Event()
        sent = [0]

        def generate() -> None:
            seq = 0
            while not stop.is_set() and seq < total:
                numbered_getpgid(seq)
                seq += 1
                if seq % 64 == 0:
                    time.sleep(0.0002)
            sent[0] = seq

        rng = random.Random(1)
        thread = threading.Thread(target=generate)
        thread.start()
        try:
            for i in range(1000):
                others = {f: rng.choice(["enabled", "paused", "disabled"]) for f in ("ppid", "extra")}
                app.apply({"seq": "enabled", **others}, use={"getpgid": rng.choice(variants)})
                if i % 50 == 25:  # a constants change: every reader of .rodata reloaded, make before break
                    app.set_constants({"weight": rng.randint(1, 9)})
                elif i % 50 == 0:  # a plain reload of the running variant
                    coll.programs[app.status()["hooks"]["getpgid"]["variant"]].reload()
        finally:
            stop.set()
            thread.join()
        seen = coll.maps["seen"]
        missing = [seq for seq, hits in seen.lookup_batch() if seq < sent[0] and not hits]
        assert sent[0] > 1000
        assert missing == [], f"{len(missing)} of {sent[0]} events lost"
        assert features_app_counter(app) >= sent[0]  # counted across every switch: the map was never re-created


def test_constants_change_while_running_without_losing_events_or_counts(app: Application) -> None:
    app.apply({"seq": "enabled", "ppid": "enabled"})
    winner = app.status()["hooks"]["getpgid"]["variant"]
    program = app.collection.programs[winner]
    links_before = len(program.links)
    untouched = app.collection.programs["tp_getppid"].id
    for seq in range(5):
        numbered_getpgid(seq)
    assert features_app_counter(app, 1) == 5  # weight 1
    assert app.set_constants({"weight": 3}) == (winner,)  # tp_getppid does not read .rodata: not reloaded
    assert app.collection.programs["tp_getppid"].id == untouched
    assert len(program.links) == links_before  # re-attached to the same hook
    for seq in range(5, 7):
        numbered_getpgid(seq)
    assert features_app_counter(app, 0) == 7  # the counter map kept its contents across the reload
    assert features_app_counter(app, 1) == 5 + 2 * 3
    assert app.collection.rodata.weight == 3
    assert app.set_constants({"weight": 3}) == ()  # nothing changed, nothing reloaded


def test_status_counts_runs_while_stats_are_collected(app: Application) -> None:
    app.apply({"seq": "enabled"})
    winner = app.status()["hooks"]["getpgid"]["variant"]
    app.collect_stats()
    for seq in range(20):
        numbered_getpgid(seq)
    status = app.status()
    assert status["stats"] is True
    assert status["programs"][winner]["run_cnt"] >= 20  # every getpgid, and for sys_enter hooks other syscalls too
    assert status["programs"][winner]["run_time_ns"] > 0
    app.collect_stats(False)
    assert app.status()["stats"] is False


def test_an_object_that_declares_its_features_runs_them_without_a_python_map(no_fd_leak: None) -> None:
    """features_decl carries its feature map in decl tags: Application(coll) reads it from the object."""
    from dynbpf._features.model import Requirement
    from dynbpf._features.requirements import check

    with dynbpf.open(build("features_decl"), map_policy="on_demand") as coll, Application(coll) as app:
        decided = app.apply({"process": "enabled"})
        assert decided["exec"][-1]["outcome"] == "chosen"
        assert app.status()["hooks"]["exec"]["state"] == "enabled"
        open_works = any(check(Requirement.parse(r)).supported for r in ("trampolines", "kprobe"))
        if open_works:
            app.apply({"files": "enabled"})
            assert app.status()["hooks"]["open"]["state"] == "enabled"
        else:  # this kernel refuses both ways to hook open: files cannot be enabled, process keeps running
            with pytest.raises(dynbpf.ApplyError) as e:
                app.apply({"files": "enabled"})
            assert list(e.value.failures) == ["open"]
            assert app.status()["hooks"]["exec"]["state"] == "enabled"
            assert app.config["files"] == "disabled"


def test_an_object_without_declared_features_needs_a_map(no_fd_leak: None) -> None:
    with dynbpf.open(obj()) as coll, pytest.raises(dynbpf.FeatureMapError, match="declares no features"):
        Application(coll)


def test_a_requirement_naming_nothing_is_refused_before_anything_loads(no_fd_leak: None) -> None:
    fm = features([Variant("tp_getpgid", requires=["trampoline"])])
    with dynbpf.open(obj()) as coll, pytest.raises(dynbpf.FeatureMapError, match="trampolines"):
        Application(coll, fm)


def test_constants_the_verifier_refuses_leave_everything_as_it_was() -> None:
    """slot=5 indexes past slotted_getppid's array: its reload fails, and the old .rodata and programs stay."""
    fm = features(["tp_getpgid"], slotted=["slotted_getppid"])
    fm = FeatureMap.of([*fm.features.values(), Feature("slots", hooks=["slotted"])], fm.hooks)
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as app:
        app.apply({"seq": "enabled", "slots": "enabled"})
        before = (ks.held_prog_ids(), ks.held_link_ids(), ks.held_map_ids())
        with pytest.raises(dynbpf.VerifierError, match="slotted_getppid"):
            app.set_constants({"weight": 5, "slot": 5})
        assert (ks.held_prog_ids(), ks.held_link_ids(), ks.held_map_ids()) == before
        assert coll.rodata.weight == 1
        assert coll.rodata.slot == 0
        numbered_getpgid(1)
        assert features_app_counter(app, 1) == 1  # the programs still see weight 1
        assert set(app.set_constants({"slot": 2})) == {"tp_getpgid", "slotted_getppid"}  # both read .rodata


def test_status_never_waits_for_an_apply_under_way(no_fd_leak: None) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(req: Requirement) -> Support:
        entered.set()
        release.wait(10)
        return attach_probes.trampolines()

    fm = features(fexit_first())
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm, check=slow) as app:
        worker = threading.Thread(target=app.apply, args=({"seq": "enabled"},))
        worker.start()
        try:
            assert entered.wait(10)  # the apply is in its first requirement check, holding the apply lock
            started = time.monotonic()
            status = app.status()
            explained = app.explain()
            assert time.monotonic() - started < 1.0
            assert status["hooks"]["getpgid"]["state"] == "off"  # the committed state: the apply is not done
            assert explained == {}
        finally:
            release.set()
            worker.join()


# --- found by the stress driver's feature operations (tests/stress_driver.py) -----------------------------


def test_pause_after_a_constants_change_detaches_the_reloaded_programs() -> None:
    """A reload re-makes tracing links; the application must detach the new ones, not the ones it made first."""
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, features(["raw_getpgid"])) as app:
        app.apply({"seq": "enabled"})
        program = coll.programs["raw_getpgid"]
        assert app.set_constants({"weight": 2}) == ("raw_getpgid",)
        assert len(program.links) == 1
        app.pause("seq")
        assert program.links == ()
        numbered_getpgid(1)
        assert features_app_counter(app) == 0
        app.enable("seq")
        assert len(program.links) == 1
        numbered_getpgid(2)
        assert features_app_counter(app) == 1
        assert app.status()["hooks"]["getpgid"]["state"] == "enabled"


def test_use_of_the_variant_that_runs_keeps_it() -> None:
    """The kernel refuses a second perf link of one program on one tracepoint: chosen again, it is not attached anew."""
    with (
        dynbpf.open(obj(), map_policy="on_demand") as coll,
        Application(coll, features(["tp_getpgid", "raw_getpgid"])) as app,
    ):
        app.apply({"seq": "enabled"})
        program = coll.programs["tp_getpgid"]
        ident, links = program.id, program.links
        decided = app.apply({"seq": "enabled"}, use={"getpgid": "tp_getpgid"})["getpgid"]
        assert [(d["variant"], d["outcome"]) for d in decided] == [("tp_getpgid", "kept")]
        assert (program.id, program.links) == (ident, links)
        assert not coll.programs["raw_getpgid"].loaded
        app.apply({"seq": "paused"})
        app.apply({"seq": "enabled"}, reselect=True)  # the first variant again: kept, attached once
        assert app.status()["hooks"]["getpgid"]["variant"] == "tp_getpgid"
        assert len(program.links) == 1


def test_a_fallback_to_the_variant_that_runs_keeps_it() -> None:
    """use= a variant the verifier rejects: the fallback is the variant that runs, which stays as it is."""
    fm = features(["tp_getpgid", "broken_getpgid"])
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as app:
        app.apply({"seq": "enabled"})
        program = coll.programs["tp_getpgid"]
        ident, links = program.id, program.links
        decided = app.apply({"seq": "enabled"}, use={"getpgid": "broken_getpgid"})["getpgid"]
        assert [(d["variant"], d["outcome"]) for d in decided] == [
            ("broken_getpgid", "rejected"),
            ("tp_getpgid", "kept"),
        ]
        assert (program.id, program.links) == (ident, links)
        numbered_getpgid(1)
        assert features_app_counter(app) == 1


def test_a_kept_variant_that_cannot_attach_falls_back_to_any_other() -> None:
    """Chosen while paused (use=), a variant whose target is missing fails to attach on enable: the others are tried,
    the ones declared before it too."""
    fm = features(["tp_getpgid", "missing_getpgid"])
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as app:
        app.apply({"seq": "paused"}, use={"getpgid": "missing_getpgid"})
        assert app.status()["hooks"]["getpgid"]["variant"] == "missing_getpgid"
        decided = app.apply({"seq": "enabled"})["getpgid"]
        assert [(d["variant"], d["outcome"]) for d in decided] == [
            ("missing_getpgid", "kept"),
            ("missing_getpgid", "attach-failed"),
            ("tp_getpgid", "chosen"),
        ]
        assert not coll.programs["missing_getpgid"].loaded
        numbered_getpgid(1)
        assert features_app_counter(app) == 1


def test_a_paused_variant_that_cannot_attach_is_failed_when_enabled_not_left_paused() -> None:
    """A best-effort hook whose only variant loads but cannot attach: enabled, it is reported failed and unloaded."""
    fm = features(["tp_getpgid"], flaky=["missing_getpgid"])
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as app:
        app.apply({"extra": "paused"})
        assert app.status()["hooks"]["flaky"]["state"] == "paused"
        app.apply({"extra": "enabled"})
        flaky = app.status()["hooks"]["flaky"]
        assert flaky["state"] == "failed"
        assert [(d["variant"], d["outcome"]) for d in flaky["decisions"]] == [
            ("missing_getpgid", "kept"),
            ("missing_getpgid", "attach-failed"),
        ]
        assert not coll.programs["missing_getpgid"].loaded
        assert app.status()["hooks"]["getpgid"]["state"] == "enabled"


def test_one_application_runs_a_collection_at_a_time(app: Application) -> None:
    with pytest.raises(dynbpf.StateError, match="run by another Application"):
        Application(app.collection, features())
    app.close()
    with Application(app.collection, features()) as second:  # closed, the first lets go
        second.apply({"seq": "enabled"})
