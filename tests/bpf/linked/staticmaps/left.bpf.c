// SPDX-License-Identifier: GPL-2.0
// Static maps of one name in two files of a linked object. libbpf 1.1 refuses
// static maps ("unsupported map linkage static"); dynbpf keeps them apart.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

static struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

SEC("syscall")
int left_prog(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&stats, &key);

	if (v)
		*v += 10;
	return 1;
}
