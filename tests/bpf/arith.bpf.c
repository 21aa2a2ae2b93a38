// SPDX-License-Identifier: GPL-2.0
// A relocation-free program: loadable from its raw section bytes, before
// dynbpf can read ELF objects. Returns a value computed from the packet length
// so a test can check the program really ran.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_len_mod(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 acc = 0;

	for (int i = 0; i < 8; i++)
		acc += (len >> i) & 1;
	return acc == 3 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
