// SPDX-License-Identifier: GPL-2.0
// A program reading .rodata whose verification is slow (a bounded loop walked in full), to hold a load open while
// set_constants changes the constants it reads (the load must end up with the new ones), and a quick one beside it.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define TRIPS 40000

const volatile u32 factor = 1;

SEC("socket")
int slow(struct __sk_buff *skb)
{
	u32 sum = 0;

	for (u32 i = 0; i < TRIPS; i++) {
		sum += i * factor;
		asm volatile("" : "+r"(sum)); /* keeps the loop a loop: the verifier walks every trip */
	}
	return sum & 1 ? factor : factor + 1;
}

SEC("socket")
int quick(struct __sk_buff *skb)
{
	return factor;
}
