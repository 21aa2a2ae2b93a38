"""The kernel capabilities by name: one table for ``dynbpf probe`` and for feature requirements.

A capability is something the kernel can do that is not a program type, a
map type or a helper (those are probed per enum value): verifier and
runtime features ("Verifier and runtime" in ``dynbpf probe``) and attach
kinds ("Attach kinds"). The report prints these names, and a feature's
variant requires them by the same names (``capability:trampolines``), so
both read them from here and a name means one probe everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from dynbpf._probes import attach, kernel, net_attach
from dynbpf._probes.maps import map_type
from dynbpf._probes.result import Support
from dynbpf._sys.constants import MapType

Probe = Callable[[], Support]

#: Verifier and runtime capabilities, in report order.
KERNEL_FEATURES: Mapping[str, Probe] = MappingProxyType(
    {
        "global_data": kernel.global_data,
        "bounded_loops": kernel.bounded_loops,
        "isa_v4": kernel.isa_v4,
        "prog_name": kernel.prog_name,
        "mmapable_arrays": kernel.mmapable_arrays,
        "prog_bind_map": kernel.prog_bind_map,
        "batch_ops": kernel.batch_ops,
        "bpf_cookie": kernel.bpf_cookie,
        "memcg_accounting": kernel.memcg_accounting,
        "ringbuf": lambda: map_type(MapType.RINGBUF),
    }
)

#: Attach kinds (a program loads *and* its link is created), in report order.
ATTACH_KINDS: Mapping[str, Probe] = MappingProxyType(
    {
        "raw_tp": attach.raw_tracepoint,
        "tracing": attach.tracing,
        "trampolines": attach.trampolines,
        "lsm": attach.lsm,
        "iter": attach.iterators,
        "iter_map_elem": lambda: attach.iterator_target("bpf_map_elem"),
        "perf_event": kernel.perf_link,
        "tracepoint": attach.tracepoints,
        "kprobe": attach.kprobes,
        "kprobe_multi": attach.kprobe_multi,
        "kprobe_session": attach.kprobe_session,
        "uprobe": attach.uprobes,
        "uprobe_multi": attach.uprobe_multi,
        "tcx": attach.tcx,
        "netfilter": attach.netfilter,
        "cgroup": attach.cgroup,
        "sk_lookup": net_attach.sk_lookup,
        "flow_dissector": net_attach.flow_dissector,
        "sockmap_link": net_attach.sockmap_link,
        "sockmap_attach": net_attach.sockmap_attach,
        "netkit": net_attach.netkit,
        "xdp": attach.xdp,
        "struct_ops": attach.struct_ops,
        "struct_ops_link": attach.struct_ops_link,
        "struct_ops_assoc": attach.struct_ops_assoc,
    }
)

#: Every capability name, as ``dynbpf probe`` prints it.
CAPABILITIES: Mapping[str, Probe] = MappingProxyType({**KERNEL_FEATURES, **ATTACH_KINDS})

#: Other spellings a requirement may use: the section prefixes whose programs need exactly
#: one capability. fentry and fexit both run on a BPF trampoline, which is what the
#: trampolines probe links; tp_btf programs attach through the tracing link the tracing
#: probe creates. (fmod_ret is not here: it also needs an error-injectable target, which
#: the trampolines probe does not show.)
ALIASES: Mapping[str, str] = MappingProxyType({"fentry": "trampolines", "fexit": "trampolines", "tp_btf": "tracing"})
