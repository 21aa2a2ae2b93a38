// SPDX-License-Identifier: GPL-2.0
// The agent the README's library example opens: exec/exit/openat handlers, an event ring buffer, counters.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

const volatile u32 target_tgid = 0; /* 0: every process */

enum event_kind {
	EV_EXEC = 1,
	EV_EXIT = 2,
	EV_OPEN = 3,
};

struct proc {
	u32 pid;
	char comm[16];
};

struct event {
	enum event_kind kind;
	struct proc proc;
};

struct event *event_type __attribute__((unused)); /* puts struct event in BTF */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} exec_count SEC(".maps");

u64 hits;

static __always_inline int emit(enum event_kind kind)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;

	if (target_tgid && tgid != target_tgid)
		return 0;
	__sync_fetch_and_add(&hits, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->kind = kind;
	e->proc.pid = tgid;
	bpf_get_current_comm(e->proc.comm, sizeof(e->proc.comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/sched/sched_process_exec")
int handle_exec(void *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u64 one = 1, *n = bpf_map_lookup_elem(&exec_count, &tgid);

	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&exec_count, &tgid, &one, BPF_ANY);
	return emit(EV_EXEC);
}

SEC("tp/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	return emit(EV_EXIT);
}

SEC("tp/syscalls/sys_enter_openat")
int handle_open(void *ctx)
{
	return emit(EV_OPEN);
}
