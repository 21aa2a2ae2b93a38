// SPDX-License-Identifier: GPL-2.0
// Event producers for the ring and perf buffer readers: ringbuf reserve/submit, output, discard, perf_event_output
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

const volatile u32 target_tgid = 0;

enum event_kind {
	EV_RESERVED = 1,
	EV_OUTPUT = 2,
	EV_PERF = 3,
	EV_SYSCALL = 4,
};

struct event {
	u64 seq;
	u32 pid;
	enum event_kind kind;
	char comm[16];
	u64 value;
};

/* Only types reachable from globals, maps or function signatures reach BTF: this puts the record there. */
struct event *event_type __attribute__((unused));

/* One page of data: 85 events fill it, so producing more wraps the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} audit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} samples SEC(".maps");

/* Record i of emit_sized is the first (i + first_len) % 64 bytes of this. */
const char pattern[64] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ#";

u64 next_seq = 0;
u64 dropped = 0;	/* ring buffer full: reserve or output failed */
u64 perf_failed = 0;	/* bpf_perf_event_output refused (ring full or no event) */

struct loop_ctx {
	void *ctx;
	u64 value;
	u64 discard_odd;
};

static __always_inline void fill(struct event *e, enum event_kind kind, u64 value)
{
	e->seq = __sync_fetch_and_add(&next_seq, 1);
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->kind = kind;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->value = value;
}

static long reserve_one(u64 i, struct loop_ctx *lc)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	fill(e, EV_RESERVED, lc->value + i);
	if (lc->discard_odd && (e->seq & 1))
		bpf_ringbuf_discard(e, 0);
	else
		bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Test run: ctx[0] records reserved and submitted into events, values ctx[1] + i;
 * ctx[2] != 0 discards those with an odd sequence number. */
SEC("raw_tp")
int emit_reserved(u64 *ctx)
{
	struct loop_ctx lc = { .value = ctx[1], .discard_odd = ctx[2] };

	bpf_loop(ctx[0], reserve_one, &lc, 0);
	return 0;
}

static long output_one(u64 i, struct loop_ctx *lc)
{
	struct event e = {};

	fill(&e, EV_OUTPUT, lc->value + i);
	if (bpf_ringbuf_output(&audit, &e, sizeof(e), 0))
		__sync_fetch_and_add(&dropped, 1);
	return 0;
}

/* Test run: ctx[0] events copied into audit with bpf_ringbuf_output. */
SEC("raw_tp")
int emit_output(u64 *ctx)
{
	struct loop_ctx lc = { .value = ctx[1] };

	bpf_loop(ctx[0], output_one, &lc, 0);
	return 0;
}

static long sized_one(u64 i, struct loop_ctx *lc)
{
	u64 len = (lc->value + i) & 63;

	if (bpf_ringbuf_output(&events, (void *)pattern, len, 0))
		__sync_fetch_and_add(&dropped, 1);
	return 0;
}

/* Test run: ctx[0] records of 0..63 bytes (not multiples of 8) into events. */
SEC("raw_tp")
int emit_sized(u64 *ctx)
{
	struct loop_ctx lc = { .value = ctx[1] };

	bpf_loop(ctx[0], sized_one, &lc, 0);
	return 0;
}

static long spin(u64 i, void *unused)
{
	return 0;
}

u32 release_held = 0;	/* user space: "I have looked, submit the first record" */

static long spin_more(u64 i, void *unused)
{
	if (*(volatile u32 *)&release_held)
		return 1;	/* released: stop spinning */
	bpf_loop(1 << 16, spin, NULL, 0);
	return 0;
}

/* Test run: two records reserved, the second submitted, then idle loop rounds (at most ctx[0] * 65536)
 * until user space sets release_held: meanwhile the first is busy and holds back the second. */
SEC("raw_tp")
int emit_held(u64 *ctx)
{
	struct event *first, *second;

	first = bpf_ringbuf_reserve(&events, sizeof(*first), 0);
	if (!first)
		return 0;
	second = bpf_ringbuf_reserve(&events, sizeof(*second), 0);
	if (!second) {
		bpf_ringbuf_discard(first, 0);
		return 0;
	}
	fill(first, EV_RESERVED, 1);
	fill(second, EV_RESERVED, 2);
	bpf_ringbuf_submit(second, 0);
	bpf_loop(ctx[0], spin_more, NULL, 0);
	bpf_ringbuf_submit(first, 0);
	return 0;
}

static long perf_one(u64 i, struct loop_ctx *lc)
{
	struct event e = {};

	fill(&e, EV_PERF, lc->value + i);
	if (bpf_perf_event_output(lc->ctx, &samples, BPF_F_CURRENT_CPU, &e, sizeof(e)))
		__sync_fetch_and_add(&perf_failed, 1);
	return 0;
}

/* Test run: ctx[0] samples written to this CPU's perf event. */
SEC("raw_tp")
int emit_perf(u64 *ctx)
{
	struct loop_ctx lc = { .ctx = ctx, .value = ctx[1] };

	bpf_loop(ctx[0], perf_one, &lc, 0);
	return 0;
}

/* Every getppid() of the test process: one record into each of the three buffers. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;
	struct event copy = {};

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	fill(e, EV_SYSCALL, 0);
	copy = *e;
	bpf_ringbuf_submit(e, 0);
	if (bpf_ringbuf_output(&audit, &copy, sizeof(copy), 0))
		__sync_fetch_and_add(&dropped, 1);
	if (bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &copy, sizeof(copy)))
		__sync_fetch_and_add(&perf_failed, 1);
	return 0;
}
