"""Regressions found by a review of issue 14's features layer (Application, set_constants), on the real kernel.

Each test states what the docs (docs/features.md) promise and checks it
against the kernel. Every one failed on the code as reviewed (each was
committed as a strict xfail first) and passes since its fix.

The fixture is tests/bpf/features_app.bpf.c: its getpgid programs count
``getpgid(SEQ_BASE + seq)`` calls in ``counters[0]`` (and their ``weight``,
a ``.rodata`` constant, in ``counters[1]``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import dynbpf
from dynbpf import Application, ApplyError, Feature, FeatureMap, Variant
from tests import kernel_state as ks
from tests.bpfbuild import build, compile_source
from tests.helpers import features_app_counter, numbered_getpgid

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def obj() -> Path:
    return build("features_app")


def features(getpgid: list[str | Variant], **extra: list[str | Variant]) -> FeatureMap:
    """seq: getpgid; ppid: getppid; strict: the hooks in ``extra``, all required."""
    feats = [Feature("seq", hooks=["getpgid"]), Feature("ppid", hooks=["getppid"])]
    if extra:
        feats.append(Feature("strict", hooks=list(extra)))
    return FeatureMap.of(feats, {"getpgid": getpgid, "getppid": ["tp_getppid"], **extra})


@contextlib.contextmanager
def running(fm: FeatureMap) -> Iterator[Application]:
    with dynbpf.open(obj(), map_policy="on_demand") as coll, Application(coll, fm) as app:
        yield app


def kernel_state() -> tuple[object, ...]:
    return ks.held_prog_ids(), ks.held_link_ids(), ks.held_map_ids()


@pytest.mark.parametrize("change", ["set_constants", "reload"])
def test_pause_after_a_reload_detaches_the_hook(change: str) -> None:
    """docs: "Paused = loaded but detached"; set_constants/reload keep the program's links."""
    with running(features(["tp_getpgid", "btf_getpgid"])) as app:
        app.apply({"seq": "enabled"})
        program = app.collection.programs["tp_getpgid"]
        if change == "set_constants":
            assert app.set_constants({"weight": 2}) == ("tp_getpgid",)
        else:
            program.reload()
        assert len(program.links) == 1
        app.pause("seq")
        assert app.status()["hooks"]["getpgid"]["state"] == "paused"
        numbered_getpgid(1)
        assert program.links == ()
        assert features_app_counter(app) == 0  # paused: nothing counts
        app.enable("seq")
        assert app.status()["hooks"]["getpgid"]["variant"] == "tp_getpgid"  # resuming costs an attach, no switch
        assert len(program.links) == 1


@pytest.mark.parametrize("how", ["use", "reselect"])
def test_choosing_the_running_variant_again_keeps_it(how: str) -> None:
    """use={hook: the variant that runs} (or reselect=True where it is the first) must keep it running."""
    with running(features(["tp_getpgid", "btf_getpgid"])) as app:
        app.apply({"seq": "enabled"})
        assert app.status()["hooks"]["getpgid"]["variant"] == "tp_getpgid"
        if how == "use":
            decided = app.apply({"seq": "enabled"}, use={"getpgid": "tp_getpgid"})["getpgid"]
        else:
            decided = app.apply({"seq": "enabled"}, reselect=True)["getpgid"]
        assert [d["outcome"] for d in decided] in (["chosen"], ["kept"])
        assert app.status()["hooks"]["getpgid"]["variant"] == "tp_getpgid"
        assert len(app.collection.programs["tp_getpgid"].links) == 1


def test_a_rolled_back_apply_keeps_a_program_loaded_by_hand() -> None:
    """docs: atomic by default, "the kernel holds the same programs, links and maps as before the call"."""
    with running(features(["tp_getpgid"], doomed=["broken_getpgid", "missing_getpgid"])) as app:
        program = app.collection.programs["tp_getppid"]
        program.load()  # by hand, before any apply: the app's getppid hook will find it loaded
        before = kernel_state()
        with pytest.raises(ApplyError):
            app.apply({"ppid": "enabled", "strict": "enabled"})
        assert program.loaded
        assert kernel_state() == before


def test_an_attach_keyword_mistake_leaves_nothing_loaded_or_attached() -> None:
    """A typo in a variant's attach keywords must not leave half a variant running behind the app's back."""
    fm = features([Variant(["tp_getpgid", "raw_getpgid"], attach={"raw_getpgid": {"tracepont": "sys_enter"}})])
    with dynbpf.open(obj(), map_policy="on_demand") as coll:
        before = kernel_state()
        try:
            app = Application(coll, fm)  # refusing the declaration here would do too
        except dynbpf.FeatureMapError:
            return
        with app:
            with contextlib.suppress(Exception):  # an ApplyError naming the attach failure would be right
                app.apply({"seq": "enabled"})
            assert app.status()["hooks"]["getpgid"]["state"] == "off"
            assert [name for name, p in coll.programs.items() if p.loaded] == []
            assert kernel_state() == before


