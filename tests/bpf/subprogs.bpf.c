// SPDX-License-Identifier: GPL-2.0
// Subprograms and shared sections: static __noinline helpers, a global function
// the verifier checks on its own, bpf_loop and bpf_for_each_map_elem callbacks;
// three programs share one tracepoint section and two share "xdp".
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} openat_by_tgid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} buckets SEC(".maps");

__u64 loop_total;
__u64 walk_total;
__u32 last_score;

struct loop_ctx {
	__u64 seed;
	__u64 acc;
};

static __noinline __u32 mix32(__u32 x)
{
	x ^= x >> 16;
	x *= 0x45d9f3b;
	x ^= x >> 16;
	return x;
}

static __noinline int bucket_of(__u32 value)
{
	return mix32(value) & 15;
}

/* Global (non-static): verified once, independently of its callers. */
__noinline int score_task(__u32 tgid, __u32 uid)
{
	if (uid == 0)
		return 100;
	return (int)(mix32(tgid ^ uid) % 100);
}

static int loop_step(__u32 index, void *data)
{
	struct loop_ctx *c = data;

	c->acc += mix32(c->seed + index);
	return c->acc > 1000000 ? 1 : 0;
}

static long sum_bucket(struct bpf_map *map, __u32 *key, __u64 *value, void *data)
{
	__u64 *sum = data;

	*sum += *value;
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int openat_count(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *v;

	v = bpf_map_lookup_elem(&openat_by_tgid, &tgid);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&openat_by_tgid, &tgid, &one, BPF_ANY);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int openat_score(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 uid = bpf_get_current_uid_gid();

	last_score = score_task(tgid, uid);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int openat_loop(void *ctx)
{
	struct loop_ctx c = { .seed = bpf_get_prandom_u32() };

	bpf_loop(16, loop_step, &c, 0);
	loop_total += c.acc;
	return 0;
}

SEC("xdp")
int xdp_bucket(struct xdp_md *ctx)
{
	__u32 key = bucket_of(ctx->data_end - ctx->data);
	__u64 *v = bpf_map_lookup_elem(&buckets, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}

SEC("xdp")
int xdp_walk(struct xdp_md *ctx)
{
	__u64 sum = 0;

	bpf_for_each_map_elem(&buckets, sum_bucket, &sum, 0);
	walk_total = sum;
	return score_task(ctx->ingress_ifindex, 1) > 200 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
