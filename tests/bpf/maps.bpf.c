// SPDX-License-Identifier: GPL-2.0
// BTF-defined maps in every style libbpf accepts: key/value by type and by size,
// flags, NUMA node, map_extra, pinning, ring/perf buffers, per-CPU, LRU, task
// storage, and outer maps (array/hash of maps) with and without initial slots.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct event {
	__u32 pid;
	__u32 tgid;
	__u64 ts;
	char comm[16];
};

/* Key and value given as types: the map carries BTF key/value type ids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} exec_count SEC(".maps");

/* Key and value given as sizes only: no BTF type ids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct event));
} last_event SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct event);
} sparse_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} shared_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NUMA_NODE);
	__uint(numa_node, 0);
	__type(key, __u32);
	__type(value, __u32);
} node_local SEC(".maps");

/* map_extra of a bloom filter is its number of hash functions. */
struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 1000);
	__uint(map_extra, 3);
	__type(value, __u32);
} seen_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, __u64);
} pinned_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

/* max_entries left 0: libbpf sizes it to the number of possible CPUs at load. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(int));
	__uint(value_size, sizeof(int));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} percpu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} percpu_by_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u32);
	__type(value, struct event);
} recent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} recent_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} task_start SEC(".maps");

struct inner_counter {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_counter);
} outer_by_slot SEC(".maps") = {
	.values = { [0] = &inner_a, [2] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner_counter);
} outer_by_id SEC(".maps") = {
	.values = { [1] = &inner_b },
};

/* Inner definition given inline, no initial slots. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 16);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 32);
		__type(key, __u32);
		__type(value, __u32);
	});
} per_cgroup_tables SEC(".maps");

static __always_inline void fill_event(struct event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->ts = bpf_ktime_get_ns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline void bump(void *map, __u32 key)
{
	__u64 *v = bpf_map_lookup_elem(map, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tp/sched/sched_process_exec")
int on_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 pid = ctx->pid;
	__u64 one = 1, *count;
	struct event *e, copy;

	count = bpf_map_lookup_elem(&exec_count, &pid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&exec_count, &pid, &one, BPF_NOEXIST);

	bpf_map_push_elem(&seen_pids, &pid, BPF_ANY);
	bump(&shared_counters, pid % 64);
	bump(&percpu_stats, 0);

	count = bpf_map_lookup_elem(&pinned_totals, &pid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&pinned_totals, &pid, &one, BPF_ANY);

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	fill_event(e);
	/* from a stack copy: kernels before 6.2 refuse ring buffer memory as a map value argument */
	__builtin_memcpy(&copy, e, sizeof(copy));
	bpf_ringbuf_submit(e, 0);
	bpf_map_update_elem(&last_event, &pid, &copy, BPF_ANY);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int on_exit(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid(), node = bpf_get_numa_node_id();
	__u64 key, one = 1, *v;
	struct event e = {};

	if (bpf_map_peek_elem(&seen_pids, &pid) != 0)
		return 0;
	bpf_map_delete_elem(&exec_count, &pid);

	fill_event(&e);
	key = e.ts;
	bpf_map_update_elem(&recent, &pid, &e, BPF_ANY);
	bpf_map_update_elem(&sparse_events, &key, &e, BPF_ANY);
	v = bpf_map_lookup_elem(&percpu_by_pid, &pid);
	if (v)
		*v += 1;
	else
		bpf_map_update_elem(&percpu_by_pid, &pid, &one, BPF_ANY);
	bpf_map_update_elem(&recent_percpu, &pid, &one, BPF_ANY);
	bpf_map_update_elem(&node_local, &(__u32){ node % 16 }, &pid, BPF_ANY);
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

SEC("tp_btf/task_newtask")
int BPF_PROG(on_newtask, struct task_struct *task, u64 clone_flags)
{
	__u64 *start = bpf_task_storage_get(&task_start, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (start)
		*start = bpf_ktime_get_ns();
	return 0;
}

SEC("raw_tp/sys_enter")
int count_syscalls(void *ctx)
{
	__u32 slot = bpf_get_smp_processor_id() & 3, zero = 0, id = 1;
	void *inner;

	inner = bpf_map_lookup_elem(&outer_by_slot, &slot);
	if (inner)
		bump(inner, zero);
	inner = bpf_map_lookup_elem(&outer_by_id, &id);
	if (inner)
		bump(inner, zero);
	inner = bpf_map_lookup_elem(&per_cgroup_tables, &id);
	if (inner)
		bpf_map_update_elem(inner, &zero, &id, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
