// SPDX-License-Identifier: GPL-2.0
// First half of a statically linked object (bpftool gen object): a static
// helper and static globals whose names the second file uses as well, a map
// both files use, a global function the second file calls, a tail-call stage.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} shared_counts SEC(".maps");

const volatile __u32 first_bias = 100;
static volatile __u32 counter = 1;	/* .data, also in second.bpf.c */
static volatile __u64 scratch;		/* .bss, also in second.bpf.c */

static __noinline int helper(int x)
{
	scratch += x;
	return x + first_bias + counter;
}

__noinline int shared_global(int x)	/* a global function: verified on its own */
{
	return x + 7;
}

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&shared_counts, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("syscall")
int first_prog(void *ctx)
{
	count(0);
	return helper(1);		/* 1 + 100 + 1 */
}

SEC("xdp")
int first_stage(struct xdp_md *ctx)
{
	count(2);
	return XDP_TX;
}
