// SPDX-License-Identifier: GPL-2.0
// Programs for the attach tests: one per attachable kind (tp, raw_tp, tp_btf, uprobe, uretprobe, perf_event, iter), each counting its own events in .bss
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define NR_GETPGID 121
#define NR_GETGID 104

const volatile u32 target_tgid = 0;

u64 tp_hits = 0;
u64 tp_any_hits = 0;
u64 tp_cookie = 0;
u64 raw_hits = 0;
u64 btf_hits = 0;
u64 libc_hits = 0;
u64 up_hits = 0;
u64 up_last_arg = 0;
u64 uret_hits = 0;
u64 uret_last = 0;
u64 clock_hits = 0;
u64 iter_hits = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} numbers SEC(".maps");

static __always_inline bool mine(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("tp/syscalls/sys_enter_getppid")
int tp_getppid(void *ctx)
{
	if (mine())
		__sync_fetch_and_add(&tp_hits, 1);
	return 0;
}

// No target in the section: the test names the tracepoint at attach time.
SEC("tp")
int tp_any(void *ctx)
{
	if (mine()) {
		__sync_fetch_and_add(&tp_any_hits, 1);
		tp_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("raw_tp/sys_enter")
int raw_getpgid(struct bpf_raw_tracepoint_args *ctx)
{
	if (mine() && ctx->args[1] == NR_GETPGID)
		__sync_fetch_and_add(&raw_hits, 1);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(btf_getgid, struct pt_regs *regs, long id)
{
	if (mine() && id == NR_GETGID)
		__sync_fetch_and_add(&btf_hits, 1);
	return 0;
}

SEC("uprobe/libc.so.6:getpid")
int BPF_KPROBE(libc_getpid)
{
	if (mine())
		__sync_fetch_and_add(&libc_hits, 1);
	return 0;
}

// Bare uprobe/uretprobe: path, symbol and pid come from the test.
SEC("uprobe")
int BPF_KPROBE(up_any, long arg)
{
	__sync_fetch_and_add(&up_hits, 1);
	up_last_arg = arg;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(uret_any, long ret)
{
	__sync_fetch_and_add(&uret_hits, 1);
	uret_last = ret;
	return 0;
}

SEC("perf_event")
int on_clock(struct bpf_perf_event_data *ctx)
{
	__sync_fetch_and_add(&clock_hits, 1);
	return 0;
}

SEC("iter/task")
int task_lines(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	__sync_fetch_and_add(&iter_hits, 1);
	if (task->pid == task->tgid)
		BPF_SEQ_PRINTF(seq, "%d %s\n", task->tgid, task->comm);
	return 0;
}

// Same target as task_lines, another format: a link running one can be updated to the other.
SEC("iter/task")
int task_pids(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && task->pid == task->tgid)
		BPF_SEQ_PRINTF(ctx->meta->seq, "pid=%d\n", task->tgid);
	return 0;
}

SEC("iter/bpf_map_elem")
int number_lines(struct bpf_iter__bpf_map_elem *ctx)
{
	u32 *key = ctx->key;
	u64 *value = ctx->value;

	if (key && value)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%u=%llu\n", *key, *value);
	return 0;
}
