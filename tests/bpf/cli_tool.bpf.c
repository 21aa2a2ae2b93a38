// SPDX-License-Identifier: GPL-2.0
// A small tracing tool for the CLI's tests (dynbpf load/run/prog/map/link): syscall tracepoints the test
// triggers, events in a ring and a perf buffer, histograms in the three shapes tools use, constants of
// several types, a map with struct values.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

const volatile u32 target_tgid = 0; /* 0: every process */
const volatile bool emit_events = true;
const volatile char label[8] = "none";
const volatile s64 bias = 0;
const volatile u32 linear_step = 10;

#define MAX_SLOTS 64
#define LINEAR_SLOTS 16

struct event {
	u64 seq;
	u32 pid;
	u32 syscall;
	s64 arg;
	char comm[16];
	char label[8];
};

struct event *event_type __attribute__((unused)); /* puts struct event in BTF */

struct section_key {
	u32 syscall;
	u32 slot;
};

struct hist {
	u32 slots[LINEAR_SLOTS];
};

struct setting {
	u32 level;
	bool on;
	char name[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} samples SEC(".maps");

/* log2 of getpgid's argument: key the slot, value the count */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, u32);
	__type(value, u64);
} arg_log2 SEC(".maps");

/* getpgid's argument in linear_step buckets, counted per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LINEAR_SLOTS);
	__type(key, u32);
	__type(value, u64);
} arg_linear SEC(".maps");

/* log2 of the argument (getpgid) or the sequence number (getppid), one section per syscall */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct section_key);
	__type(value, u64);
} by_syscall SEC(".maps");

/* a whole linear histogram per syscall, libbpf-tools style */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, struct hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, struct setting);
} settings SEC(".maps");

u64 seq = 0;

static __always_inline u32 log2_u64(u64 v)
{
	u32 r = 0;

	for (int i = 0; i < 63 && v > 1; i++) {
		v >>= 1;
		r++;
	}
	return r;
}

static __always_inline bool mine(void)
{
	return !target_tgid || (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline void count(u32 syscall, u64 value, bool linear)
{
	struct section_key key = { .syscall = syscall, .slot = log2_u64(value) };
	u64 one = 1, *n;
	u32 slot = key.slot;

	n = bpf_map_lookup_elem(&by_syscall, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&by_syscall, &key, &one, BPF_NOEXIST);
	if (!linear)
		return;
	n = bpf_map_lookup_elem(&arg_log2, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
	slot = linear_step ? value / linear_step : 0;
	if (slot >= LINEAR_SLOTS)
		slot = LINEAR_SLOTS - 1;
	n = bpf_map_lookup_elem(&arg_linear, &slot);
	if (n)
		*n += 1;
	{
		struct hist zero = {}, *h = bpf_map_lookup_elem(&hists, &syscall);

		if (!h) {
			bpf_map_update_elem(&hists, &syscall, &zero, BPF_NOEXIST);
			h = bpf_map_lookup_elem(&hists, &syscall);
		}
		if (h && slot < LINEAR_SLOTS)
			__sync_fetch_and_add(&h->slots[slot], 1);
	}
}

static __always_inline void fill(struct event *e, u32 syscall, s64 arg)
{
	e->seq = __sync_fetch_and_add(&seq, 1);
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->syscall = syscall;
	e->arg = arg + bias;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	for (int i = 0; i < sizeof(e->label); i++)
		e->label[i] = label[i]; /* volatile reads: a memcpy would copy the value clang saw at build time */
}

/* Every getppid() of the target: one event into the ring buffer. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;

	if (!mine())
		return 0;
	count(1, seq, false);
	if (!emit_events)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	fill(e, 1, 0);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Every getpgid(arg) of the target: the histograms of arg, one sample into the perf buffer. */
SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	struct event e = {};
	s64 arg = ctx->args[0];

	if (!mine())
		return 0;
	count(2, arg, true);
	if (!emit_events)
		return 0;
	fill(&e, 2, arg);
	bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
