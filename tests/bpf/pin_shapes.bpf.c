// SPDX-License-Identifier: GPL-2.0
// Two maps alike in every size libbpf compares, unlike in their value types: a pin of one must not pass for
// the other (issue 13 item 5).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct pair {
	u32 first;
	u32 second;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, struct pair);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} stamps SEC(".maps");

SEC("socket")
int count_both(void *ctx)
{
	u32 key = 0;
	struct pair *p = bpf_map_lookup_elem(&pairs, &key);
	u64 *s = bpf_map_lookup_elem(&stamps, &key);

	return (p ? p->first : 0) + (s ? (int)*s : 0);
}
