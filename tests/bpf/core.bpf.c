// SPDX-License-Identifier: GPL-2.0
// CO-RE: BPF_CORE_READ chains, bpf_core_read, probed bitfield reads, the field,
// type and enum builtins, kernel type ids, and ___suffix flavours (one of which
// names a field this kernel no longer has).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* task_struct::state was renamed __state in 5.14: read whichever exists. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

/* filename::refcnt was an atomic_t up to 7.2 and is a plain int (in an anonymous struct member)
 * since: two flavours, and the one this kernel has is read. */
struct filename___atomic {
	atomic_t refcnt;
} __attribute__((preserve_access_index));

struct filename___int {
	int refcnt;
} __attribute__((preserve_access_index));

/* A local-only type: bpf_core_type_exists() must resolve to 0. */
struct dynbpf_not_in_kernel {
	int x;
} __attribute__((preserve_access_index));

struct fork_info {
	__u32 parent_tgid;
	__u32 child_pid;
	__u64 state;
	__u32 in_execve;
	__u32 in_iowait;
	__u32 comm_size;
	__u32 task_size;
	__u32 task_type_id;
	__u32 have_missing_type;
	__u64 cgroup_enum;
	__u32 has_loop_helper;
};

struct fork_info last_fork;

static __always_inline __u64 task_state(struct task_struct *t)
{
	struct task_struct___pre514 *old = (void *)t;

	if (bpf_core_field_exists(old->state))
		return BPF_CORE_READ(old, state);
	return BPF_CORE_READ(t, __state);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(core_fork, struct task_struct *parent, struct task_struct *child)
{
	struct fork_info *i = &last_fork;

	i->parent_tgid = BPF_CORE_READ(child, real_parent, tgid);
	bpf_core_read(&i->child_pid, sizeof(i->child_pid), &child->pid);
	i->state = task_state(child);
	i->in_execve = BPF_CORE_READ_BITFIELD_PROBED(child, in_execve);
	i->in_iowait = BPF_CORE_READ_BITFIELD_PROBED(child, in_iowait);
	i->comm_size = bpf_core_field_size(child->comm);
	i->task_size = bpf_core_type_size(struct task_struct);
	i->task_type_id = bpf_core_type_id_kernel(struct task_struct);
	i->have_missing_type = bpf_core_type_exists(struct dynbpf_not_in_kernel);
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		i->cgroup_enum = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	i->has_loop_helper = bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop);
	return 0;
}

/* putname: one signature on every kernel of the matrix (do_unlinkat is gone from 7.x) */
SEC("kprobe/putname")
int BPF_KPROBE(core_putname, struct filename *name)
{
	struct filename___atomic *atomic = (void *)name;
	const char *path = BPF_CORE_READ(name, name);
	char buf[32];

	bpf_core_read_str(buf, sizeof(buf), path);
	if (bpf_core_field_exists(atomic->refcnt.counter))
		last_fork.child_pid = BPF_CORE_READ(atomic, refcnt.counter);
	else
		last_fork.child_pid = BPF_CORE_READ((struct filename___int *)name, refcnt);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
