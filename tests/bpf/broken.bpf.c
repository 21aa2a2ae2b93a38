// SPDX-License-Identifier: GPL-2.0
// Programs the verifier rejects, each for one known reason at one known source
// line, next to programs it accepts: the fixture for verifier error reporting.
// The failing lines carry a marker comment the tests look for.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[4]);
} slots SEC(".maps");

// No such field in any kernel: CO-RE poisons the read, and nothing guards it.
struct xdp_md___missing {
	__u32 no_such_field;
} __attribute__((preserve_access_index));

// Accepted; map-free, with a loop so a level-2 log is long.
SEC("xdp")
int good(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 acc = 0;

	for (int i = 0; i < 16; i++)
		acc += (len >> i) & 1;
	return acc > 3 ? XDP_PASS : XDP_DROP;
}

// Rejected: the index reaches 7, the value holds 4 elements.
SEC("xdp")
int bad_map_value(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&slots, &key);

	if (!v)
		return XDP_PASS;
	return v[ctx->rx_queue_index & 7] ? XDP_PASS : XDP_DROP; /* BAD: map value */
}

// Rejected: uses a stack slot nothing wrote as a pointer. Root may read the
// slot (the verifier lets privileged programs read uninitialised stack and
// calls the value an unknown scalar); the dereference is what fails.
SEC("xdp")
int bad_stack(struct xdp_md *ctx)
{
	__u32 *p;

	asm volatile("%0 = *(u64 *)(r10 - 8)" : "=r"(p));
	return *p & 1 ? XDP_PASS : XDP_DROP; /* BAD: stack */
}

// Rejected on every kernel: the poisoned CO-RE read is reachable.
SEC("xdp")
int bad_core(struct xdp_md *ctx)
{
	struct xdp_md___missing *m = (void *)ctx;

	if (ctx->ingress_ifindex == 0)
		return XDP_DROP;
	return m->no_such_field ? XDP_PASS : XDP_DROP; /* BAD: core */
}

char LICENSE[] SEC("license") = "GPL";
