"""The three ways to declare an application's features build one model (issue 14).

tests/bpf/features_decl.bpf.c declares its map in BTF decl tags (dynbpf.h);
the same map is written here in Python and in TOML, and all three compare
equal. Every error in a declaration says where: ``file:line`` for TOML, the
decl tag and its program for tags. An object with tags loads on a kernel
without BTF_KIND_DECL_TAG (the tags sanitised away, as libbpf does) and, on
one with it, hands the kernel the tags libbpf would.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dynbpf
from dynbpf import Feature, FeatureMap, FeatureMapError, Hook, Variant
from dynbpf._btf.kinds import Kind
from dynbpf._btf.spec import Spec
from dynbpf._btf.types import DeclTag, Type
from dynbpf._elf.spec import ObjectSpec
from dynbpf._features import toml as toml_module
from dynbpf._features.tags import KEYS
from dynbpf._features.toml import beside
from dynbpf._maps.map import btf_by_id
from dynbpf._prepare.btf_sanitize import BtfSupport
from dynbpf._runtime.collection import KernelView
from dynbpf._sys import commands
from tests.bpfbuild import build

OBJECT = "features_decl"
FILE = f"{OBJECT}.bpf.o"

#: the map features_decl.bpf.c declares in tags, declared in Python
PYTHON = FeatureMap.of(
    [
        Feature("process", hooks=["exec"], best_effort=["exit"]),
        Feature("files", hooks=["exec", "open"], requires=["process"]),
    ],
    [
        Hook(
            "exec",
            [
                Variant(["exec_fexit"], ["trampolines"]),
                Variant(["exec_tp_btf"], ["tracing"]),
                Variant(
                    ["exec_tp"],
                    ["tracepoint:sched/sched_process_exec"],
                    {"exec_tp": {"category": "sched", "event": "sched_process_exec"}},
                    name="tracepoint",
                ),
            ],
        ),
        Hook("exit", ["exit_tp"]),
        Hook(
            "open",
            [
                Variant(["open_fexit"], ["trampolines"]),
                Variant(
                    ["open_entry", "open_return"], ["kprobe", "helper:kprobe/bpf_get_current_task_btf"], name="kprobes"
                ),
            ],
        ),
    ],
)

#: ... and in TOML, in both of its ways of writing a list of variants
TOML = """\
# the map features_decl.bpf.c declares in tags
[features.process]
hooks = ["exec"]
best_effort = ["exit"]

[features.files]
hooks = ["exec", "open"]
requires = ["process"]

[hooks.exec]
variants = [
  { programs = ["exec_fexit"], requires = ["trampolines"] },
  { programs = ["exec_tp_btf"], requires = ["tracing"] },
  { programs = ["exec_tp"], name = "tracepoint", requires = ["tracepoint:sched/sched_process_exec"], \
attach = { exec_tp = { category = "sched", event = "sched_process_exec" } } },
]

[hooks.exit]
variants = ["exit_tp"]

[[hooks.open.variants]]
programs = "open_fexit"
requires = ["trampolines"]

[[hooks.open.variants]]
name = "kprobes"
programs = ["open_entry", "open_return"]
requires = ["kprobe", "helper:kprobe/bpf_get_current_task_btf"]
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The line of ``text`` where ``needle`` appears for the ``nth`` time."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[nth - 1]


@pytest.fixture(scope="module")
def obj() -> Path:
    return build(OBJECT)


# --- one map, three ways -----------------------------------------------------------------------


@pytest.mark.needs_clang
def test_python_toml_and_decl_tags_declare_the_same_map(obj: Path, tmp_path: Path) -> None:
    toml_file = beside(tmp_path / FILE)
    toml_file.write_text(TOML)
    from_toml = FeatureMap.from_toml(toml_file)
    from_tags = FeatureMap.from_object(obj)
    assert from_tags is not None
    assert PYTHON == from_toml == from_tags
    assert FeatureMap.from_toml(TOML) == PYTHON  # text, not a path
    odd = beside(tmp_path / "mode=strict.toml")  # a file name with '=' is still a path when the file exists
    odd.write_text(TOML)
    assert FeatureMap.from_toml(str(odd)) == PYTHON
    assert FeatureMap.from_object(dynbpf.read(obj)) == PYTHON  # a spec, not a path
    assert FeatureMap.from_object(obj.read_bytes()) == PYTHON  # the object's bytes
    for fm in (PYTHON, from_toml, from_tags):
        fm.check(dynbpf.read(obj).programs)
    # where each was declared is kept for messages, and takes no part in equality
    assert (PYTHON.source, from_toml.source, from_tags.source) == ("", str(toml_file), FILE)
    assert from_tags.hooks["exec"].variants[2].where == f"{FILE}: decl tag 'dynbpf:variant=tracepoint' on exec_tp"


