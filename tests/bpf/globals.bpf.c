// SPDX-License-Identifier: GPL-2.0
// Global data in every section libbpf turns into a map: .rodata (const volatile),
// .data, .bss, .data.<name> and .rodata.<name>; scalars, arrays and structs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct limits {
	__u32 max_events;
	__u16 port;
	__u8 enabled;
	__u8 level;
	__u64 window_ns;
};

struct tally {
	__u64 total;
	__u64 dropped;
};

/* .rodata: the loader may rewrite these before load; the verifier sees constants. */
const volatile __u32 target_tgid = 0;
const volatile __u64 sample_every = 4;
const volatile struct limits cfg = {
	.max_events = 4096,
	.port = 8080,
	.enabled = 1,
	.level = 3,
	.window_ns = 1000000000ULL,
};
const volatile char tag[8] = "dynbpf";

/* .data */
__u64 seq = 1;
__u32 ports[4] = { 22, 80, 443, 8080 };
struct limits live = { .max_events = 128, .port = 53, .enabled = 1, .window_ns = 5000 };
__s16 bias = -7;

/* .bss */
__u64 hits;
__u32 per_cpu_slots[8];
struct tally stats;
__u8 tag_sum;

/* Custom sections: each becomes its own map, named after the section. */
__u64 custom_counter SEC(".data.custom") = 42;
__u8 custom_bytes[6] SEC(".data.custom") = { 1, 2, 3, 4, 5, 6 };
struct tally custom_tally SEC(".data.custom") = { .total = 7, .dropped = 1 };
const volatile __u32 primes[4] SEC(".rodata.tables") = { 2, 3, 5, 7 };
const volatile __u64 mask SEC(".rodata.tables") = 0xff00ff00ff00ff00ULL;

SEC("tp/syscalls/sys_enter_write")
int count_writes(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 n;

	if (target_tgid && tgid != target_tgid)
		return 0;
	if (!cfg.enabled)
		return 0;
	n = __sync_fetch_and_add(&hits, 1);
	per_cpu_slots[cpu & 7]++;
	if (n >= cfg.max_events) {
		__sync_fetch_and_add(&stats.dropped, 1);
		return 0;
	}
	__sync_fetch_and_add(&stats.total, 1);
	if (sample_every && n % sample_every == 0)
		seq += 1 + bias;
	custom_counter += primes[n & 3] & mask;
	custom_tally.total++;
	return 0;
}

SEC("xdp")
int xdp_port_gate(struct xdp_md *ctx)
{
	__u8 sum = 0;

	for (int i = 0; i < 4; i++)
		if (ports[i] == live.port || ports[i] == cfg.port)
			custom_bytes[i]++;
	for (int i = 0; i < sizeof(tag); i++)
		sum += tag[i];
	tag_sum = sum;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
