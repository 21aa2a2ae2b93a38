// SPDX-License-Identifier: GPL-2.0
// The agent the README's and docs' examples open: exec/exit/openat handlers, a ring and a perf buffer, a uprobe
// and a task iterator, counters, a CO-RE read.
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

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

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} samples SEC(".maps");

u64 hits;
u64 mallocs;
u32 last_parent; /* the exec'ing task's parent, read through CO-RE */

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

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&exec_count, &tgid, &one, BPF_ANY);
	last_parent = BPF_CORE_READ(task, real_parent, tgid);
	return emit(EV_EXEC);
}

SEC("tp/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	struct event e = { .kind = EV_EXIT, .proc.pid = bpf_get_current_pid_tgid() >> 32 };

	bpf_get_current_comm(e.proc.comm, sizeof(e.proc.comm));
	bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return emit(EV_EXIT);
}

SEC("tp/syscalls/sys_enter_openat")
int handle_open(void *ctx)
{
	return emit(EV_OPEN);
}

SEC("uprobe")
int count_malloc(void *ctx)
{
	__sync_fetch_and_add(&mallocs, 1);
	return 0;
}

SEC("iter/task")
int dump_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && task->pid == task->tgid)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d %s\n", task->tgid, task->comm);
	return 0;
}
