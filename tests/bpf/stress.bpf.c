// SPDX-License-Identifier: GPL-2.0
// Stress fixture: 50 programs of six kinds sharing maps, private maps, prog arrays with declared slots, a map of maps, global data
//
// Every name starts with "sx_" (programs, maps) so the kernel's view of what
// this object left behind can be found by name. The counters make programs
// observable when attached (they count calls from target_tgid only); the
// verdicts make tail calls observable through BPF_PROG_TEST_RUN.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define XDP_STAGES 4
#define SOCKET_STAGES 2

const volatile u32 target_tgid = 0;	/* .rodata */
const volatile u64 sx_step = 1;		/* .rodata: what a traced event adds to its sx_hits counter (set_constants changes it) */
u64 sx_hits[64];			/* .bss: one counter per program */
u64 sx_generation = 1;			/* .data */

/* Shared maps: used by many programs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} sx_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} sx_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} sx_pcpu SEC(".maps");

/* Shared by exactly two programs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} sx_pair SEC(".maps");

/* Private maps: each used by exactly one program. */
#define PRIVATE(n)                                \
	struct {                                  \
		__uint(type, BPF_MAP_TYPE_HASH);  \
		__uint(max_entries, 8);           \
		__type(key, u32);                 \
		__type(value, u64);               \
	} sx_priv_##n SEC(".maps")

PRIVATE(00); PRIVATE(01); PRIVATE(02); PRIVATE(03); PRIVATE(04); PRIVATE(05);
PRIVATE(06); PRIVATE(07); PRIVATE(08); PRIVATE(09); PRIVATE(10); PRIVATE(11);
PRIVATE(12); PRIVATE(13); PRIVATE(14); PRIVATE(15);

/* A map of maps with a declared inner map, which one program also uses directly. */
struct sx_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} sx_inner0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct sx_inner);
} sx_outer SEC(".maps") = {
	.values = { [0] = &sx_inner0 },
};

