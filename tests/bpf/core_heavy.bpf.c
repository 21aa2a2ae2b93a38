// SPDX-License-Identifier: GPL-2.0
// Heavy CO-RE use: chained and direct reads, bitfields (direct and probed), arrays
// and a flexible array, members inside anonymous structs and unions, field, type
// and enum existence with fallbacks, ___flavour types, a 64-bit enum, type ids,
// a load whose size shrinks, and relocations inside a subprogram. Several
// relocations cannot resolve on any kernel; each sits behind a guard that
// resolves to 0, so the poisoned instruction is dead code.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* task_struct::flags is a u32; reading it as a u64 makes libbpf shrink the load. */
struct task_struct___flags64 {
	unsigned long long flags;
} __attribute__((preserve_access_index));

/* A flavour naming a field no kernel has, next to one every kernel has. */
struct task_struct___future {
	int dynbpf_no_such_field;
	struct task_struct *real_parent;
} __attribute__((preserve_access_index));

/* A type no kernel has. */
struct dynbpf_missing_type {
	long x;
} __attribute__((preserve_access_index));

enum dynbpf_missing_enum { DYNBPF_MISSING_VALUE = 7 };

/* A flavoured local enum: matched against the kernel's 64-bit enum by essential name. */
enum perf_callchain_context___local { PERF_CONTEXT_KERNEL___local = 1 };

struct heavy_info {
	__u32 tgid;
	__u32 direct_ppid;
	__u64 flags;
	__u64 in_execve;
	__u64 reset_on_fork;
	__u64 pkt_type;
	__u32 comm_size;
	__u32 comm_offset;
	__u32 task_size;
	__u32 pid_size;
	__u32 local_id;
	__u32 kernel_id;
	__u32 pid_signed;
	__u32 has_tgid;
	__u32 has_pid_t;
	__u32 subprog_tgid;
	__s64 future;
	__s64 missing;
	__u64 missing_enum;
	__u64 callchain_kernel;
	__u64 callchain_flavour;
	__u64 vruntime;
	__u32 nlink;
	__u32 name_len;
	char comm3;
	char iname2;
};

struct heavy_info heavy;

static __noinline __u32 parent_tgid(struct task_struct *t)
{
	return BPF_CORE_READ(t, real_parent, tgid);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(heavy_fork, struct task_struct *parent, struct task_struct *child)
{
	struct heavy_info *h = &heavy;

	h->tgid = BPF_CORE_READ(child, real_parent, tgid);
	h->direct_ppid = child->real_parent->tgid;
	h->flags = ((struct task_struct___flags64 *)child)->flags;
	h->in_execve = BPF_CORE_READ_BITFIELD(child, in_execve);
	h->reset_on_fork = BPF_CORE_READ_BITFIELD_PROBED(child, sched_reset_on_fork);
	h->comm3 = BPF_CORE_READ(child, comm[3]);
	h->comm_size = bpf_core_field_size(child->comm);
	h->comm_offset = bpf_core_field_offset(struct task_struct, comm);
	h->task_size = bpf_core_type_size(struct task_struct);
	h->pid_size = bpf_core_type_size(pid_t);
	h->local_id = bpf_core_type_id_local(struct task_struct);
	h->kernel_id = bpf_core_type_id_kernel(struct task_struct);
	h->pid_signed = __builtin_preserve_field_info(child->pid, BPF_FIELD_SIGNED);
	h->has_tgid = bpf_core_field_exists(child->tgid);
	h->has_pid_t = bpf_core_type_exists(pid_t);
	h->vruntime = BPF_CORE_READ(child, se.vruntime);
	h->subprog_tgid = parent_tgid(child);

	if (bpf_core_field_exists(struct task_struct___future, dynbpf_no_such_field))
		h->future = BPF_CORE_READ((struct task_struct___future *)child, dynbpf_no_such_field);
	else
		h->future = -1;
	if (bpf_core_type_exists(struct dynbpf_missing_type))
		h->missing = BPF_CORE_READ((struct dynbpf_missing_type *)child, x);
	if (bpf_core_enum_value_exists(enum dynbpf_missing_enum, DYNBPF_MISSING_VALUE))
		h->missing_enum = bpf_core_enum_value(enum dynbpf_missing_enum, DYNBPF_MISSING_VALUE);
	if (bpf_core_enum_value_exists(enum perf_callchain_context, PERF_CONTEXT_KERNEL))
		h->callchain_kernel = bpf_core_enum_value(enum perf_callchain_context, PERF_CONTEXT_KERNEL);
	h->callchain_flavour = bpf_core_enum_value(enum perf_callchain_context___local, PERF_CONTEXT_KERNEL___local);
	return 0;
}

/* The first argument is a struct mnt_idmap * since 6.3 (a struct user_namespace * before; 6.1's
 * vmlinux.h has no mnt_idmap): unused here, so untyped. */
SEC("kprobe/vfs_unlink")
int BPF_KPROBE(heavy_unlink, void *idmap, struct inode *dir, struct dentry *dentry)
{
	/* i_nlink sits in an anonymous union, qstr::len in an anonymous struct in one. */
	heavy.nlink = BPF_CORE_READ(dir, i_nlink);
	heavy.name_len = BPF_CORE_READ(dentry, d_name.len);
	return 0;
}

/* putname: one signature on every kernel of the matrix (do_unlinkat is gone from 7.x) */
SEC("kprobe/putname")
int BPF_KPROBE(heavy_putname, struct filename *name)
{
	/* iname is a flexible array: any index is allowed. */
	heavy.iname2 = BPF_CORE_READ(name, iname[2]);
	return 0;
}

SEC("kprobe/netif_receive_skb")
int BPF_KPROBE(heavy_skb, struct sk_buff *skb)
{
	heavy.pkt_type = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
