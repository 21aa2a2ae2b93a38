"""Attach targets of tp_btf/fentry/lsm/iter programs: the kernel BTF id a section's name leads to."""

from __future__ import annotations

import pytest

from dynbpf._btf import NameNotFound, Spec, kernel
from dynbpf._btf.kernel import KernelBtf
from dynbpf._btf.kinds import Kind
from dynbpf._btf.types import Func, FuncLinkage, FuncProto, Typedef
from dynbpf._elf.sections import program_kind
from dynbpf._prepare.attach_target import KernelTarget, find_kernel_target
from dynbpf.errors import RelocationError
from tests.helpers import VMLINUX, require


def _kernel() -> KernelBtf:
    """A vmlinux stand-in with ``in_vmlinux``, and module ``mod`` with ``in_mod`` and a tp_btf typedef."""
    base = Spec.from_types([FuncProto(0, ()), Func("in_vmlinux", 1, FuncLinkage.GLOBAL)])
    mod = Spec.from_types(
        [Func("in_mod", 1, FuncLinkage.GLOBAL), Typedef("btf_trace_mod_event", 1)],
        base=base,
    )
    return KernelBtf(base, {"mod": mod})


def test_a_target_is_looked_up_in_vmlinux_then_in_the_modules() -> None:
    btf = _kernel()
    assert find_kernel_target(program_kind("fentry/in_vmlinux"), program="p", kernel=btf) == KernelTarget(2)
    assert find_kernel_target(program_kind("fentry/in_mod"), program="p", kernel=btf) == KernelTarget(3, "mod")
    assert find_kernel_target(program_kind("tp_btf/mod_event"), program="p", kernel=btf) == KernelTarget(4, "mod")


def test_module_colon_name_looks_only_there() -> None:
    btf = _kernel()
    assert find_kernel_target(program_kind("fexit/mod:in_mod"), program="p", kernel=btf) == KernelTarget(3, "mod")
    with pytest.raises(RelocationError, match=r"'in_mod' \(FUNC\) not found in vmlinux BTF$"):
        find_kernel_target(program_kind("fentry/vmlinux:in_mod"), program="p", kernel=btf)
    with pytest.raises(RelocationError, match=r"'in_vmlinux' \(FUNC\) not found in module 'mod' BTF$"):
        find_kernel_target(program_kind("fentry/mod:in_vmlinux"), program="p", kernel=btf)
    with pytest.raises(NameNotFound, match="other"):
        find_kernel_target(program_kind("fentry/other:in_mod"), program="p", kernel=btf)
    with pytest.raises(RelocationError, match=r"'nothing' \(FUNC\) not found in vmlinux or any module BTF$"):
        find_kernel_target(program_kind("fentry/nothing"), program="p", kernel=btf)


def test_the_running_kernel_is_the_default() -> None:
    vmlinux = kernel.vmlinux()
    require(None if vmlinux is not None else f"{VMLINUX} does not exist: the kernel has no BTF")
    assert vmlinux is not None
    (lsm,) = vmlinux.find("bpf_lsm_file_open", Kind.FUNC)
    assert find_kernel_target(program_kind("lsm/file_open"), program="p") == KernelTarget(lsm)