def test_toml_places_every_table_key_and_variant_on_its_line() -> None:
    fm = FeatureMap.from_toml(TOML, name="agent.features.toml")

    def at(needle: str, nth: int = 1) -> str:
        return f"agent.features.toml:{line_of(TOML, needle, nth)}"

    assert fm.source == "agent.features.toml"
    assert fm.features["process"].where == at("[features.process]")
    assert fm.features["files"].where == at("[features.files]")
    assert fm.hooks["exec"].where == at("[hooks.exec]")
    assert [v.where for v in fm.hooks["exec"].variants] == [at("exec_fexit"), at("exec_tp_btf"), at('"exec_tp"')]
    assert fm.hooks["exit"].variants[0].where == at('"exit_tp"')
    assert fm.hooks["open"].where == at("[[hooks.open.variants]]")
    assert [v.where for v in fm.hooks["open"].variants] == [at("[[hooks.open.variants]]", n) for n in (1, 2)]


def test_the_toml_beside_an_object() -> None:
    assert beside("x/agent.bpf.o") == Path("x/agent.features.toml")
    assert beside(Path("/a/b/agent.o")) == Path("/a/b/agent.features.toml")
    assert beside("agent.elf") == Path("agent.features.toml")
    assert beside("x/.bpf.o") == Path("x/.bpf.features.toml")  # nothing before the suffix: only the last one goes


def test_a_missing_toml_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "agent.features.toml"
    with pytest.raises(FeatureMapError, match="cannot read the feature map: No such file") as e:
        FeatureMap.from_toml(missing)
    assert e.value.where == str(missing)
    with pytest.raises(TypeError, match="path or TOML text"):
        FeatureMap.from_toml(42)  # type: ignore[arg-type]


# --- TOML errors: each names file:line -----------------------------------------------------------

VALID = """\
[features.process]
hooks = ["exec"]

[hooks.exec]
variants = ["exec_tp"]
"""


