// SPDX-License-Identifier: GPL-2.0
// Externs resolved at load: .kconfig (libbpf's own, bool, tristate, int, string,
// weak and missing), typed and untyped .ksyms variables, kfuncs, weak ksym/kfunc.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

extern int LINUX_KERNEL_VERSION __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig;
extern bool CONFIG_DYNBPF_NO_SUCH_OPTION __kconfig __weak;
extern enum libbpf_tristate CONFIG_TCP_CONG_CUBIC __kconfig __weak;
extern int CONFIG_HZ __kconfig __weak;
extern char CONFIG_LOCALVERSION[64] __kconfig __weak;

/* A per-CPU variable with its BTF type (found in kernel BTF). */
extern const struct rq runqueues __ksym;
/* Untyped: only an address, looked up in /proc/kallsyms. Data symbols such as
 * bpf_prog_active are listed there only with CONFIG_KALLSYMS_ALL, hence weak. */
extern const void __start_BTF __ksym;
extern const void __stop_BTF __ksym;
extern const void bpf_prog_active __ksym __weak;
extern const int dynbpf_no_such_symbol __ksym __weak;

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void dynbpf_no_such_kfunc(void) __ksym __weak;

struct snapshot {
	__u32 kernel_version;
	__u32 hz;
	__u32 cubic;
	__u8 bpf_syscall;
	__u8 no_such_option;
	__u8 have_missing_sym;
	__u8 have_missing_kfunc;
	__u32 nr_running;
	__u64 prog_active_addr;
	__u64 btf_size;
	__u32 acquired_pid;
	__u32 found_pid;
	char localversion[8];
};

struct snapshot snap;

SEC("tp_btf/task_newtask")
int BPF_PROG(acquire_new_task, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *held, *found;

	snap.kernel_version = LINUX_KERNEL_VERSION;
	snap.hz = CONFIG_HZ;
	snap.cubic = CONFIG_TCP_CONG_CUBIC;
	snap.bpf_syscall = CONFIG_BPF_SYSCALL;
	snap.no_such_option = CONFIG_DYNBPF_NO_SUCH_OPTION;
	snap.have_missing_sym = &dynbpf_no_such_symbol != 0;
	snap.have_missing_kfunc = dynbpf_no_such_kfunc != 0;
	__builtin_memcpy(snap.localversion, CONFIG_LOCALVERSION, sizeof(snap.localversion));

	snap.prog_active_addr = (__u64)&bpf_prog_active;
	snap.btf_size = &__stop_BTF - &__start_BTF;

	held = bpf_task_acquire(task);
	if (!held)
		return 0;
	snap.acquired_pid = held->pid;
	bpf_task_release(held);

	if (bpf_task_from_pid) {
		found = bpf_task_from_pid(1);
		if (found) {
			snap.found_pid = found->pid;
			bpf_task_release(found);
		}
	}
	return 0;
}

/* The kernel resolves typed ksyms through kallsyms too, so per-CPU variables
 * load only with CONFIG_KALLSYMS_ALL: off by default, enabled by whoever knows. */
SEC("?perf_event")
int runqueue_depth(struct bpf_perf_event_data *ctx)
{
	const struct rq *rq = bpf_this_cpu_ptr(&runqueues);

	snap.nr_running = rq->nr_running;
	return 0;
}

SEC("ksyscall/kill")
int BPF_KSYSCALL(kill_version, pid_t pid, int sig)
{
	if (LINUX_KERNEL_VERSION < KERNEL_VERSION(5, 15, 0) || sig != 0)
		return 0;
	snap.kernel_version = LINUX_KERNEL_VERSION;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
