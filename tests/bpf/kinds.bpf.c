// SPDX-License-Identifier: GPL-2.0
// One program per section convention (program type, attach type, target), a
// USDT probe, and a "?"-prefixed section whose program is not loaded by default.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>

#define TC_ACT_OK 0
#define NF_ACCEPT 1
/* TCX_NEXT, spelt out: enum tcx_action_base is 6.6+ and older kernels' vmlinux.h lack it */
#define KINDS_TCX_NEXT -1

/* Every program bumps its own slot, so a test can tell which ones ran. (Not "enum slot": every
 * Debian kernel's vmlinux.h has a struct slot, and C tags share one namespace.) */
enum kinds_slot {
	S_TP, S_TRACEPOINT, S_RAW_TP, S_RAW_TRACEPOINT, S_TP_BTF,
	S_UPROBE, S_UPROBE_TARGET, S_URETPROBE, S_KPROBE, S_KRETPROBE,
	S_KPROBE_MULTI, S_UPROBE_MULTI, S_USDT, S_KSYSCALL, S_KRETSYSCALL,
	S_FENTRY, S_FEXIT, S_FMOD_RET, S_LSM, S_LSM_S,
	S_XDP, S_XDP_FRAGS, S_TC, S_TCX_IN, S_TCX_OUT,
	S_CGROUP_SKB, S_SOCK_CREATE, S_CONNECT4, S_SOCKET, S_ITER_TASK,
	S_ITER_MAP, S_PERF_EVENT, S_SK_MSG, S_SOCKOPS, S_FLOW_DISSECTOR,
	S_NETFILTER, S_SYSCALL, S_OPTIONAL, NR_SLOTS,
};

__u64 ran[NR_SLOTS];
__u64 last_value[NR_SLOTS];

static __always_inline void hit(enum kinds_slot s, __u64 value)
{
	__sync_fetch_and_add(&ran[s], 1);
	last_value[s] = value;
}

SEC("tp/sched/sched_process_fork")
int tp_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	hit(S_TP, ctx->child_pid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int tracepoint_openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	hit(S_TRACEPOINT, ctx->ret);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int raw_tp_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (void *)ctx->args[0];

	hit(S_RAW_TP, BPF_CORE_READ(task, pid));
	return 0;
}

SEC("raw_tracepoint/sys_exit")
int raw_tracepoint_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	hit(S_RAW_TRACEPOINT, ctx->args[1]);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tp_btf_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	hit(S_TP_BTF, next->pid);
	return 0;
}

/* No target: the attacher supplies binary, offset or symbol. */
SEC("uprobe")
int BPF_KPROBE(uprobe_plain, long arg0)
{
	hit(S_UPROBE, arg0);
	return 0;
}

SEC("uprobe//proc/self/exe:main+0x10")
int BPF_KPROBE(uprobe_main_offset)
{
	hit(S_UPROBE_TARGET, bpf_get_current_pid_tgid() >> 32);
	return 0;
}

SEC("uretprobe/libc.so.6:getpid")
int BPF_KRETPROBE(uretprobe_getpid, int ret)
{
	hit(S_URETPROBE, ret);
	return 0;
}

/* do_sys_openat2: one signature on every kernel of the matrix (do_unlinkat is gone from 7.x) */
SEC("kprobe/do_sys_openat2")
int BPF_KPROBE(kprobe_openat2, int dfd, const char *filename)
{
	hit(S_KPROBE, dfd);
	return 0;
}

SEC("kretprobe/do_sys_openat2")
int BPF_KRETPROBE(kretprobe_openat2, long ret)
{
	hit(S_KRETPROBE, ret);
	return 0;
}

SEC("kprobe.multi/vfs_*")
int kprobe_multi_vfs(struct pt_regs *ctx)
{
	hit(S_KPROBE_MULTI, bpf_get_func_ip(ctx));
	return 0;
}

