// SPDX-License-Identifier: GPL-2.0
// The seed scenario as a feature-driven agent (examples/feature_agent.py): the object carries its own feature
// map in BTF decl tags (dynbpf.h), so the agent needs no Python declaration.
//
//   process   exec (fexit, else tp_btf, else a tracepoint) and exit (best-effort)
//   files     openat (fexit, else a tracepoint); switches process on with it
//   network   connect (a tracepoint)
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <dynbpf.h>

char LICENSE[] SEC("license") = "GPL";

const volatile u32 ignore_tgid = 0; /* events of this process are dropped: set at runtime with set_constants */

enum kind { EXEC = 0, EXIT = 1, OPEN = 2, CONNECT = 3, KINDS = 4 };

struct event {
	u32 kind;
	u32 tgid;
	char comm[16];
};

struct event *event_type __attribute__((unused)); /* puts struct event in BTF, for the reader's records */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KINDS);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

static __always_inline int emit(u32 kind)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;
	u64 *n;

	if (ignore_tgid && tgid == ignore_tgid)
		return 0;
	n = bpf_map_lookup_elem(&counts, &kind);
	if (n)
		__sync_fetch_and_add(n, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->kind = kind;
	e->tgid = tgid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

DYNBPF_FEATURE("process")
DYNBPF_HOOK("exec")
DYNBPF_REQUIRES("trampolines")
SEC("fexit/begin_new_exec")
int BPF_PROG(exec_fexit, struct linux_binprm *bprm, int ret)
{
	return ret ? 0 : emit(EXEC);
}

DYNBPF_HOOK("exec")
DYNBPF_PREFER(1)
DYNBPF_REQUIRES("tracing")
SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return emit(EXEC);
}

DYNBPF_HOOK("exec")
DYNBPF_PREFER(2)
SEC("tracepoint/sched/sched_process_exec")
int exec_tp(void *ctx)
{
	return emit(EXEC);
}

DYNBPF_FEATURE("process")
DYNBPF_BEST_EFFORT
DYNBPF_HOOK("exit")
SEC("tracepoint/sched/sched_process_exit")
int exit_tp(void *ctx)
{
	return emit(EXIT);
}

DYNBPF_FEATURE("files")
DYNBPF_FEATURE_REQUIRES("files", "process")
DYNBPF_HOOK("openat")
DYNBPF_REQUIRES("trampolines")
SEC("fexit/do_sys_openat2")
int BPF_PROG(openat_fexit, int dfd, const char *filename, struct open_how *how, long ret)
{
	return emit(OPEN);
}

DYNBPF_HOOK("openat")
DYNBPF_PREFER(1)
SEC("tracepoint/syscalls/sys_enter_openat")
int openat_tp(void *ctx)
{
	return emit(OPEN);
}

DYNBPF_FEATURE("network")
DYNBPF_HOOK("connect")
SEC("tracepoint/syscalls/sys_enter_connect")
int connect_tp(void *ctx)
{
	return emit(CONNECT);
}
