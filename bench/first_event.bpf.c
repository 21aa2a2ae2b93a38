// SPDX-License-Identifier: GPL-2.0
// The small tool of bench/whole_start.py's time to first event: two tracepoints on getpgid, one ring buffer.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* getpgid() of this pid (none has it: pid_max is at most 2^22) marks the tool's own trigger. */
#define MAGIC_PID 0x5eed1e

struct event {
	u32 pid;
	u32 pad;
	u64 took_ns;
	s64 ret;
};

struct event *event_type __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} started SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpgid")
int getpgid_enter(struct trace_event_raw_sys_enter *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();
	u64 now = bpf_ktime_get_ns();

	if (ctx->args[0] != MAGIC_PID)
		return 0;
	bpf_map_update_elem(&started, &tid, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_getpgid")
int getpgid_exit(struct trace_event_raw_sys_exit *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();
	u64 *since = bpf_map_lookup_elem(&started, &tid);
	struct event *e;

	if (!since)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->pid = bpf_get_current_pid_tgid() >> 32;
		e->pad = 0;
		e->took_ns = bpf_ktime_get_ns() - *since;
		e->ret = ctx->ret;
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&started, &tid);
	return 0;
}
