// SPDX-License-Identifier: GPL-2.0
// struct_ops: two tcp_congestion_ops, one in .struct_ops and one in
// .struct_ops.link, with their struct_ops/ program slots (one sleepable, struct_ops.s/).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern __u32 tcp_reno_ssthresh(struct sock *sk) __ksym;
extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;

__u64 inits;
__u64 link_inits;
__u64 acks;	/* cong_avoid calls: the congestion control ran on a connection */
__u64 link_acks;

/* The verifier types a tcp_congestion_ops socket argument as tcp_sock. */
static __always_inline const struct tcp_sock *tcp_sk(const struct sock *sk)
{
	return (const struct tcp_sock *)sk;
}

SEC("struct_ops/dyn_init")
void BPF_PROG(dyn_init, struct sock *sk)
{
	__sync_fetch_and_add(&inits, 1);
}

SEC("struct_ops/dyn_ssthresh")
__u32 BPF_PROG(dyn_ssthresh, struct sock *sk)
{
	__u32 half = tcp_sk(sk)->snd_cwnd >> 1;

	return half > 2 ? half : 2;
}

SEC("struct_ops/dyn_cong_avoid")
void BPF_PROG(dyn_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	__sync_fetch_and_add(&acks, 1);
	tcp_reno_cong_avoid(sk, ack, acked);
}

SEC("struct_ops/dyn_undo_cwnd")
__u32 BPF_PROG(dyn_undo_cwnd, struct sock *sk)
{
	const struct tcp_sock *tp = tcp_sk(sk);

	return tp->snd_cwnd > tp->prior_cwnd ? tp->snd_cwnd : tp->prior_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops dynbpf_reno = {
	.init = (void *)dyn_init,
	.ssthresh = (void *)dyn_ssthresh,
	.cong_avoid = (void *)dyn_cong_avoid,
	.undo_cwnd = (void *)dyn_undo_cwnd,
	.name = "dynbpf_reno",
};

SEC("struct_ops.s/dyn_link_init")
void BPF_PROG(dyn_link_init, struct sock *sk)
{
	__sync_fetch_and_add(&link_inits, 1);
}

SEC("struct_ops/dyn_link_ssthresh")
__u32 BPF_PROG(dyn_link_ssthresh, struct sock *sk)
{
	return tcp_reno_ssthresh(sk);
}

SEC("struct_ops/dyn_link_cong_avoid")
void BPF_PROG(dyn_link_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	__sync_fetch_and_add(&link_acks, 1);
	tcp_reno_cong_avoid(sk, ack, acked);
}

SEC("struct_ops/dyn_link_undo_cwnd")
__u32 BPF_PROG(dyn_link_undo_cwnd, struct sock *sk)
{
	return tcp_reno_undo_cwnd(sk);
}

/* Registered through a BPF link (BPF_F_LINK map flag) rather than by map update. */
SEC(".struct_ops.link")
struct tcp_congestion_ops dynbpf_reno_link = {
	.init = (void *)dyn_link_init,
	.ssthresh = (void *)dyn_link_ssthresh,
	.cong_avoid = (void *)dyn_link_cong_avoid,
	.undo_cwnd = (void *)dyn_link_undo_cwnd,
	.name = "dynbpf_reno_lnk",
};

char LICENSE[] SEC("license") = "GPL";
