"""Feature requirements: each answer agrees with its probe, kernel BTF (bpftool as the oracle) or tracefs.

Nothing here assumes which kernel runs: a test asks the probe, bpftool or
tracefs what this kernel has and checks that the requirement says the same,
with evidence.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import pytest

from dynbpf import _probes
from dynbpf._btf import kernel
from dynbpf._features.model import Requirement, Variant
from dynbpf._features.requirements import check, validate
from dynbpf._probes import attach, collect
from dynbpf._probes.capabilities import ALIASES, ATTACH_KINDS, CAPABILITIES, KERNEL_FEATURES
from dynbpf._probes.maps import map_type
from dynbpf._probes.programs import helper, prog_type
from dynbpf._sys import fs
from dynbpf._sys.constants import HELPER_NAMES, MapType, ProgType
from dynbpf.errors import FeatureMapError
from tests.test_btf_oracle import VMLINUX, bpftool_types

ROOT = Path(__file__).resolve().parent.parent
kernel_test = pytest.mark.kernel


def req(text: str) -> Requirement:
    return Requirement.parse(text)


@cache
def vmlinux_btf() -> tuple[dict[str, set[int]], dict[int, str], set[int]]:
    """bpftool's reading of vmlinux BTF: ids by "KIND name", FUNC names by id, ids tagged bpf_kfunc."""
    if not os.path.exists(VMLINUX):
        pytest.skip(f"the kernel has no BTF ({VMLINUX})")
    by_name: dict[str, set[int]] = {}
    funcs: dict[int, str] = {}
    tagged: set[int] = set()
    for t in bpftool_types(VMLINUX):
        by_name.setdefault(f"{t['kind']} {t['name']}", set()).add(t["id"])
        if t["kind"] == "FUNC":
            funcs[t["id"]] = t["name"]
        elif t["kind"] == "DECL_TAG" and t["name"] == "bpf_kfunc" and t["component_idx"] == -1:
            tagged.add(t["type_id"])
    return by_name, funcs, tagged


# --- the capability table -------------------------------------------------------------------


def test_capability_names_are_one_table_with_aliases_of_its_names() -> None:
    assert set(CAPABILITIES) == set(KERNEL_FEATURES) | set(ATTACH_KINDS)
    assert not set(KERNEL_FEATURES) & set(ATTACH_KINDS)
    assert set(ALIASES.values()) <= set(CAPABILITIES)
    assert not set(ALIASES) & set(CAPABILITIES)


@kernel_test
def test_every_capability_dynbpf_probe_lists_is_a_requirement_with_the_same_answer() -> None:
    report = collect(helpers=False)
    listed = {**report.kernel_features, **report.attach}
    assert list(listed) == list(CAPABILITIES)
    for name, support in listed.items():
        answer = check(req(name))
        assert answer.name == name
        assert answer.supported == support.supported, name
        assert answer.how == f"{name}: {support.how}"


@kernel_test
def test_trampolines_are_answered_by_their_probe_with_its_evidence() -> None:
    probe = attach.trampolines()
    answer = check(req("capability:trampolines"))
    assert answer.supported == probe.supported
    assert probe.how in answer.how
    assert answer.how.startswith("trampolines: ")
    for alias in ("fentry", "fexit"):
        same = check(req(alias))
        assert (same.name, same.supported) == (alias, probe.supported)
        assert same.how == f"{alias} (trampolines): {probe.how}"


@kernel_test
def test_program_and_map_types_are_answered_by_their_probes() -> None:
    for text, probe in (
        ("program:kprobe", prog_type(ProgType.KPROBE)),
        ("program:tracing", prog_type(ProgType.TRACING)),
        ("map:ringbuf", map_type(MapType.RINGBUF)),
        ("map:task_storage", map_type(MapType.TASK_STORAGE)),
    ):
        answer = check(req(text))
        assert (answer.name, answer.supported) == (text, probe.supported)
        assert answer.how.endswith(f": {probe.how}")
    assert check(req("map:ringbuf")).supported == check(req("ringbuf")).supported


