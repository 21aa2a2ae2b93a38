"""``dynbpf features``: an object's declared features, hooks and variants, and which variant this kernel would run.

Without ``--load`` the kernel is only asked about requirements (the probes
``dynbpf probe`` runs, kernel BTF, tracefs): for each hook the first variant
whose requirements all hold is the one an application would try first,
and the others say why they would be skipped. The verifier has the last
word, which ``--load`` asks: every feature is applied paused (programs
loaded, none attached) and the application's own decisions are shown,
verifier rejections included; then everything is unloaded again.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from typing import TYPE_CHECKING, Any

import click

from dynbpf._cli.common import bad_input, failures, json_option, print_json, print_table, say
from dynbpf._cli.opening import feature_map_option

if TYPE_CHECKING:
    from dynbpf._elf.spec import ObjectSpec
    from dynbpf._features.model import FeatureMap, Hook, Variant


@click.command()
@click.argument("obj", type=click.Path(exists=True, dir_okay=False, path_type=str))
@feature_map_option
@click.option(
    "--load",
    "trial",
    is_flag=True,
    help="Also load every variant the way an application would (none attached), so the verifier decides too.",
)
@json_option
def features(obj: str, feature_toml: str | None, trial: bool, as_json: bool) -> None:
    """The features OBJ declares (decl tags, or a TOML map), their hooks and variants, and this kernel's choice."""
    from dynbpf._cli import opening

    with failures():
        spec = opening.read(obj)
        fmap = opening.feature_map(spec, obj, feature_toml)
        if fmap is None:
            raise bad_input(
                f"{obj} declares no features: no dynbpf decl tags, and no {spec.name}.features.toml beside it "
                "(docs/features.md); give --feature-map TOML",
                option="OBJ",
            )
        fmap.check(spec.programs)
        report = _report(spec, fmap, os.path.basename(obj))
        if trial:
            _trial(spec, fmap, report)
        _would_run(fmap, report)
    if as_json:
        print_json(report)
    else:
        _print(report)


def _report(spec: ObjectSpec, fmap: FeatureMap, file: str) -> dict[str, Any]:
    features = [
        {"name": f.name, "hooks": list(f.hooks), "best_effort": list(f.best_effort), "requires": list(f.requires)}
        for f in fmap.features.values()
    ]
    hooks = []
    for hook in fmap.hooks.values():
        users = [f.name for f in fmap.features.values() if hook.name in f.all_hooks]
        hooks.append({"name": hook.name, "features": users, **_by_requirements(hook)})
    return {
        "object": spec.name,
        "source": fmap.source or file,
        "features": features,
        "hooks": hooks,
        "loaded": False,
    }


def _by_requirements(hook: Hook) -> dict[str, Any]:
    """Each variant's requirements put to the kernel; the first that passes them all is the one tried first."""
    from dynbpf._features.requirements import check, validate

    variants = []
    selected: str | None = None
    for variant in hook.variants:
        answers = []
        for req in variant.requires:
            validate(req, where=variant.where or hook.where)
            support = check(req)
            answers.append({"requirement": str(req), "supported": support.supported, "how": support.how})
        refused = next((a for a in answers if not a["supported"]), None)
        if refused is not None:
            verdict, reason = "skipped", f"{refused['requirement']} refused ({_how(refused)})"
        elif selected is None:
            selected = variant.name
            verdict = "selected"
            reason = "its requirements hold" if answers else "it has no requirements"
        else:
            verdict, reason = "fallback", f"would be tried if {selected} failed to load or attach"
        variants.append({**_variant(variant), "requires": answers, "verdict": verdict, "reason": reason})
    if selected is None:
        why = "no variant's requirements hold on this kernel"
    else:
        why = f"{selected} is the first variant whose requirements hold; the verifier decides at load (--load)"
    return {"variants": variants, "selected": selected, "why": why}


def _variant(variant: Variant) -> dict[str, Any]:
    return {
        "name": variant.name,
        "programs": list(variant.programs),
        "attach": {p: dict(kw) for p, kw in variant.attach.items()},
    }


def _how(answer: dict[str, Any]) -> str:
    return str(answer["how"]).removeprefix(f"{answer['requirement']}: ")


def _trial(spec: ObjectSpec, fmap: FeatureMap, report: dict[str, Any]) -> None:
    """Apply every feature paused, as an application would (loads, no attaches); keep its decisions; unload."""
    from dynbpf._features.application import Application
    from dynbpf._runtime.collection import Collection
    from dynbpf.errors import ApplyError

    with Collection(spec, map_policy="on_demand") as coll, Application(coll, fmap) as app:
        with contextlib.suppress(ApplyError):  # hooks without a working variant: their decisions say why
            app.apply(dict.fromkeys(fmap.features, "paused"), atomic=False)
        decided = app.explain()
        status = app.status()["hooks"]
    for hook in report["hooks"]:
        decisions = decided.get(hook["name"], [])
        chosen = status[hook["name"]]["variant"]
        hook["decisions"] = decisions
        hook["selected"] = chosen
        if chosen is not None:
            hook["why"] = f"{chosen} loaded (the verifier accepted it)"
        else:
            hook["why"] = "no variant loaded: " + ("; ".join(d["reason"] for d in decisions) or "none was tried")
        by_name = {d["variant"]: d for d in decisions}
        for variant in hook["variants"]:
            decision = by_name.get(variant["name"])
            if decision is None:
                variant["verdict"], variant["reason"] = "not tried", f"{chosen} was chosen before it"
            else:
                variant["verdict"] = decision["outcome"]
                variant["reason"] = decision["reason"]
    report["loaded"] = True


def _would_run(fmap: FeatureMap, report: dict[str, Any]) -> None:
    """Whether each feature would come up here: each required hook of it and of what it requires has a variant."""
    selected = {hook["name"]: hook["selected"] for hook in report["hooks"]}
    for feature in report["features"]:
        needed = [h for f in fmap.closure(feature["name"]) for h in fmap.features[f].hooks]
        missing = sorted({h for h in needed if selected[h] is None})
        feature["would_run"] = not missing
        feature["missing_hooks"] = missing


def _print(report: dict[str, Any]) -> None:
    from dynbpf._cli.common import console

    width = console().width
    say(f"{report['object']}: features declared in {report['source']}")
    rows = [
        [
            f["name"],
            ", ".join(f["hooks"]),
            ", ".join(f["best_effort"]) or None,
            ", ".join(f["requires"]) or None,
            "yes" if f["would_run"] else f"no: {', '.join(f['missing_hooks'])}",
        ]
        for f in report["features"]
    ]
    print_table(
        ["feature", "hooks", "best effort", "requires", "runs here"],
        rows,
        wrap=["hooks", "best effort", "requires", "runs here"],
    )
    how = "loaded as an application would" if report["loaded"] else "by requirements; --load asks the verifier"
    say(f"\nvariants, preferred first ({how}):")
    for hook in report["hooks"]:
        choice = hook["selected"] or "none"
        say(f"\nhook {hook['name']} (features: {', '.join(hook['features'])}): {choice}")
        for i, variant in enumerate(hook["variants"], 1):
            programs = "" if variant["programs"] == [variant["name"]] else f" [{', '.join(variant['programs'])}]"
            head = f"  {i}. {variant['name']}{programs}: {variant['verdict']}"
            say(head)
            for line in textwrap.wrap(variant["reason"], width=max(40, width - 7)):
                say(f"       {line}")
