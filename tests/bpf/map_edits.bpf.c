// SPDX-License-Identifier: GPL-2.0
// Maps a real tool sizes at run time, before load: max_entries 0 (stack traces sized by a
// --stack-depth option, per-CPU slots by the CPU count, a map of ring buffers whose ring size is
// an option), a ring buffer a tool may turn into a perf buffer, a map it may not create at all,
// and a custom data section whose last variable is an array the loader resizes (.data.buf).
// The object name "map_edits" is 9 characters: libbpf names its .bss "map_edit.bss".
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	/* value_size (stack depth * 8) and max_entries come from the command line */
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	/* max_entries: one slot per CPU, set at run time */
} per_cpu_slots SEC(".maps");

struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* max_entries: the ring size option */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__array(values, struct ring);
	/* max_entries: one ring per CPU */
} rings SEC(".maps");

/* A tool without ring buffers turns this into a perf event array (libbpf-tools' compat.c). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 4);
} events SEC(".maps");

/* Scratch space only the perf-buffer path uses: not created when the ring buffer is. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} heap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} table SEC(".maps");

const volatile __u64 step = 1;          /* .rodata */
const volatile __u32 buf_entries = 1;   /* .rodata: how many buf slots the program may use */
const volatile bool use_heap = false;   /* .rodata: the perf-buffer path */

__u64 input = 3;                        /* .data: written by user space, read by the program */
__u32 slot = 0;

__u64 output;                           /* .bss: written by the program */
__u64 runs;

static __u64 private_count SEC(".data.priv") = 5;  /* a section of static variables only */

__u32 buf_used SEC(".data.buf") = 1;    /* .data.buf: its last variable is the array to resize */
__u64 buf[1] SEC(".data.buf") = { 1 };

SEC("xdp")
int xdp_globals(struct xdp_md *ctx)
{
	__u32 i = slot;

	output = input * step;
	runs++;
	private_count++;
	if (i < buf_entries) {
		buf[i] = output + private_count;
		buf_used = i + 1;
	}
	return XDP_PASS;
}

SEC("xdp")
int xdp_heap(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *scratch;

	if (!use_heap)
		return XDP_PASS;
	scratch = bpf_map_lookup_elem(&heap, &zero);
	if (scratch)
		*scratch += 1;
	return XDP_DROP;
}

SEC("xdp")
int xdp_ring(struct xdp_md *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 value = 7;
	__u64 *count;
	void *ring;

	count = bpf_map_lookup_elem(&per_cpu_slots, &cpu);
	if (count)
		*count += 1;
	ring = bpf_map_lookup_elem(&rings, &cpu);
	if (ring)
		bpf_ringbuf_output(ring, &value, sizeof(value), 0);
	return XDP_PASS;
}

SEC("tp/syscalls/sys_enter_getppid")
int tp_stack(void *ctx)
{
	__u32 key = 0;
	__u64 one = 1;
	long id = bpf_get_stackid(ctx, &stacks, 0);

	if (id >= 0)
		bpf_map_update_elem(&table, &key, &one, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