@kernel_test
def test_a_helper_is_answered_per_program_type_by_name_with_or_without_bpf_prefix() -> None:
    task_btf = HELPER_NAMES.index("get_current_task_btf")
    probe = helper(ProgType.KPROBE, task_btf)
    for text in ("helper:kprobe/bpf_get_current_task_btf", "helper:kprobe/get_current_task_btf"):
        answer = check(req(text))
        assert answer.supported == probe.supported
        assert answer.how == f"helper kprobe/bpf_get_current_task_btf: {probe.how}"
    # a pair the verifier decides the other way round than the first, if this kernel has one
    refused = helper(ProgType.SOCKET_FILTER, HELPER_NAMES.index("override_return"))
    answer = check(req("helper:socket_filter/override_return"))
    assert answer.supported == refused.supported
    assert refused.how in answer.how


# --- kernel BTF: functions, kfuncs, types --------------------------------------------------


@kernel_test
def test_a_function_is_found_in_kernel_btf_where_bpftool_finds_it() -> None:
    by_name, _, _ = vmlinux_btf()
    ids = by_name.get("FUNC do_exit", set())
    answer = check(req("function:do_exit"))
    assert answer.supported == bool(ids)
    assert answer.how == f"function do_exit: FUNC in vmlinux BTF [id {min(ids)}]"
    missing = check(req("function:dynbpf_no_such_function"))
    assert not missing.supported
    assert missing.how.startswith("function dynbpf_no_such_function: no FUNC dynbpf_no_such_function in vmlinux BTF")


@kernel_test
def test_a_kfunc_is_a_function_with_the_kfunc_tag_where_the_kernel_tags_them() -> None:
    by_name, funcs, tagged = vmlinux_btf()
    kfuncs = {funcs[i] for i in tagged}
    for name in ("bpf_task_acquire", "bpf_obj_new_impl", *sorted(kfuncs)[:3]):
        answer = check(req(f"kfunc:{name}"))
        assert answer.supported == (name in kfuncs if tagged else f"FUNC {name}" in by_name), answer.how
        if answer.supported:
            assert f"kfunc {name}: FUNC in vmlinux BTF" in answer.how
    plain = check(req("kfunc:do_exit"))  # a kernel function, never a kfunc
    if tagged:
        assert not plain.supported
        assert "without the bpf_kfunc decl tag" in plain.how
    else:
        assert plain.supported == ("FUNC do_exit" in by_name)
        assert "presence is all it shows" in plain.how
    assert not check(req("kfunc:dynbpf_no_such_kfunc")).supported


@kernel_test
def test_a_type_is_found_by_keyword_and_name_in_kernel_btf() -> None:
    by_name, _, _ = vmlinux_btf()
    for text, key in (
        ("type:struct task_struct", "STRUCT task_struct"),
        ("type:union task_struct", "UNION task_struct"),
        ("type:enum bpf_prog_type", "ENUM bpf_prog_type"),
        ("type:typedef u32", "TYPEDEF u32"),
        ("type:struct dynbpf_no_such_struct", "STRUCT dynbpf_no_such_struct"),
    ):
        answer = check(req(text))
        assert answer.supported == (key in by_name), text
        if answer.supported:
            kind = key.split()[0]
            assert answer.how == f"{text.replace(':', ' ', 1)}: {kind} in vmlinux BTF [id {min(by_name[key])}]"


@kernel_test
def test_kernel_btf_answers_are_cached_until_the_probes_cache_is_cleared() -> None:
    first = check(req("function:do_exit"))
    assert check(req("function:do_exit")) is first
    _probes.clear_cache()
    again = check(req("function:do_exit"))
    assert again is not first
    assert again == first


# --- tracepoints --------------------------------------------------------------------------


