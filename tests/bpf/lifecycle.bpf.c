// SPDX-License-Identifier: GPL-2.0
// Programs for the runtime lifecycle tests: the seed patch's dynamicload scenario
// (prog1 disabled, prog2 autoload, prog3 loaded later), private and shared maps
// for the on-demand policy, a prog array with declared slots and a map of maps.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

const volatile u32 target_tgid = 0;
const volatile u64 step = 1;

bool prog1_called = false;
bool prog2_called = false;
bool prog3_called = false;
u64 data_counter = 100; // .data: re-created maps must start from here again

static __always_inline bool mine(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} shared SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} private_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} private_b SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} inner_0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [0] = &inner_0 },
};

static __always_inline void bump(void *map)
{
	u32 key = 0;
	u64 *v = bpf_map_lookup_elem(map, &key);
	if (v)
		__sync_fetch_and_add(v, step);
}

SEC("tp/syscalls/sys_enter_getpgid")
int prog1(void *ctx)
{
	if (mine())
		prog1_called = true;
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int prog2(void *ctx)
{
	if (mine())
		prog2_called = true;
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int prog3(void *ctx)
{
	if (mine()) {
		prog3_called = true;
		bump(&shared);
	}
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int use_a(void *ctx)
{
	u32 key = 1;
	u64 one = 1;
	if (!mine())
		return 0;
	bump(&shared);
	bpf_map_update_elem(&private_a, &key, &one, BPF_ANY);
	data_counter += 1;
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int use_b(void *ctx)
{
	u32 key = 2;
	u64 one = 1;
	if (!mine())
		return 0;
	bump(&shared);
	bpf_map_update_elem(&private_b, &key, &one, BPF_ANY);
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int use_outer(void *ctx)
{
	u32 key = 0;
	void *inner;
	if (!mine())
		return 0;
	inner = bpf_map_lookup_elem(&outer, &key);
	if (inner)
		bump(inner);
	return 0;
}

// Tail calls: a dispatcher run with BPF_PROG_TEST_RUN returns its stage's verdict.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u32);
	__array(values, int(struct xdp_md *));
} stages SEC(".maps");

SEC("xdp")
int stage_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int dispatch(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &stages, 0);
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u32);
	__array(values, int(struct xdp_md *));
} stages_decl SEC(".maps") = {
	.values = { [0] = (void *)&stage_drop },
};

SEC("xdp")
int dispatch_declared(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &stages_decl, 0);
	return XDP_PASS;
}

// Verified longer than the others: parallel loading starts it first.
SEC("xdp")
int heavy(struct xdp_md *ctx)
{
	u64 acc = 0;
	for (int i = 0; i < 2000; i++)
		acc += i * step;
	return acc & 1 ? XDP_PASS : XDP_DROP;
}

// Fails verification, for per-program error reporting and atomic loads. Not autoloaded
// ("?"), so loading the whole object (libbpf, coll.load()) leaves it out.
SEC("?xdp")
int refused(struct xdp_md *ctx)
{
	char *p = (char *)(long)ctx->data;
	return p[0]; // no bounds check
}
