// SPDX-License-Identifier: GPL-2.0
// Legacy map definitions: struct bpf_map_def instances in SEC("maps"), the
// pre-BTF style that libbpf 1.0 and later refuse to open.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* libbpf dropped this struct from bpf_helpers.h in 1.0; old programs defined it themselves. */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct bpf_map_def SEC("maps") proto_count = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 256,
};

struct bpf_map_def SEC("maps") flow_bytes = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1024,
	.map_flags = BPF_F_NO_PREALLOC,
};

struct bpf_map_def SEC("maps") drops = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

SEC("socket")
int count_protocols(struct __sk_buff *skb)
{
	__u32 proto = skb->protocol & 0xff, hash = skb->hash, zero = 0;
	__u64 len = skb->len, *v;

	v = bpf_map_lookup_elem(&proto_count, &proto);
	if (v)
		__sync_fetch_and_add(v, 1);
	v = bpf_map_lookup_elem(&flow_bytes, &hash);
	if (v) {
		__sync_fetch_and_add(v, len);
	} else if (bpf_map_update_elem(&flow_bytes, &hash, &len, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&drops, &zero);
		if (v)
			*v += 1;
	}
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
