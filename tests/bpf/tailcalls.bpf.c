// SPDX-License-Identifier: GPL-2.0
// Tail calls: a prog array with initial slots (.values = { [i] = &prog }) that a
// dispatcher and a subprogram jump through, and a second prog array left empty.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

int xdp_stage_parse(struct xdp_md *ctx);
int xdp_stage_count(struct xdp_md *ctx);
int xdp_stage_drop(struct xdp_md *ctx);

enum stage { STAGE_PARSE = 0, STAGE_COUNT = 1, STAGE_DROP = 3 };

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__array(values, int(struct xdp_md *));
} xdp_stages SEC(".maps") = {
	.values = {
		[STAGE_PARSE] = (void *)&xdp_stage_parse,
		[STAGE_COUNT] = (void *)&xdp_stage_count,
		[STAGE_DROP] = (void *)&xdp_stage_drop,
	},
};

/* Filled at runtime only. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} socket_stages SEC(".maps");

__u64 packets;
__u64 fallthrough;

static __noinline int jump(struct xdp_md *ctx, __u32 slot)
{
	bpf_tail_call(ctx, &xdp_stages, slot);
	fallthrough++;
	return XDP_PASS;
}

SEC("xdp")
int xdp_dispatch(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &xdp_stages, STAGE_PARSE);
	return XDP_PASS;
}

SEC("xdp")
int xdp_stage_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return jump(ctx, STAGE_DROP);
	return jump(ctx, STAGE_COUNT);
}

SEC("xdp")
int xdp_stage_count(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&packets, 1);
	return XDP_PASS;
}

SEC("xdp")
int xdp_stage_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("socket")
int socket_dispatch(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &socket_stages, skb->protocol & 3);
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
