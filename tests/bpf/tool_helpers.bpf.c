// SPDX-License-Identifier: GPL-2.0
// Stacks and timestamps as tools take them (tests/test_kernel_tools.py, docs/tools.md), and programs of kinds
// Collection.attach() attaches from their section or passes over.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define MAX_DEPTH 127

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(u32));
	__uint(value_size, MAX_DEPTH * sizeof(u64));
	__uint(max_entries, 1024);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

struct { /* named like a method of coll.maps: reachable as coll.maps["keys"] only */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} keys SEC(".maps");

const volatile u32 target_tgid = 0;

s64 kernel_stack = -1; /* bpf_get_stackid() of the last getpgid of target_tgid */
u64 ktime = 0;         /* bpf_ktime_get_ns() then */
u64 boot_time = 0;     /* bpf_ktime_get_boot_ns() then */
s64 user_stack = -1;   /* bpf_get_stackid(BPF_F_USER_STACK) of the last hit of user_stack_on_call */
u32 user_pid = 0;
u64 enters = 0;
u64 getppid_calls = 0;

static __always_inline bool targeted(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

#define NR_GETPGID 121 /* x86-64 */

/* A raw tracepoint: its stack is the kernel's own on every kernel, where a syscall tracepoint's
 * program gets the user's registers before 6.x (bpf_get_stackid then finds no kernel stack: EFAULT). */
SEC("raw_tp/sys_enter")
int kernel_stack_on_getpgid(struct bpf_raw_tracepoint_args *ctx)
{
	if (!targeted() || ctx->args[1] != NR_GETPGID)
		return 0;
	kernel_stack = bpf_get_stackid(ctx, &stacks, 0);
	ktime = bpf_ktime_get_ns();
	boot_time = bpf_ktime_get_boot_ns();
	return 0;
}

SEC("raw_tp/sys_enter")
int count_enters(void *ctx)
{
	if (targeted())
		__sync_fetch_and_add(&enters, 1);
	return 0;
}

SEC("uprobe/libc.so.6:getppid")
int count_getppid(void *ctx)
{
	if (targeted())
		__sync_fetch_and_add(&getppid_calls, 1);
	return 0;
}

SEC("uprobe") /* the caller names the function: attach(path=..., symbol=...) */
int user_stack_on_call(struct pt_regs *ctx)
{
	user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	user_pid = bpf_get_current_pid_tgid() >> 32;
	return 0;
}

SEC("xdp") /* attached to an interface the caller names */
int pass_packets(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tp/syscalls/sys_enter_dynbpf_no_such_call") /* loads (the name is checked at attach), never attaches */
int never_attaches(void *ctx)
{
	return 0;
}