static __always_inline bool mine(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline void bump(void *map, u32 key)
{
	u64 *v = bpf_map_lookup_elem(map, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void note(void *map, u32 key)
{
	u64 one = 1;

	bpf_map_update_elem(map, &key, &one, BPF_ANY);
}

/* A traced event from this process: count it in the shared maps (and a private one). */
#define COUNT(id)                                    \
	do {                                         \
		__sync_fetch_and_add(&sx_hits[id], sx_step); \
		bump(&sx_counts, id);                \
		note(&sx_hash, id);                  \
	} while (0)

/* --- syscall tracepoints (14) ------------------------------------------------------ */

#define TP(name, id, event)                                 \
	SEC("tp/syscalls/" #event)                          \
	int name(void *ctx)                                 \
	{                                                   \
		if (mine())                                 \
			COUNT(id);                          \
		return 0;                                   \
	}

#define TP_PRIVATE(name, id, event, priv)                   \
	SEC("tp/syscalls/" #event)                          \
	int name(void *ctx)                                 \
	{                                                   \
		if (mine()) {                               \
			COUNT(id);                          \
			note(&sx_priv_##priv, id);          \
		}                                           \
		return 0;                                   \
	}

TP_PRIVATE(sx_tp_getpgid, 0, sys_enter_getpgid, 00)
TP_PRIVATE(sx_tp_getppid, 1, sys_enter_getppid, 01)
TP_PRIVATE(sx_tp_getuid, 2, sys_enter_getuid, 02)
TP_PRIVATE(sx_tp_getgid, 3, sys_enter_getgid, 03)
TP(sx_tp_geteuid, 4, sys_enter_geteuid)
TP(sx_tp_getegid, 5, sys_enter_getegid)
TP(sx_tp_getsid, 6, sys_enter_getsid)
TP(sx_tp_getprio, 7, sys_enter_getpriority)
TP(sx_tp_yield, 8, sys_enter_sched_yield)
TP_PRIVATE(sx_tpx_getpgid, 9, sys_exit_getpgid, 04)
TP(sx_tpx_getppid, 10, sys_exit_getppid)
TP(sx_tpx_getuid, 11, sys_exit_getuid)
TP(sx_tpx_getgid, 12, sys_exit_getgid)

SEC("tp/syscalls/sys_exit_getsid")
int sx_tpx_getsid(void *ctx)
{
	if (mine()) {
		COUNT(13);
		note(&sx_pair, 13);
	}
	return 0;
}

/* --- raw tracepoints (6) ----------------------------------------------------------- */

#define RAW(name, id, event)                                \
	SEC("raw_tp/" #event)                               \
	int name(void *ctx)                                 \
	{                                                   \
		if (mine())                                 \
			COUNT(id);                          \
		return 0;                                   \
	}

RAW(sx_raw_sys_ent, 14, sys_enter)
RAW(sx_raw_sys_exit, 15, sys_exit)
RAW(sx_raw_newtask, 16, task_newtask)
RAW(sx_raw_switch, 17, sched_switch)

SEC("raw_tp/sched_process_fork")
int sx_raw_fork(void *ctx)
{
	if (mine()) {
		COUNT(18);
		note(&sx_priv_05, 18);
	}
	return 0;
}

SEC("raw_tp/sched_process_exit")
int sx_raw_exit(void *ctx)
{
	if (mine()) {
		COUNT(19);
		note(&sx_pair, 19);
	}
	return 0;
}

/* --- BTF-typed tracepoints (6) ----------------------------------------------------- */

#define BTF_TP(name, id, event)                             \
	SEC("tp_btf/" #event)                               \
	int name(u64 *ctx)                                  \
	{                                                   \
		if (mine())                                 \
			COUNT(id);                          \
		return 0;                                   \
	}

BTF_TP(sx_btf_sys_ent, 20, sys_enter)
BTF_TP(sx_btf_sys_exit, 21, sys_exit)
BTF_TP(sx_btf_switch, 22, sched_switch)
BTF_TP(sx_btf_wakeup, 23, sched_wakeup)

SEC("tp_btf/sched_process_fork")
int sx_btf_fork(u64 *ctx)
{
	if (mine()) {
		COUNT(24);
		note(&sx_priv_06, 24);
	}
	return 0;
}

SEC("tp_btf/task_rename")
int sx_btf_rename(u64 *ctx)
{
	if (mine()) {
		COUNT(25);
		note(&sx_priv_07, 25);
	}
	return 0;
}

/* --- task iterators (4): each writes the tids of target_tgid's threads ------------- */

#define ITER(name, id, priv)                                              \
	SEC("iter/task")                                                  \
	int name(struct bpf_iter__task *ctx)                              \
	{                                                                 \
		struct task_struct *task = ctx->task;                     \
		u32 tid;                                                  \
                                                                          \
		if (!task || task->tgid != target_tgid)                   \
			return 0;                                         \
		tid = task->pid;                                          \
		__sync_fetch_and_add(&sx_hits[id], 1);                    \
		note(&sx_priv_##priv, tid & 7);                           \
		bpf_seq_write(ctx->meta->seq, &tid, sizeof(tid));         \
		return 0;                                                 \
	}

ITER(sx_iter_0, 26, 08)
ITER(sx_iter_1, 27, 09)

SEC("iter/task")
int sx_iter_2(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	u32 tid;

	if (!task || task->tgid != target_tgid)
		return 0;
	tid = task->pid;
	bump(&sx_counts, 28);
	bpf_seq_write(ctx->meta->seq, &tid, sizeof(tid));
	return 0;
}

SEC("iter/task")
int sx_iter_3(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	u32 tid;

	if (!task || task->tgid != target_tgid)
		return 0;
	tid = task->pid;
	note(&sx_hash, 29);
	bpf_seq_write(ctx->meta->seq, &tid, sizeof(tid));
	return 0;
}

/* --- XDP (14): stages behind declared prog-array slots, dispatchers, plain ---------- */

int sx_xdp_stage0(struct xdp_md *ctx);
int sx_xdp_stage1(struct xdp_md *ctx);
int sx_xdp_stage2(struct xdp_md *ctx);
int sx_xdp_stage3(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, XDP_STAGES);
	__type(key, u32);
	__type(value, u32);
	__array(values, int(struct xdp_md *));
} sx_jmp SEC(".maps") = {
	.values = {
		[0] = (void *)&sx_xdp_stage0,
		[1] = (void *)&sx_xdp_stage1,
		[2] = (void *)&sx_xdp_stage2,
		[3] = (void *)&sx_xdp_stage3,
	},
};

/* Stage i returns DROP (even i) or TX (odd i): distinct from a dispatcher's fall-through PASS. */
#define XDP_STAGE(n, verdict)                               \
	SEC("xdp")                                          \
	int sx_xdp_stage##n(struct xdp_md *ctx)             \
	{                                                   \
		u32 key = 32 + n;                           \
		u64 *v = bpf_map_lookup_elem(&sx_pcpu, &key); \
		if (v)                                      \
			*v += 1;                            \
		return verdict;                             \
	}

XDP_STAGE(0, XDP_DROP)
XDP_STAGE(1, XDP_TX)
XDP_STAGE(2, XDP_DROP)
XDP_STAGE(3, XDP_TX)

#define XDP_DISPATCH(n)                                     \
	SEC("xdp")                                          \
	int sx_xdp_disp##n(struct xdp_md *ctx)              \
	{                                                   \
		bpf_tail_call(ctx, &sx_jmp, n);             \
		return XDP_PASS;                            \
	}

XDP_DISPATCH(0)
XDP_DISPATCH(1)
XDP_DISPATCH(2)
XDP_DISPATCH(3)

#define XDP_PLAIN(n, priv)                                  \
	SEC("xdp")                                          \
	int sx_xdp_plain##n(struct xdp_md *ctx)             \
	{                                                   \
		u32 key = 40 + n;                           \
		u64 *v = bpf_map_lookup_elem(&sx_pcpu, &key); \
		if (v)                                      \
			*v += 1;                            \
		note(&sx_priv_##priv, n);                   \
		return XDP_PASS;                            \
	}

XDP_PLAIN(0, 10)
XDP_PLAIN(1, 11)
XDP_PLAIN(2, 12)
XDP_PLAIN(3, 13)

/* Through the map of maps, and straight at the inner map it declares. */
SEC("xdp")
int sx_xdp_outer(struct xdp_md *ctx)
{
	u32 key = 0;
	void *inner = bpf_map_lookup_elem(&sx_outer, &key);

	if (!inner)
		return XDP_ABORTED;
	bump(inner, 0);
	return XDP_PASS;
}

SEC("xdp")
int sx_xdp_inner(struct xdp_md *ctx)
{
	bump(&sx_inner0, 0);
	return XDP_PASS;
}

/* --- socket filters (6): the same pattern with a second prog array ----------------- */

int sx_sk_stage0(struct __sk_buff *skb);
int sx_sk_stage1(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, SOCKET_STAGES);
	__type(key, u32);
	__type(value, u32);
	__array(values, int(struct __sk_buff *));
} sx_sjmp SEC(".maps") = {
	.values = {
		[0] = (void *)&sx_sk_stage0,
		[1] = (void *)&sx_sk_stage1,
	},
};

/* Stages keep 7 or 9 bytes; a dispatcher that falls through keeps 1. */
SEC("socket")
int sx_sk_stage0(struct __sk_buff *skb)
{
	bump(&sx_pcpu, 48);
	return 7;
}

SEC("socket")
int sx_sk_stage1(struct __sk_buff *skb)
{
	bump(&sx_pcpu, 49);
	return 9;
}

SEC("socket")
int sx_sk_disp0(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &sx_sjmp, 0);
	return 1;
}

SEC("socket")
int sx_sk_disp1(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &sx_sjmp, 1);
	return 1;
}

SEC("socket")
int sx_sk_plain0(struct __sk_buff *skb)
{
	note(&sx_priv_14, 0);
	sx_generation += 1;
	return skb->len;
}

SEC("socket")
int sx_sk_plain1(struct __sk_buff *skb)
{
	note(&sx_priv_15, 1);
	return skb->len;
}
