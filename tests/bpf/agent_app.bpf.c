// SPDX-License-Identifier: GPL-2.0
// The agent's test application (tests/test_agent_*.py): it declares its own features in decl tags, so a
// configuration names only the object. getpgid(SEQ_BASE + seq) calls are what it counts, as features_app does:
//   seq    hook getpgid: a tracepoint, else a raw tracepoint; marks seen[seq], counts, emits an event
//   ppid   hook getppid: a tracepoint counting getppid calls
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <dynbpf.h>

char LICENSE[] SEC("license") = "GPL";

#ifndef VERSION
#define VERSION 1 /* tests/test_agent_restart.py builds a version 2: a changed program, to be replaced */
#endif
#define SEQ_BASE 0x40000000ULL
#define SEQ_MAX (1 << 16)
#define NR_GETPGID 121 /* x86-64 */

const volatile u64 weight = 1; /* added to counters[1] per event: set_constants changes it */

struct event {
	u64 seq;
	u32 pid;
	char comm[16];
};

struct event *event_type __attribute__((unused)); /* puts struct event in BTF, for the agent's reader */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SEQ_MAX);
	__type(key, u32);
	__type(value, u32);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps"); /* [0] getpgid events, [1] their weights, [2] getppid events, [3] VERSION per event */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} by_pid SEC(".maps"); /* getpgid events per process */

static __always_inline void add(u32 key, u64 n)
{
	u64 *sum = bpf_map_lookup_elem(&counters, &key);

	if (sum)
		__sync_fetch_and_add(sum, n);
}

static __always_inline int record(u64 arg)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;
	u64 one = 1, *n;
	u32 seq, *hit;

	if (arg < SEQ_BASE || arg >= SEQ_BASE + SEQ_MAX)
		return 0;
	seq = arg - SEQ_BASE;
	hit = bpf_map_lookup_elem(&seen, &seq);
	if (hit)
		__sync_fetch_and_add(hit, 1);
	add(0, 1);
	add(1, weight);
	add(3, VERSION);
	n = bpf_map_lookup_elem(&by_pid, &pid);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&by_pid, &pid, &one, BPF_ANY);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->seq = seq;
	e->pid = pid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

DYNBPF_FEATURE("seq")
DYNBPF_HOOK("getpgid")
SEC("tracepoint/syscalls/sys_enter_getpgid")
int tp_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	return record(ctx->args[0]);
}

DYNBPF_HOOK("getpgid")
DYNBPF_PREFER(1)
SEC("raw_tp/sys_enter")
int raw_getpgid(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

	if (ctx->args[1] != NR_GETPGID)
		return 0;
	return record(BPF_CORE_READ(regs, di));
}

DYNBPF_FEATURE("ppid")
DYNBPF_HOOK("getppid")
SEC("tracepoint/syscalls/sys_enter_getppid")
int tp_getppid(struct trace_event_raw_sys_enter *ctx)
{
	add(2, 1);
	return 0;
}
