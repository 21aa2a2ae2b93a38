"""``union bpf_attr`` members and ``bpf_*_info`` structs as ctypes structures.

Field names are the kernel's own so ``tests/test_sys_abi.py`` can check every
offset against the running kernel's BTF. Each struct stops at the last field
dynbpf uses: the kernel treats a shorter ``size`` as "the rest is zero", which
keeps requests valid on kernels older than the newest fields.
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_int32, c_uint8, c_uint32, c_uint64
from typing import Any

u32 = c_uint32
s32 = c_int32
u64 = c_uint64


class Attr(ctypes.Structure):
    """Zero-initialised kernel struct; keyword arguments set fields."""

    def __init__(self, **fields: Any) -> None:
        super().__init__()
        for name, value in fields.items():
            setattr(self, name, value)


# --- commands -------------------------------------------------------------


class MapCreateAttr(Attr):
    _fields_ = [
        ("map_type", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("inner_map_fd", u32),
        ("numa_node", u32),
        ("map_name", c_char * 16),
        ("map_ifindex", u32),
        ("btf_fd", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("map_extra", u64),
        ("value_type_btf_obj_fd", s32),
        ("map_token_fd", s32),
    ]


class MapElemAttr(Attr):
    """MAP_LOOKUP/UPDATE/DELETE_ELEM, MAP_GET_NEXT_KEY (``value`` is ``next_key``), MAP_FREEZE."""

    _fields_ = [("map_fd", u32), ("_pad0", u32), ("key", u64), ("value", u64), ("flags", u64)]


class MapBatchAttr(Attr):
    _fields_ = [
        ("in_batch", u64),
        ("out_batch", u64),
        ("keys", u64),
        ("values", u64),
        ("count", u32),
        ("map_fd", u32),
        ("elem_flags", u64),
        ("flags", u64),
    ]


class ProgLoadAttr(Attr):
    _fields_ = [
        ("prog_type", u32),
        ("insn_cnt", u32),
        ("insns", u64),
        ("license", u64),
        ("log_level", u32),
        ("log_size", u32),
        ("log_buf", u64),
        ("kern_version", u32),
        ("prog_flags", u32),
        ("prog_name", c_char * 16),
        ("prog_ifindex", u32),
        ("expected_attach_type", u32),
        ("prog_btf_fd", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("func_info_cnt", u32),
        ("line_info_rec_size", u32),
        ("line_info", u64),
        ("line_info_cnt", u32),
        ("attach_btf_id", u32),
        ("attach_prog_fd", u32),  # union with attach_btf_obj_fd
        ("core_relo_cnt", u32),
        ("fd_array", u64),
        ("core_relos", u64),
        ("core_relo_rec_size", u32),
        ("log_true_size", u32),
        ("prog_token_fd", s32),
        ("fd_array_cnt", u32),
    ]

    @property
    def attach_btf_obj_fd(self) -> int:
        return int(self.attach_prog_fd)

    @attach_btf_obj_fd.setter
    def attach_btf_obj_fd(self, fd: int) -> None:
        self.attach_prog_fd = fd


class ObjPinAttr(Attr):
    _fields_ = [("pathname", u64), ("bpf_fd", u32), ("file_flags", u32), ("path_fd", s32), ("_pad0", u32)]


class ProgAttachAttr(Attr):
    _fields_ = [
        ("target_fd", u32),
        ("attach_bpf_fd", u32),
        ("attach_type", u32),
        ("attach_flags", u32),
        ("replace_bpf_fd", u32),
        ("relative_fd", u32),
        ("expected_revision", u64),
    ]


class ProgQueryAttr(Attr):
    """BPF_PROG_QUERY: which programs BPF_PROG_ATTACH (or links) put on a target (cgroup, netns, sockmap...)."""

    _fields_ = [
        ("target_fd", u32),
        ("attach_type", u32),
        ("query_flags", u32),
        ("attach_flags", u32),
        ("prog_ids", u64),
        ("prog_cnt", u32),
        ("_pad0", u32),
    ]


class GetIdAttr(Attr):
    """*_GET_NEXT_ID (``start_id``) and *_GET_FD_BY_ID (same slot holds the id)."""

    _fields_ = [("start_id", u32), ("next_id", u32), ("open_flags", u32), ("fd_by_id_token_fd", s32)]


class InfoAttr(Attr):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


class RawTracepointAttr(Attr):
    _fields_ = [("name", u64), ("prog_fd", u32), ("_pad0", u32), ("cookie", u64)]


class BtfLoadAttr(Attr):
    _fields_ = [
        ("btf", u64),
        ("btf_log_buf", u64),
        ("btf_size", u32),
        ("btf_log_size", u32),
        ("btf_log_level", u32),
        ("btf_log_true_size", u32),
        ("btf_flags", u32),
        ("btf_token_fd", s32),
    ]


class _LinkTracing(ctypes.Structure):
    _fields_ = [("target_btf_id", u32), ("_pad0", u32), ("cookie", u64)]


class _LinkIter(ctypes.Structure):
    _fields_ = [("iter_info", u64), ("iter_info_len", u32)]


class _LinkPerfEvent(ctypes.Structure):
    _fields_ = [("bpf_cookie", u64)]


class _LinkKprobeMulti(ctypes.Structure):
    _fields_ = [("flags", u32), ("cnt", u32), ("syms", u64), ("addrs", u64), ("cookies", u64)]


class _LinkNetfilter(ctypes.Structure):
    _fields_ = [("pf", u32), ("hooknum", u32), ("priority", s32), ("flags", u32)]


class _LinkRelative(ctypes.Structure):
    """tcx, netkit and cgroup links: position relative to another program or link."""

    _fields_ = [("relative_fd", u32), ("_pad0", u32), ("expected_revision", u64)]


class _LinkUprobeMulti(ctypes.Structure):
    _fields_ = [
        ("path", u64),
        ("offsets", u64),
        ("ref_ctr_offsets", u64),
        ("cookies", u64),
        ("cnt", u32),
        ("flags", u32),
        ("pid", u32),
        ("path_fd", s32),
    ]


class _LinkUnion(ctypes.Union):
    _anonymous_ = ("iter",)  # the kernel's iter_info/iter_info_len sit in an unnamed struct
    _fields_ = [
        ("tracing", _LinkTracing),
        ("iter", _LinkIter),
        ("perf_event", _LinkPerfEvent),
        ("kprobe_multi", _LinkKprobeMulti),
        ("netfilter", _LinkNetfilter),
        ("tcx", _LinkRelative),
        ("netkit", _LinkRelative),
        ("cgroup", _LinkRelative),
        ("uprobe_multi", _LinkUprobeMulti),
    ]


class _IterMap(ctypes.Structure):
    _fields_ = [("map_fd", u32)]


class _IterCgroup(ctypes.Structure):
    _fields_ = [("order", u32), ("cgroup_fd", u32), ("cgroup_id", u64)]


class _IterTask(ctypes.Structure):
    _fields_ = [("tid", u32), ("pid", u32), ("pid_fd", u32)]


class IterLinkInfo(ctypes.Union):
    """``union bpf_iter_link_info``: the one map, cgroup or task an iterator link walks."""

    _fields_ = [("map", _IterMap), ("cgroup", _IterCgroup), ("task", _IterTask)]


class LinkCreateAttr(Attr):
    """``prog_fd`` doubles as ``map_fd`` (struct_ops), ``target_fd`` as ``target_ifindex``."""

    _anonymous_ = ("u",)
    _fields_ = [("prog_fd", u32), ("target_fd", u32), ("attach_type", u32), ("flags", u32), ("u", _LinkUnion)]


class LinkUpdateAttr(Attr):
    _fields_ = [("link_fd", u32), ("new_prog_fd", u32), ("flags", u32), ("old_prog_fd", u32)]


class LinkDetachAttr(Attr):
    _fields_ = [("link_fd", u32)]


class IterCreateAttr(Attr):
    _fields_ = [("link_fd", u32), ("flags", u32)]


class ProgTestRunAttr(Attr):
    _fields_ = [
        ("prog_fd", u32),
        ("retval", u32),
        ("data_size_in", u32),
        ("data_size_out", u32),
        ("data_in", u64),
        ("data_out", u64),
        ("repeat", u32),
        ("duration", u32),
        ("ctx_size_in", u32),
        ("ctx_size_out", u32),
        ("ctx_in", u64),
        ("ctx_out", u64),
        ("flags", u32),
        ("cpu", u32),
        ("batch_size", u32),
    ]


class ProgBindMapAttr(Attr):
    _fields_ = [("prog_fd", u32), ("map_fd", u32), ("flags", u32)]


class EnableStatsAttr(Attr):
    _fields_ = [("type", u32)]  # enum bpf_stats_type: BPF_STATS_RUN_TIME = 0


class ProgAssocStructOpsAttr(Attr):
    _fields_ = [("map_fd", u32), ("prog_fd", u32), ("flags", u32)]


# --- object info ------------------------------------------------------------


class ProgInfo(Attr):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("tag", c_uint8 * 8),
        ("jited_prog_len", u32),
        ("xlated_prog_len", u32),
        ("jited_prog_insns", u64),
        ("xlated_prog_insns", u64),
        ("load_time", u64),
        ("created_by_uid", u32),
        ("nr_map_ids", u32),
        ("map_ids", u64),
        ("name", c_char * 16),
        ("ifindex", u32),
        ("gpl_compatible", u32),  # bitfield :1 in the kernel; bit 0 of this word
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("nr_jited_ksyms", u32),
        ("nr_jited_func_lens", u32),
        ("jited_ksyms", u64),
        ("jited_func_lens", u64),
        ("btf_id", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("nr_func_info", u32),
        ("nr_line_info", u32),
        ("line_info", u64),
        ("jited_line_info", u64),
        ("nr_jited_line_info", u32),
        ("line_info_rec_size", u32),
        ("jited_line_info_rec_size", u32),
        ("nr_prog_tags", u32),
        ("prog_tags", u64),
        ("run_time_ns", u64),
        ("run_cnt", u64),
        ("recursion_misses", u64),
        ("verified_insns", u32),
        ("attach_btf_obj_id", u32),
        ("attach_btf_id", u32),
    ]


class MapInfo(Attr):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("name", c_char * 16),
        ("ifindex", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("btf_id", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_id", u32),
        ("map_extra", u64),
    ]


class BtfInfo(Attr):
    _fields_ = [
        ("btf", u64),
        ("btf_size", u32),
        ("id", u32),
        ("name", u64),
        ("name_len", u32),
        ("kernel_btf", u32),
    ]


class LinkInfo(Attr):
    """Common head of ``bpf_link_info``; the per-type union is kept as raw bytes."""

    _fields_ = [("type", u32), ("id", u32), ("prog_id", u32), ("_pad0", u32), ("raw", c_uint8 * 64)]


def addr(obj: Any) -> int:
    """User-space address of a ctypes object or buffer, for ``__aligned_u64`` pointer fields."""
    if obj is None:
        return 0
    return ctypes.addressof(obj)
