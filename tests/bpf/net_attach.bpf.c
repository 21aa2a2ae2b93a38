// SPDX-License-Identifier: GPL-2.0
// Programs attached to a network namespace, a socket map, a cgroup or an
// interface, each with an effect a test can see: a connection steered to
// another socket, a message dropped or redirected, a syscall denied, a
// packet dropped. Counters in .bss say how often each ran. Only uapi types
// (stable since long before 6.1) and constants defined here with a NETATT_
// prefix, so the fixture builds against every kernel of the matrix.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define NETATT_ETH_P_IP 0x0800
#define NETATT_ETH_HLEN 14
#define NETATT_TCX_NEXT -1
#define NETATT_TCX_DROP 2
#define NETATT_SOL_SOCKET 1
#define NETATT_SO_SNDBUF 7
#define NETATT_DEV_CHAR 2 /* BPF_DEVCG_DEV_CHAR */

/* sk_lookup: connections to steer_port go to the listening socket in lookup_socks[0]. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lookup_socks SEC(".maps");

/* sk_msg: [0] sends through the program, [1] receives what it redirects. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} msg_socks SEC(".maps");

/* sk_skb: receivers whose incoming data the verdict programs judge (a sockhash and a sockmap). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stream_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} verdict_socks SEC(".maps");

__u32 steer_port;
__u64 lookups, steered;
__u64 msg_passed, msg_dropped, msg_redirected, msg_bytes;
__u64 parsed, skb_passed, skb_dropped;
__u64 sockops_seen[16];
__u64 dissected;
__u32 dissected_dport;
__u32 deny_port, drop_port;
__u64 connect_denied, egress_seen, egress_dropped, sysctl_denied, sockopt_denied, dev_denied;
__u64 tcx_seen, tcx_dropped;
__u64 netkit_primary_seen, netkit_peer_seen;

SEC("sk_lookup")
int steer_lookup(struct bpf_sk_lookup *ctx)
{
	__u32 zero = 0;
	struct bpf_sock *sk;
	long err;

	__sync_fetch_and_add(&lookups, 1);
	if (ctx->local_port != steer_port)
		return SK_PASS;
	sk = bpf_map_lookup_elem(&lookup_socks, &zero);
	if (!sk)
		return SK_PASS;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return SK_DROP;
	__sync_fetch_and_add(&steered, 1);
	return SK_PASS;
}

SEC("sk_lookup")
int pass_lookup(struct bpf_sk_lookup *ctx)
{
	__sync_fetch_and_add(&lookups, 1);
	return SK_PASS;
}

/* A message starting with 'X' is refused (sendmsg fails), one starting with 'R' goes to msg_socks[1]. */
SEC("sk_msg")
int judge_msg(struct sk_msg_md *msg)
{
	void *data = msg->data, *end = msg->data_end;
	char first;

	if (data + 1 > end)
		return SK_PASS;
	first = *(char *)data;
	__sync_fetch_and_add(&msg_bytes, msg->size);
	if (first == 'X') {
		__sync_fetch_and_add(&msg_dropped, 1);
		return SK_DROP;
	}
	if (first == 'R') {
		__sync_fetch_and_add(&msg_redirected, 1);
		return bpf_msg_redirect_map(msg, &msg_socks, 1, BPF_F_INGRESS);
	}
	__sync_fetch_and_add(&msg_passed, 1);
	return SK_PASS;
}

SEC("sk_msg")
int pass_msg(struct sk_msg_md *msg)
{
	__sync_fetch_and_add(&msg_passed, 1);
	return SK_PASS;
}

SEC("sk_skb/stream_parser")
int whole_skb(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&parsed, 1);
	return skb->len;
}

static __always_inline int judge(struct __sk_buff *skb)
{
	char first = 0;

	if (bpf_skb_load_bytes(skb, 0, &first, 1))
		return SK_PASS;
	if (first == 'X') {
		__sync_fetch_and_add(&skb_dropped, 1);
		return SK_DROP;
	}
	__sync_fetch_and_add(&skb_passed, 1);
	return SK_PASS;
}

/* What a receiver gets: data starting with 'X' is dropped. */
SEC("sk_skb/stream_verdict")
int judge_stream(struct __sk_buff *skb)
{
	return judge(skb);
}

SEC("sk_skb/verdict")
int judge_skb(struct __sk_buff *skb)
{
	return judge(skb);
}

SEC("sockops")
int count_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op < 16)
		__sync_fetch_and_add(&sockops_seen[op], 1);
	return 1;
}

/* Copy len bytes at off: straight from the packet when it is linear there (BPF_PROG_TEST_RUN has no skb
 * behind the context, so bpf_skb_load_bytes fails there), else through the helper.
 */
