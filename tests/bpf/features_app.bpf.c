// SPDX-License-Identifier: GPL-2.0
// An application of several features (issue 14): one hook, getpgid, implemented six ways (fexit, a program the
// verifier rejects, a tracepoint that does not exist, tp_btf, a tracepoint, a raw tracepoint), all counting the
// same syscalls so that a switch between them can be checked for lost events; and a getppid hook shared by two
// features. The generator calls getpgid(SEQ_BASE + seq): every program marks seq in `seen`.
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define SEQ_BASE 0x40000000ULL
#define SEQ_MAX (1 << 20)
#define NR_GETPGID 121 /* x86-64 */

const volatile u64 weight = 1; /* added to counters[1] per event: set_constants changes it */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SEQ_MAX);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, u32);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps"); /* [0] getpgid events, [1] their weights, [2] getppid events */

static __always_inline int record(u64 arg)
{
	u32 seq, key = 1;
	u32 *hit;
	u64 *sum;

	if (arg < SEQ_BASE || arg >= SEQ_BASE + SEQ_MAX)
		return 0;
	seq = arg - SEQ_BASE;
	hit = bpf_map_lookup_elem(&seen, &seq);
	if (hit)
		__sync_fetch_and_add(hit, 1);
	sum = bpf_map_lookup_elem(&counters, &key);
	if (sum)
		__sync_fetch_and_add(sum, weight);
	key = 0;
	sum = bpf_map_lookup_elem(&counters, &key);
	if (sum)
		__sync_fetch_and_add(sum, 1);
	return 0;
}

SEC("fexit/__x64_sys_getpgid")
int BPF_PROG(fexit_getpgid, struct pt_regs *regs, long ret)
{
	return record(BPF_CORE_READ(regs, di));
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int broken_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	((volatile u64 *)ctx)[2] = 1; /* a tracepoint's context is read-only: the verifier refuses the write */
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_no_such_syscall")
int missing_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	return record(ctx->args[0]); /* loads; attaching fails: the tracepoint does not exist */
}

SEC("tp_btf/sys_enter")
int BPF_PROG(btf_getpgid, struct pt_regs *regs, long id)
{
	if (id != NR_GETPGID)
		return 0;
	return record(BPF_CORE_READ(regs, di));
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int tp_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	return record(ctx->args[0]);
}

SEC("raw_tp/sys_enter")
int raw_getpgid(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

	if (ctx->args[1] != NR_GETPGID)
		return 0;
	return record(BPF_CORE_READ(regs, di));
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int tp_getppid(struct trace_event_raw_sys_enter *ctx)
{
	u32 key = 2;
	u64 *sum = bpf_map_lookup_elem(&counters, &key);

	if (sum)
		__sync_fetch_and_add(sum, 1);
	return 0;
}

const volatile u32 slot = 0; /* the verifier refuses slotted_getppid when set past its array: set_constants fails */

SEC("tracepoint/syscalls/sys_enter_getppid")
int slotted_getppid(struct trace_event_raw_sys_enter *ctx)
{
	u64 slots[4] = {};
	u32 key = 3;
	u64 *sum;

	slots[slot & 7] = 1;
	sum = bpf_map_lookup_elem(&counters, &key);
	if (sum)
		__sync_fetch_and_add(sum, slots[0]);
	return 0;
}
