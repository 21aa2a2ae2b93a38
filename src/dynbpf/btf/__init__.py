"""BTF: type information for programs, maps and the kernel."""

from dynbpf.btf.kinds import Kind
from dynbpf.btf.table import TypeTable, vmlinux

__all__ = ["Kind", "TypeTable", "vmlinux"]
