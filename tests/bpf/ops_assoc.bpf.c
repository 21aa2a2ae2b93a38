// SPDX-License-Identifier: GPL-2.0
// struct_ops association (BPF_PROG_ASSOC_STRUCT_OPS, Linux 7.0): two struct_ops maps, each with its own
// programs (a program shared by two maps would be "poisoned"), and programs that are not struct_ops
// programs, to tie to one of them.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern __u32 tcp_reno_ssthresh(struct sock *sk) __ksym;
extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;

__u64 getppid_calls;
__u64 getppid_calls_b;
const volatile __u64 getppid_step = 1; /* a constant: set_constants reloads count_getppid */

SEC("struct_ops/a_ssthresh")
__u32 BPF_PROG(a_ssthresh, struct sock *sk)
{
	return tcp_reno_ssthresh(sk);
}

SEC("struct_ops/a_cong_avoid")
void BPF_PROG(a_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	tcp_reno_cong_avoid(sk, ack, acked);
}

SEC("struct_ops/a_undo_cwnd")
__u32 BPF_PROG(a_undo_cwnd, struct sock *sk)
{
	return tcp_reno_undo_cwnd(sk);
}

SEC("struct_ops/b_ssthresh")
__u32 BPF_PROG(b_ssthresh, struct sock *sk)
{
	return tcp_reno_ssthresh(sk);
}

SEC("struct_ops/b_cong_avoid")
void BPF_PROG(b_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	tcp_reno_cong_avoid(sk, ack, acked);
}

SEC("struct_ops/b_undo_cwnd")
__u32 BPF_PROG(b_undo_cwnd, struct sock *sk)
{
	return tcp_reno_undo_cwnd(sk);
}

SEC(".struct_ops")
struct tcp_congestion_ops assoc_a = {
	.ssthresh = (void *)a_ssthresh,
	.cong_avoid = (void *)a_cong_avoid,
	.undo_cwnd = (void *)a_undo_cwnd,
	.name = "dynbpf_assoc_a",
};

SEC(".struct_ops")
struct tcp_congestion_ops assoc_b = {
	.ssthresh = (void *)b_ssthresh,
	.cong_avoid = (void *)b_cong_avoid,
	.undo_cwnd = (void *)b_undo_cwnd,
	.name = "dynbpf_assoc_b",
};

/* Not struct_ops programs: what an association ties to a struct_ops map. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	__sync_fetch_and_add(&getppid_calls, getppid_step);
	return 0;
}

/* The same hook's other variant (a feature switches between the two). */
SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid_b(void *ctx)
{
	__sync_fetch_and_add(&getppid_calls_b, 1);
	return 0;
}

SEC("socket")
int assoc_filter(struct __sk_buff *skb)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