SEC("uprobe.multi/libc.so.6:getpp*")
int uprobe_multi_getpp(struct pt_regs *ctx)
{
	hit(S_UPROBE_MULTI, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("usdt/libc.so.6:libc:setjmp")
int BPF_USDT(usdt_setjmp, void *env, int savemask)
{
	hit(S_USDT, savemask);
	return 0;
}

SEC("ksyscall/openat")
int BPF_KSYSCALL(ksyscall_openat, int dfd, const char *pathname)
{
	hit(S_KSYSCALL, dfd);
	return 0;
}

SEC("kretsyscall/openat")
int BPF_KRETPROBE(kretsyscall_openat, long ret)
{
	hit(S_KRETSYSCALL, ret);
	return 0;
}

SEC("fentry/do_sys_openat2")
int BPF_PROG(fentry_openat2, int dfd, const char *filename)
{
	hit(S_FENTRY, dfd);
	return 0;
}

SEC("fexit/do_sys_openat2")
int BPF_PROG(fexit_openat2, int dfd, const char *filename, void *how, long ret)
{
	hit(S_FEXIT, ret);
	return 0;
}

/* Returning 0 leaves the traced function's own result in place. */
SEC("fmod_ret/bpf_modify_return_test")
int BPF_PROG(fmod_ret_test, int a, int *b, int ret)
{
	hit(S_FMOD_RET, a);
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file, int ret)
{
	hit(S_LSM, file->f_flags);
	return ret;
}

SEC("lsm.s/bprm_committed_creds")
int BPF_PROG(lsm_s_committed_creds, struct linux_binprm *bprm)
{
	char comm[16];

	bpf_get_current_comm(comm, sizeof(comm));
	hit(S_LSM_S, comm[0]);
	return 0;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	hit(S_XDP, ctx->data_end - ctx->data);
	return XDP_PASS;
}

SEC("xdp.frags")
int xdp_frags_pass(struct xdp_md *ctx)
{
	hit(S_XDP_FRAGS, bpf_xdp_get_buff_len(ctx));
	return XDP_PASS;
}

SEC("tc")
int tc_classify(struct __sk_buff *skb)
{
	hit(S_TC, skb->len);
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int tcx_ingress(struct __sk_buff *skb)
{
	hit(S_TCX_IN, skb->len);
	return KINDS_TCX_NEXT;
}

SEC("tcx/egress")
int tcx_egress(struct __sk_buff *skb)
{
	hit(S_TCX_OUT, skb->len);
	return KINDS_TCX_NEXT;
}

SEC("cgroup_skb/ingress")
int cgroup_skb_ingress(struct __sk_buff *skb)
{
	hit(S_CGROUP_SKB, skb->len);
	return 1;
}

SEC("cgroup/sock_create")
int cgroup_sock_create(struct bpf_sock *sk)
{
	hit(S_SOCK_CREATE, sk->family);
	return 1;
}

SEC("cgroup/connect4")
int cgroup_connect4(struct bpf_sock_addr *ctx)
{
	hit(S_CONNECT4, ctx->user_port);
	return 1;
}

SEC("socket")
int socket_filter(struct __sk_buff *skb)
{
	hit(S_SOCKET, skb->len);
	return skb->len;
}

SEC("iter/task")
int iter_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	hit(S_ITER_TASK, task->pid);
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d %s\n", task->pid, task->comm);
	return 0;
}

SEC("iter/bpf_map")
int iter_bpf_map(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;

	if (!map)
		return 0;
	hit(S_ITER_MAP, map->id);
	BPF_SEQ_PRINTF(ctx->meta->seq, "%u\n", map->id);
	return 0;
}

SEC("perf_event")
int perf_event_sample(struct bpf_perf_event_data *ctx)
{
	hit(S_PERF_EVENT, ctx->sample_period);
	return 0;
}

SEC("sk_msg")
int sk_msg_pass(struct sk_msg_md *msg)
{
	hit(S_SK_MSG, msg->size);
	return SK_PASS;
}

SEC("sockops")
int sockops_observe(struct bpf_sock_ops *ops)
{
	hit(S_SOCKOPS, ops->op);
	return 1;
}

SEC("flow_dissector")
int flow_dissect(struct __sk_buff *skb)
{
	struct bpf_flow_keys *keys = skb->flow_keys;

	hit(S_FLOW_DISSECTOR, keys->n_proto);
	return BPF_FLOW_DISSECTOR_CONTINUE;
}

/* struct bpf_nf_ctx is 6.4+ (6.1's vmlinux.h lacks it) and unused here: untyped */
SEC("netfilter")
int netfilter_accept(void *ctx)
{
	hit(S_NETFILTER, 1);
	return NF_ACCEPT;
}

SEC("syscall")
int syscall_prog(void *ctx)
{
	hit(S_SYSCALL, bpf_ktime_get_ns());
	return 0;
}

SEC("?fentry/vfs_read")
int BPF_PROG(optional_vfs_read, struct file *file)
{
	hit(S_OPTIONAL, file->f_flags);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