static __always_inline int packet_bytes(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;

	if (off > 0x1000) /* the verifier tracks packet ranges for small offsets only */
		return bpf_skb_load_bytes(skb, off, to, len);
	if (data + off + len <= end) {
		__builtin_memcpy(to, data + off, len < 20 ? len : 20);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

/* IPv4 UDP: fill the flow keys ourselves; everything else goes to the kernel's dissector. */
SEC("flow_dissector")
int dissect_udp(struct __sk_buff *skb)
{
	struct bpf_flow_keys *keys = skb->flow_keys;
	struct iphdr iph;
	struct udphdr uh;

	__sync_fetch_and_add(&dissected, 1);
	if (keys->n_proto != bpf_htons(NETATT_ETH_P_IP))
		return BPF_FLOW_DISSECTOR_CONTINUE;
	if (packet_bytes(skb, keys->nhoff, &iph, sizeof(iph)))
		return BPF_DROP;
	if (iph.ihl != 5 || iph.protocol != IPPROTO_UDP)
		return BPF_FLOW_DISSECTOR_CONTINUE;
	keys->addr_proto = bpf_htons(NETATT_ETH_P_IP);
	keys->ip_proto = iph.protocol;
	keys->ipv4_src = iph.saddr;
	keys->ipv4_dst = iph.daddr;
	keys->thoff = keys->nhoff + sizeof(iph);
	if (packet_bytes(skb, keys->thoff, &uh, sizeof(uh)))
		return BPF_DROP;
	keys->sport = uh.source;
	keys->dport = uh.dest;
	dissected_dport = bpf_ntohs(uh.dest);
	return BPF_OK;
}

SEC("cgroup/connect4")
int deny_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port != bpf_htons(deny_port))
		return 1;
	__sync_fetch_and_add(&connect_denied, 1);
	return 0;
}

/* cgroup_skb sees the IP header first: UDP datagrams to drop_port are dropped (send fails with EPERM). */
SEC("cgroup_skb/egress")
int drop_egress(struct __sk_buff *skb)
{
	struct iphdr iph;
	struct udphdr uh;

	__sync_fetch_and_add(&egress_seen, 1);
	if (skb->protocol != bpf_htons(NETATT_ETH_P_IP) || bpf_skb_load_bytes(skb, 0, &iph, sizeof(iph)))
		return 1;
	if (iph.ihl != 5 || iph.protocol != IPPROTO_UDP || bpf_skb_load_bytes(skb, sizeof(iph), &uh, sizeof(uh)))
		return 1;
	if (uh.dest != bpf_htons(drop_port))
		return 1;
	__sync_fetch_and_add(&egress_dropped, 1);
	return 0;
}

/* Every sysctl read or write from the cgroup fails with EPERM. */
SEC("cgroup/sysctl")
int deny_sysctl(struct bpf_sysctl *ctx)
{
	__sync_fetch_and_add(&sysctl_denied, 1);
	return 0;
}

SEC("cgroup/getsockopt")
int deny_sndbuf(struct bpf_sockopt *ctx)
{
	if (ctx->level != NETATT_SOL_SOCKET || ctx->optname != NETATT_SO_SNDBUF)
		return 1;
	__sync_fetch_and_add(&sockopt_denied, 1);
	return 0;
}

/* /dev/null (char 1:3) cannot be opened from the cgroup. */
SEC("cgroup/dev")
int deny_dev_null(struct bpf_cgroup_dev_ctx *ctx)
{
	if ((ctx->access_type & 0xffff) != NETATT_DEV_CHAR || ctx->major != 1 || ctx->minor != 3)
		return 1;
	__sync_fetch_and_add(&dev_denied, 1);
	return 0;
}

/* tcx on an interface: IPv4 UDP to drop_port is dropped; everything else goes on. */
SEC("tcx/ingress")
int tcx_drop(struct __sk_buff *skb)
{
	struct iphdr iph;
	struct udphdr uh;

	__sync_fetch_and_add(&tcx_seen, 1);
	if (skb->protocol != bpf_htons(NETATT_ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, NETATT_ETH_HLEN, &iph, sizeof(iph)))
		return NETATT_TCX_NEXT;
	if (iph.ihl != 5 || iph.protocol != IPPROTO_UDP ||
	    bpf_skb_load_bytes(skb, NETATT_ETH_HLEN + sizeof(iph), &uh, sizeof(uh)))
		return NETATT_TCX_NEXT;
	if (uh.dest != bpf_htons(drop_port))
		return NETATT_TCX_NEXT;
	__sync_fetch_and_add(&tcx_dropped, 1);
	return NETATT_TCX_DROP;
}

SEC("tcx/ingress")
int tcx_next(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&tcx_seen, 1);
	return NETATT_TCX_NEXT;
}

/* netkit: what the primary device sends, and what its peer sends; both go on (policy: pass). */
SEC("netkit/primary")
int netkit_primary(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&netkit_primary_seen, 1);
	return NETATT_TCX_NEXT;
}

SEC("netkit/peer")
int netkit_peer(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&netkit_peer_seen, 1);
	return NETATT_TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