@kernel_test
def test_a_tracepoint_exists_where_tracefs_has_its_id() -> None:
    root = fs.tracefs_root()
    assert root is not None  # conftest mounts it
    path = f"{root}/events/syscalls/sys_enter_getpid/id"
    answer = check(req("tracepoint:syscalls/sys_enter_getpid"))
    assert answer.supported == os.path.exists(path)
    if answer.supported:
        tp_id = Path(path).read_text().strip()
        assert answer.how == f"tracepoint syscalls/sys_enter_getpid: {path} exists (id {tp_id})"
    missing = check(req("tracepoint:sched/dynbpf_no_such_event"))
    assert not missing.supported
    assert f"{root}/events/sched/dynbpf_no_such_event/id does not exist" in missing.how


# --- declaration errors, found without the kernel -----------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("trampoline", "no capability 'trampoline' (did you mean 'trampolines'"),
        ("kprobes", "did you mean 'kprobe'"),
        ("capability:hash", "'hash' is a map type: require it as 'map:hash'"),
        ("sched_cls", "'sched_cls' is a program type: require it as 'program:sched_cls'"),
        ("program:kprobes", "no program type 'kprobes' (did you mean 'kprobe'"),
        ("program:KPROBE", "no program type 'KPROBE' (did you mean 'kprobe'"),
        ("program:unspec", "no program type 'unspec'"),
        ("map:ringbuff", "no map type 'ringbuff' (did you mean 'ringbuf'"),
        ("helper:kprobe/get_current_task_bt", "'get_current_task_bt' (did you mean 'bpf_get_current_task_btf'"),
        ("helper:kprob/map_lookup_elem", "no program type 'kprob' (did you mean 'kprobe'"),
        ("helper:kprobe", "helper needs a helper a program type may call: <program type>/<helper>"),
        ("tracepoint:sched_process_exec", "tracepoint needs a tracepoint in tracefs: <category>/<event>"),
        ("tracepoint:sched/../id", "tracepoint needs"),
        ("function:do exit", "function needs a kernel function"),
        ("kfunc:bpf-task", "kfunc needs"),
        ("type:task_struct", "type needs a type in the kernel's BTF: struct|union|enum|typedef <name>"),
        ("type:class task_struct", "type needs"),
    ],
)
def test_an_unknown_or_malformed_name_is_a_declaration_error_with_suggestions(text: str, says: str) -> None:
    with pytest.raises(FeatureMapError, match=re.escape(says)) as raised:
        validate(req(text), where="features.toml:3")
    assert raised.value.where == "features.toml:3"
    assert str(raised.value).startswith(f"features.toml:3: requirement {str(req(text))!r}: ")


@kernel_test
def test_check_raises_the_declaration_error_too() -> None:
    with pytest.raises(FeatureMapError, match="did you mean 'trampolines'"):
        check(req("trampoline"))


def test_a_requirement_of_an_unknown_kind_built_directly_is_a_declaration_error() -> None:
    with pytest.raises(FeatureMapError, match="unknown kind 'symbol'"):
        validate(Requirement("symbol", "do_exit"))


def test_validate_takes_every_kind_without_reading_kernel_btf() -> None:
    kernel.clear_cache()
    variant = Variant(
        ("a",),
        requires=(
            "trampolines",
            "fexit",
            "program:lsm",
            "map:task_storage",
            "helper:lsm/bpf_get_current_task_btf",
            "function:dynbpf_absent_here_but_well_formed",
            "kfunc:bpf_task_acquire",
            "tracepoint:sched/sched_process_exec",
            "type:struct task_struct",
        ),
    )
    for r in variant.requires:
        validate(r)
    assert not kernel._vmlinux  # nothing asked the kernel's BTF


def test_the_docs_list_every_capability_and_alias() -> None:
    text = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("features*.md")))
    for name in [*CAPABILITIES, *ALIASES]:
        assert f"`{name}`" in text, name
