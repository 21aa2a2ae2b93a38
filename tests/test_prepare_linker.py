"""Subprogram linking: libbpf's layout, and every call and callback pointing at its callee."""

from __future__ import annotations

import pytest

from dynbpf._asm.slots import SlotMap
from dynbpf._elf import read
from dynbpf._elf.spec import FunctionPointer, SubprogramCall
from dynbpf._prepare.linker import link
from tests.bpfbuild import build, fixture_names
from tests.helpers import compile_snippet

FIXTURE_NAMES = fixture_names()

pytestmark = [pytest.mark.needs_clang]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_call_lands_on_its_callee(name: str) -> None:
    spec = read(build(name))
    for program in spec.programs:
        linked = link(spec, program)
        slots = SlotMap.of(linked.instructions)
        starts = {p.function.name: p.start for p in linked.functions}
        assert linked.functions[0].function.name == program
        assert sum(len(p.function.instructions) for p in linked.functions) == len(linked.instructions)
        for placed in linked.functions:
            for r in placed.function.relocations:
                if isinstance(r, SubprogramCall | FunctionPointer):
                    at = placed.start + r.index
                    insn = linked.instructions[at]
                    assert slots.index(insn.jump_target(slots.slot(at))) == starts[r.function]
        assert not any(isinstance(r, SubprogramCall | FunctionPointer) for _, r in linked.relocations)
        for position, _ in linked.line_info:
            assert 0 <= position < len(linked.instructions)
        if spec.btf is not None:
            assert [p for p, _ in linked.func_info] == [p.start for p in linked.functions]


def test_layout_is_depth_first_in_order_of_first_reference() -> None:
    obj = compile_snippet(
        """
static __noinline int d(int x) { return x * 3; }
static __noinline int c2(int x) { return x - 1; }
static __noinline int c1(int x) { return d(x) + c2(x); }
static long cb(u32 i, void *ctx) { return d(i) & 1; }
SEC("xdp") int p(struct xdp_md *ctx)
{
    int v = c1(ctx->ingress_ifindex);
    bpf_loop(2, cb, 0, 0);
    return c2(v) & 1;
}
""",
    )
    spec = read(obj)
    linked = link(spec, "p")
    assert [f.function.name for f in linked.functions] == ["p", "c1", "d", "c2", "cb"]
    # a subprogram called twice is linked once
    again = link(spec, "p")
    assert again == linked
