// SPDX-License-Identifier: GPL-2.0
// The other file of the static-map pair (see left.bpf.c).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

static struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

SEC("syscall")
int right_prog(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&stats, &key);

	if (v)
		*v += 20;
	return 2;
}