def _edit(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


TOML_ERRORS = {
    "syntax": (_edit('hooks = ["exec"]', 'hooks = ["exec",,]'), 2, r"not valid TOML: .*line 2"),
    "unknown top-level table": (VALID + "[feature.files]\nhooks = []\n", 6, r"unknown key 'feature' .*'features'"),
    "unknown feature key": (_edit("hooks = ", "hook = "), 2, r"feature 'process': unknown key 'hook' .*'hooks'"),
    "unknown variant key": (
        _edit('["exec_tp"]', '[\n  "exec_fexit",\n  { programs = ["exec_tp"], require = ["tracing"] },\n]'),
        7,
        r"hook 'exec', variant 2: unknown key 'require' \(did you mean 'requires'\?\)",
    ),
    "a list given a string": (_edit('hooks = ["exec"]', 'hooks = "exec"'), 2, r"hooks must be a list of strings"),
    "a list of numbers": (_edit('hooks = ["exec"]', 'hooks = [\n  "exec",\n  3,\n]'), 4, r"lists 3, not a string"),
    "no variants": (_edit('variants = ["exec_tp"]', 'variant = ["exec_tp"]'), 5, r"unknown key 'variant'"),
    "variants missing": (_edit('variants = ["exec_tp"]', ""), 4, r"hook 'exec' has no 'variants'"),
    "bad requirement": (
        _edit('["exec_tp"]', '[\n  { programs = "exec_tp", requires = ["tracing", "helpr:x"] },\n]'),
        6,
        r"unknown kind 'helpr'",
    ),
    "variant without programs": (_edit('["exec_tp"]', '[{ requires = ["tracing"] }]'), 5, r"names no programs"),
    "attach for another program": (
        _edit('["exec_tp"]', '[{ programs = "exec_tp", attach = { exec_fexit = {} } }]'),
        5,
        r"attach targets for 'exec_fexit', which is not one of \['exec_tp'\]",
    ),
    "unknown hook": (_edit('hooks = ["exec"]', 'hooks = ["exce"]'), 1, r"unknown hook 'exce' \(did you mean 'exec'"),
    "hook in no feature": (VALID + '\n[hooks.exit]\nvariants = ["exit_tp"]\n', 7, r"hook 'exit' is in no feature"),
    "program in two hooks": (
        VALID + '\n[hooks.exit]\nvariants = ["exec_tp"]\n',
        7,
        r"program 'exec_tp' is in two hooks, 'exec' and 'exit'",
    ),
    "two variants alike": (_edit('["exec_tp"]', '["exec_tp", { programs = "x", name = "exec_tp" }]'), 4, "alike"),
    "requires an unknown feature": (
        _edit('hooks = ["exec"]', 'hooks = ["exec"]\nrequires = ["proces"]'),
        1,
        r"requires unknown feature 'proces' \(did you mean 'process'",
    ),
    "cycle": (
        _edit('hooks = ["exec"]', 'hooks = ["exec"]\nrequires = ["files"]')
        + '\n[features.files]\nhooks = ["exec"]\nrequires = ["process"]\n',
        1,
        r"features require each other in a cycle: process -> files -> process",
    ),
    "bad feature name": (_edit("[features.process]", '[features."pro cess"]'), 1, r"feature name 'pro cess'"),
}


@pytest.mark.parametrize(("text", "line", "message"), TOML_ERRORS.values(), ids=TOML_ERRORS)
def test_a_toml_error_names_file_and_line(text: str, line: int, message: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.features.toml"
    path.write_text(text)
    with pytest.raises(FeatureMapError, match=message) as e:
        FeatureMap.from_toml(path)
    assert e.value.where == f"{path}:{line}", str(e.value)
    assert str(e.value).startswith(f"{path}:{line}: ")


@pytest.mark.needs_clang
def test_a_toml_map_naming_a_program_the_object_lacks_names_the_line(obj: Path) -> None:
    text = TOML.replace('programs = ["exec_tp_btf"]', 'programs = ["exec_tpbtf"]')
    fm = FeatureMap.from_toml(text, name="agent.features.toml")
    with pytest.raises(FeatureMapError, match=r"no program 'exec_tpbtf' in the object \(did you mean 'exec_tp_btf'"):
        fm.check(dynbpf.read(obj).programs)
    with pytest.raises(FeatureMapError) as e:
        fm.check(dynbpf.read(obj).programs)
    assert e.value.where == f"agent.features.toml:{line_of(text, 'exec_tpbtf')}"


def test_toml_lines_survive_strings_comments_and_quoted_keys() -> None:
    text = '''\
# a comment with [brackets] and "quotes" = {
[features."process"]   # trailing [comment]
hooks = [ "exec", ] # ]
best_effort = [
  """multi
line ] , { """,
]
[ hooks . 'exec' ]
variants = [ 'exec_tp', { programs = "a\\"b", name = 'x]' } ]
'''
    with pytest.raises(FeatureMapError, match="hook 'multi") as e:
        FeatureMap.from_toml(text, name="f.toml")
    assert e.value.where == "f.toml:2"
    fixed = text.replace('"""multi\nline ] , { """', '"exec2"')
    with pytest.raises(FeatureMapError, match="unknown hook 'exec2'") as e:
        FeatureMap.from_toml(fixed, name="f.toml")
    fixed = fixed.replace('best_effort = [\n  "exec2",\n]\n', "")
    fm = FeatureMap.from_toml(fixed, name="f.toml")
    assert [v.where for v in fm.hooks["exec"].variants] == ["f.toml:5", "f.toml:5"]
    assert fm.hooks["exec"].variants[1].programs == ('a"b',)


# --- decl tags ------------------------------------------------------------------------------------


@pytest.mark.needs_clang
def test_an_object_without_dynbpf_tags_has_no_map() -> None:
    assert FeatureMap.from_object(build("attach")) is None


Edits = dict[tuple[str, str], str]  # (tag, function) -> the tag's new text
Adds = list[tuple[str, str, int]]  # (tag, function or variable, component_idx)


def _with_tags(spec: ObjectSpec, edit: Edits, add: Adds) -> ObjectSpec:
    """``spec`` with its BTF's decl tags edited in place and new ones appended; type ids stay as they were."""
    btf = spec.btf
    assert btf is not None
    names = {type_id: getattr(t, "name", "") for type_id, t in btf.types()}
    types: list[Type] = [
        dataclasses.replace(t, name=edit[t.name, names[t.type]])
        if isinstance(t, DeclTag) and (t.name, names[t.type]) in edit
        else t
        for _, t in btf.types()
    ]
    for text, target, component in add:
        if target in spec.functions:  # by the function's own BTF FUNC: names may repeat in a linked object
            type_id = spec.functions[target].func_type_id
        else:
            (type_id,) = btf.find(target, Kind.VAR)
        types.append(DeclTag(text, type_id, component))
    return dataclasses.replace(spec, btf=Spec.from_types(types))


#: (tag, the program it is added to, the message): the error's ``where`` names that tag on that program
TAG_ERRORS = {
    "unknown key": ("dynbpf:hok=exec", "exec_tp", r"unknown dynbpf tag 'hok' \(did you mean 'dynbpf:hook'\?\)"),
    "attach without a keyword": ("dynbpf:attach=1", "exec_tp", r"did you mean 'dynbpf:attach.<keyword>'"),
    "prefer not a number": ("dynbpf:prefer=soon", "open_fexit", r"dynbpf:prefer takes an integer"),
    "bad requirement": ("dynbpf:requires=helpr:x", "exec_tp", r"unknown kind 'helpr'"),
    "a value where none is taken": ("dynbpf:best_effort=yes", "exit_tp", r"takes no value"),
    "no value": ("dynbpf:hook", "exec_tp_btf", r"dynbpf:hook needs a value"),
    "attach keyword": ("dynbpf:attach.1x=3", "exec_tp", r"must be a Python identifier"),
    "second hook": ("dynbpf:hook=other", "exec_fexit", r"exec_fexit has a second dynbpf:hook"),
    "bad variant name": ("dynbpf:variant=a b", "exit_tp", r"variant name 'a b'"),
    "feature_requires shape": ("dynbpf:feature_requires=files", "exit_tp", r"takes '<feature>:<required feature>'"),
    "feature_requires unknown": (
        "dynbpf:feature_requires=files:proces",
        "exit_tp",
        r"declares feature 'proces' \(did you mean 'process'\?\)",
    ),
    "cycle": ("dynbpf:feature_requires=process:files", "exit_tp", r"cycle: process -> files -> process"),
    "on a parameter": ("dynbpf:hook=exec", "exec_tp", r"not on its parameter 0"),
    "best-effort in no feature": ("dynbpf:best_effort", "exec_tp", r"exec_tp is best-effort in no feature"),
    "variant disagrees on prefer": (
        "dynbpf:prefer=3",
        "open_return",
        r"variant 'kprobes' disagree on dynbpf:prefer: 1 at .*open_entry, 3 here",
    ),
}


@pytest.mark.needs_clang
@pytest.mark.parametrize(("tag", "program", "message"), TAG_ERRORS.values(), ids=TAG_ERRORS)
def test_a_decl_tag_error_names_the_tag_and_its_program(obj: Path, tag: str, program: str, message: str) -> None:
    component = 0 if "parameter" in message else -1
    spec = _with_tags(dynbpf.read(obj), {}, [(tag, program, component)])
    with pytest.raises(FeatureMapError, match=message) as e:
        FeatureMap.from_object(spec, name=FILE)
    assert e.value.where == f"{FILE}: decl tag {tag!r} on {program}", str(e.value)


@pytest.mark.needs_clang
@pytest.mark.parametrize(
    ("target", "what"),
    [("count_event", "subprogram count_event"), ("events", "VAR 'events'")],
    ids=["subprogram", "variable"],
)
def test_a_dynbpf_tag_off_a_program_names_what_it_is_on(obj: Path, target: str, what: str) -> None:
    spec = _with_tags(dynbpf.read(obj), {}, [("dynbpf:feature=process", target, -1)])
    with pytest.raises(FeatureMapError, match=rf"dynbpf tags go on programs .*, not on {what}") as e:
        FeatureMap.from_object(spec, name=FILE)
    assert e.value.where == f"{FILE}: decl tag 'dynbpf:feature=process' on {what}"


@pytest.mark.needs_clang
def test_a_linked_object_carries_the_tags_of_all_its_files() -> None:
    """The program ``handle`` of one file and the static ``handle`` of the other have one name in BTF:
    tags are matched to programs by the program's own FUNC, and a subprogram is named as the object names it."""
    spec = dynbpf.read(build("features_linked"))
    assert {"handle", "handle@files.bpf.c"} <= set(spec.functions)
    expected = FeatureMap.of(
        [Feature("files", hooks=["open"], requires=["process"]), Feature("process", hooks=["exit"])],
        {"open": ["open_tp"], "exit": ["handle"]},
    )
    assert FeatureMap.from_object(spec) == expected
    bad = _with_tags(spec, {}, [("dynbpf:feature=files", "handle@files.bpf.c", -1)])
    with pytest.raises(FeatureMapError, match=r"not on subprogram handle@files\.bpf\.c") as e:
        FeatureMap.from_object(bad, name="agent.bpf.o")
    assert e.value.where == "agent.bpf.o: decl tag 'dynbpf:feature=files' on subprogram handle@files.bpf.c"


@pytest.mark.needs_clang
def test_a_hook_both_required_and_best_effort_in_one_feature_names_both_tags(obj: Path) -> None:
    add = [("dynbpf:feature=process", "exec_tp", -1), ("dynbpf:best_effort", "exec_tp", -1)]
    with pytest.raises(FeatureMapError, match="hook 'exec' is required in feature 'process' by") as e:
        FeatureMap.from_object(_with_tags(dynbpf.read(obj), {}, add), name=FILE)
    assert "decl tag 'dynbpf:feature=process' on exec_fexit, but best-effort here" in str(e.value)
    assert e.value.where == f"{FILE}: decl tag 'dynbpf:best_effort' on exec_tp"


@pytest.mark.needs_clang
def test_a_tagged_program_whose_hook_is_in_no_feature_is_named(obj: Path) -> None:
    """open_return moves to a hook of its own that no program puts in a feature."""
    spec = _with_tags(dynbpf.read(obj), {("dynbpf:hook=open", "open_return"): "dynbpf:hook=lonely"}, [])
    with pytest.raises(FeatureMapError, match="program 'open_return' is in no hook of any feature") as e:
        FeatureMap.from_object(spec, name=FILE)
    assert e.value.where == f"{FILE}: decl tag 'dynbpf:hook=lonely' on open_return"


@pytest.mark.needs_clang
def test_tags_name_the_object_by_its_file_or_spec_name(obj: Path) -> None:
    spec = _with_tags(dynbpf.read(obj), {}, [("dynbpf:hok=exec", "exec_tp", -1)])
    with pytest.raises(FeatureMapError) as e:
        FeatureMap.from_object(spec)
    assert e.value.where == f"{OBJECT}: decl tag 'dynbpf:hok=exec' on exec_tp"


@pytest.mark.needs_clang
def test_every_tag_key_is_exercised() -> None:
    source = (Path(__file__).parent / "bpf" / f"{OBJECT}.bpf.c").read_text()
    header = (dynbpf.include_dir() / "dynbpf.h").read_text()
    for key in KEYS:
        assert f'"dynbpf:{key}' in header, key
        macro = re.search(rf'#define (DYNBPF_\w+)\W.*"dynbpf:{key}', header)
        assert macro is not None, key
        assert macro.group(1) in source, key


# --- the tags on their way to the kernel ---------------------------------------------------------


def _loaded_btf(coll: dynbpf.Collection, program: str) -> Spec:
    """The object BTF the kernel holds for ``program``, read back by id."""
    p = coll.programs[program]
    p.load()
    return btf_by_id(int(commands.prog_info(p.fd).btf_id))


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_an_object_with_tags_loads_on_a_kernel_without_decl_tag(obj: Path) -> None:
    """Tags are sanitised into 1-byte INTs of the same name, as libbpf does; the program loads and runs."""
    old = KernelView(btf_support=BtfSupport.ALL.without("decl_tag"))
    with dynbpf.open(obj, kernel=old) as coll:
        btf = _loaded_btf(coll, "exec_tp")
        assert not [t for _, t in btf.types() if t.kind == Kind.DECL_TAG]
        ints = {t.name for _, t in btf.types() if t.kind == Kind.INT}
        assert {"dynbpf:hook=exec", "dynbpf:attach.category=sched", "other:not_ours"} <= ints
    assert FeatureMap.from_object(obj) == PYTHON  # the object itself keeps its tags


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_with_decl_tag_support_the_kernel_gets_the_tags_as_libbpf_sends_them(obj: Path) -> None:
    from tests.test_prepare_btf import libbpf_btf

    own = dynbpf.read(obj).btf
    assert own is not None
    with dynbpf.open(obj, kernel=KernelView(btf_support=BtfSupport.ALL)) as coll:
        loaded = _loaded_btf(coll, "exec_tp")
    tags = {(t.name, t.type, t.component_idx) for _, t in own.types() if isinstance(t, DeclTag)}
    assert {(t.name, t.type, t.component_idx) for _, t in loaded.types() if isinstance(t, DeclTag)} == tags
    assert loaded.encode() == libbpf_btf(obj)


def test_the_header_ships_inside_the_package() -> None:
    """pyproject packages src/dynbpf whole, so the header is in the wheel beside the code that reads its tags."""
    header = dynbpf.include_dir() / "dynbpf.h"
    assert header.is_file()
    assert header.resolve().is_relative_to(Path(dynbpf.__file__).resolve().parent)


def test_the_toml_in_the_docs_is_the_map_of_the_fixture() -> None:
    """docs/features.md shows this file's map in TOML; its block must declare exactly that map."""
    doc = Path(__file__).resolve().parent.parent / "docs" / "features.md"
    (block,) = re.findall(r"^```toml\n(.*?)^```$", doc.read_text(), re.S | re.M)
    assert FeatureMap.from_toml(block, name="docs/features.md") == PYTHON


_TRICKY = st.text(alphabet="ab]}[{#,=\"'\\. \t", max_size=8)
_KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,5}", fullmatch=True)


@st.composite
def _documents(draw: st.DrawFn) -> tuple[str, dict[tuple[str | int, ...], int]]:
    """A TOML document of tables, keys and multi-line arrays written in varied styles, and the line of each."""
    lines: list[str] = []
    expected: dict[tuple[str | int, ...], int] = {}

    def emit(text: str, path: tuple[str | int, ...] | None = None) -> None:
        if path is not None:
            expected.setdefault(path, len(lines) + 1)
        lines.extend(text.split("\n"))

    for table in draw(st.lists(_KEY, min_size=1, max_size=3, unique=True)):
        spelt = f'"{table}"' if draw(st.booleans()) else table
        emit(f"[ hooks . {spelt} ]  # [{table}]", ("hooks", table))
        for key in draw(st.lists(_KEY, min_size=1, max_size=3, unique=True)):
            values = draw(st.lists(_TRICKY, max_size=3))
            emit(f"{key} = [ # opens", ("hooks", table, key))
            for i, v in enumerate(values):
                style = draw(st.sampled_from(["basic", "literal", "multi", "inline"]))
                if style == "literal" and "'" not in v and "\n" not in v:
                    text = f"'{v}'"
                elif style == "multi":
                    text = '"""\n' + v.replace("\\", "\\\\").replace('"', '\\"') + '\nx"""'
                elif style == "inline":
                    text = '{ k = "' + v.replace("\\", "\\\\").replace('"', '\\"') + '", n = 1 }'
                else:
                    text = '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                emit(f"  {text},  # {v!r}", ("hooks", table, key, i))
            emit("]")
    return "\n".join(lines) + "\n", expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_toml_lines_are_found_in_any_style(document: tuple[str, dict[tuple[str | int, ...], int]]) -> None:
    text, expected = document
    tomllib.loads(text)  # the generator writes valid TOML
    found = toml_module.key_lines(text)
    assert {path: found.get(path) for path in expected} == expected
