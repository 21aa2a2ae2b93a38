// SPDX-License-Identifier: GPL-2.0
// Second half of the linked object: a static helper with the first file's
// name doing something else, static globals of the same names, the shared map
// declared extern, a prog array whose slot 1 holds this file's stage (slot 0
// is set by user space to the first file's stage), and sections libbpf opens
// but cannot auto-attach or does not know at all.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

extern struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} shared_counts SEC(".maps");

SEC("xdp")
int second_stage(struct xdp_md *ctx)
{
	return XDP_DROP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int(struct xdp_md *));
} stages SEC(".maps") = {
	.values = { [1] = (void *)&second_stage },
};

const volatile __u32 second_scale = 1000;
static volatile __u32 counter = 2;	/* .data, also in first.bpf.c */
static volatile __u64 scratch;		/* .bss, also in first.bpf.c */

extern int shared_global(int x);

static __noinline int helper(int x)
{
	scratch += 2 * x;
	return x * second_scale + counter;
}

SEC("syscall")
int second_prog(void *ctx)
{
	__u32 slot = 1;
	__u64 *v = bpf_map_lookup_elem(&shared_counts, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
	return helper(2) + shared_global(0);	/* 2 * 1000 + 2 + 7 */
}

SEC("xdp")
int second_dispatch(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &stages, 0);
	bpf_tail_call(ctx, &stages, 1);
	return XDP_PASS;
}

SEC("uprobe/func")		/* no binary: libbpf loads it, cannot auto-attach it */
int lenient_uprobe(void *ctx)
{
	return 0;
}

SEC("uretprobe/readline")
int lenient_uretprobe(void *ctx)
{
	return 0;
}

SEC("tp/sched")			/* no event name */
int lenient_tracepoint(void *ctx)
{
	return 0;
}

SEC("nosuchkind/anything")	/* no convention: libbpf cannot load it, the rest still loads */
int unknown_kind(void *ctx)
{
	return 0;
}
