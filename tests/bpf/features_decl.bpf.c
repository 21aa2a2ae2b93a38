// SPDX-License-Identifier: GPL-2.0
// A small application whose object carries its own feature map in BTF decl tags (dynbpf.h):
//   process: exec (fexit, else tp_btf, else a tracepoint), exit best-effort
//   files:   open (fexit, else a kprobe pair) and exec (the hook process shares), requires process
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <dynbpf.h>

char LICENSE[] SEC("license") = "GPL";

enum { EV_EXEC, EV_EXIT, EV_OPEN, EV_COUNT };

u64 events[EV_COUNT] = {};

/* A subprogram every handler calls: no tags of its own. */
__noinline int count_event(u32 kind)
{
	if (kind < EV_COUNT)
		__sync_fetch_and_add(&events[kind], 1);
	return 0;
}

DYNBPF_FEATURE("process")
DYNBPF_FEATURE("files")
DYNBPF_HOOK("exec")
DYNBPF_REQUIRES("trampolines")
SEC("fexit/begin_new_exec")
int BPF_PROG(exec_fexit, struct linux_binprm *bprm, int ret)
{
	return count_event(EV_EXEC);
}

DYNBPF_HOOK("exec")
DYNBPF_PREFER(1)
DYNBPF_REQUIRES("tracing")
SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return count_event(EV_EXEC);
}

DYNBPF_HOOK("exec")
DYNBPF_VARIANT("tracepoint")
DYNBPF_PREFER(2)
DYNBPF_REQUIRES("tracepoint:sched/sched_process_exec")
DYNBPF_ATTACH("category", "sched")
DYNBPF_ATTACH("event", "sched_process_exec")
SEC("tp")
int exec_tp(void *ctx)
{
	return count_event(EV_EXEC);
}

__attribute__((btf_decl_tag("other:not_ours"))) /* someone else's tag: ignored */
DYNBPF_FEATURE("process")
DYNBPF_BEST_EFFORT
DYNBPF_HOOK("exit")
SEC("tp/sched/sched_process_exit")
int exit_tp(void *ctx)
{
	return count_event(EV_EXIT);
}

DYNBPF_FEATURE("files")
DYNBPF_FEATURE_REQUIRES("files", "process")
DYNBPF_HOOK("open")
DYNBPF_REQUIRES("trampolines")
SEC("fexit/do_sys_openat2")
int BPF_PROG(open_fexit, int dfd, const char *filename, struct open_how *how, long ret)
{
	return count_event(EV_OPEN);
}

DYNBPF_HOOK("open")
DYNBPF_VARIANT("kprobes")
DYNBPF_PREFER(1)
DYNBPF_REQUIRES("kprobe")
SEC("kprobe/do_sys_openat2")
int open_entry(struct pt_regs *ctx)
{
	return 0;
}

DYNBPF_HOOK("open")
DYNBPF_VARIANT("kprobes")
DYNBPF_REQUIRES("helper:kprobe/bpf_get_current_task_btf")
SEC("kretprobe/do_sys_openat2")
int open_return(struct pt_regs *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return task->pid ? count_event(EV_OPEN) : 0;
}