class _CtrlC(int):
    """An attach keyword whose range check is interrupted: Ctrl-C arriving while a variant attaches."""

    def __ge__(self, other: object) -> bool:
        raise KeyboardInterrupt


def test_an_interrupt_while_a_variant_attaches_leaves_the_kernel_as_it_was() -> None:
    """Ctrl-C during an apply: the apply is undone like a failed one (docs: atomic by default)."""
    fm = features([Variant(["tp_getpgid", "raw_getpgid"], attach={"raw_getpgid": {"cookie": _CtrlC(0)}})])
    with running(fm) as app:
        app.apply({"ppid": "enabled"})
        before = kernel_state()
        with pytest.raises(KeyboardInterrupt):
            app.apply({"ppid": "enabled", "seq": "enabled"})
        assert app.status()["hooks"]["getpgid"]["state"] == "off"
        assert [name for name, p in app.collection.programs.items() if p.loaded] == ["tp_getppid"]
        assert kernel_state() == before


def test_a_failed_set_constants_leaves_the_old_values_and_can_be_retried() -> None:
    """docs: set_constants is atomic: when it fails nothing changed, so asking again must do the change."""
    with running(features(["tp_getpgid"])) as app:
        app.apply({"seq": "enabled"})
        assert app.collection.rodata.weight == 1  # the views' modules imported before fds run out
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest = os.dup(0)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))  # no new fd: the new .rodata cannot be made
        try:
            with pytest.raises(dynbpf.DynbpfError, match="EMFILE"):
                app.set_constants({"weight": 5})
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert app.collection.rodata.weight == 1
        assert app.set_constants({"weight": 5}) == ("tp_getpgid",)
        numbered_getpgid(1)
        assert features_app_counter(app, 1) == 5


def test_status_answers_after_the_collection_closed() -> None:
    """status() is what the CLI and the agent show: it must answer whatever state the collection is in."""
    coll = dynbpf.open(obj(), map_policy="on_demand")
    app = Application(coll, features(["raw_getpgid"]))
    try:
        app.apply({"seq": "enabled"})
    finally:
        coll.close()
    json.dumps(app.status())
    app.close()
    json.dumps(app.status())


def test_editing_a_status_or_explain_result_changes_nothing() -> None:
    with running(features(["tp_getpgid"])) as app:
        app.apply({"seq": "enabled"})
        hooks, feats = copy.deepcopy(app.status()["hooks"]), copy.deepcopy(app.status()["features"])
        explained = copy.deepcopy(app.explain())
        status = app.status()
        status["hooks"]["getpgid"]["variants"].append("edited")
        status["features"]["seq"]["hooks"].append("edited")
        app.explain()["getpgid"][-1]["evidence"]["verification_ms"].clear()
        assert app.status()["hooks"] == hooks
        assert app.status()["features"] == feats
        assert app.explain() == explained


def test_reselect_given_one_hook_name_as_a_string() -> None:
    """Collection.load refuses a lone string with a TypeError saying so; apply(reselect=) should do no worse."""
    with running(features(["btf_getpgid", "tp_getpgid"])) as app:
        app.apply({"seq": "enabled"})
        try:
            app.apply({"seq": "enabled"}, reselect="getpgid")
        except TypeError:
            return  # refused, as Collection.load refuses one: fine too
        assert app.status()["hooks"]["getpgid"]["variant"] == "btf_getpgid"


def test_a_non_atomic_apply_error_does_not_say_the_previous_configuration_stays() -> None:
    with running(features(["tp_getpgid"], doomed=["broken_getpgid"])) as app:
        with pytest.raises(ApplyError) as e:
            app.apply({"seq": "enabled", "strict": "enabled"}, atomic=False)
        assert app.config["strict"] == "enabled"  # what worked was kept: the new configuration is the one running
        assert app.status()["hooks"]["getpgid"]["state"] == "enabled"
        assert "previous configuration stays" not in str(e.value)


UPROBE_SOURCE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
const volatile u64 weight = 1;
u64 hits = 0;
SEC("uprobe")
int probe(void *ctx)
{
	__sync_fetch_and_add(&hits, weight);
	return 0;
}
"""


def test_a_set_constants_that_cannot_re_make_a_link_leaves_a_truthful_status(tmp_path: Path) -> None:
    """After a set_constants error, status() must still say what runs: 'enabled' only with the hook attached."""
    binary = tmp_path / "true"
    shutil.copy("/bin/true", binary)
    variant = Variant("probe", attach={"probe": {"path": str(binary), "offset": 0}})
    fm = FeatureMap.of([Feature("f", hooks=["h"])], [dynbpf.Hook("h", [variant])])
    with dynbpf.open(compile_source(UPROBE_SOURCE, "review_uprobe")) as coll, Application(coll, fm) as app:
        app.apply({"f": "enabled"})
        program = coll.programs["probe"]
        assert len(program.links) == 1
        binary.unlink()  # the uprobe stays; a new one on that path cannot be made
        with pytest.raises(dynbpf.DynbpfError):
            app.set_constants({"weight": 2})
        assert (app.status()["hooks"]["h"]["state"] == "enabled") == bool(program.links)
