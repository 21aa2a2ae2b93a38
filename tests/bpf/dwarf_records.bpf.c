// SPDX-License-Identifier: GPL-2.0
// A tool written the way most BCC-style tools are: its record types are used only as local
// variables (or through a pointer into a map value declared by size), so they reach the
// object's DWARF (-g) but not its BTF. struct rich is also anchored into BTF by a global
// pointer, so the same type can be decoded both ways.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

const volatile u32 target_tgid = 0;

enum rec_op { ROP_OPEN = 1, ROP_CLOSE = 2, ROP_FAIL = 7 };
enum rec_sign { S_NEG = -2, S_ZERO = 0, S_POS = 3 };
enum rec_wide { W_SMALL = 1, W_HUGE = 0x123456789aULL };
typedef unsigned int pid32_t;

struct rec_where {
	u16 line;
	char file[6];
};

struct rich {
	u64 ts;
	const volatile pid32_t pid;
	enum rec_op op;
	char comm[16];
	struct rec_where where;
	union {
		u64 number;
		char text[8];
		struct {
			u32 lo, hi;
		} half;
	} value;
	u32 grid[2][3];
	char names[2][4];
	unsigned int flag : 1, level : 3;
	int delta : 5;
	enum rec_op small_op : 4;
	union {
		u32 as_u32;
		u8 as_bytes[4];
	};
	struct {
		s8 x, y;
	};
	void *ptr;
	const char *name;
	int (*callback)(int, ...);
	_Bool ok;
	s64 negative;
	u8 mac[6];
};

/* A flexible array member: 0 elements in both BTF and DWARF. */
struct flex {
	u32 count;
	u16 items[];
};

/* struct rich and struct flex in BTF too: decoded from BTF and from DWARF, the records must be equal */
struct rich *rich_anchor __attribute__((unused));
struct flex *flex_anchor __attribute__((unused));

/* Only a local variable: in DWARF, not in BTF. */
struct event {
	u64 seq;
	pid32_t pid;
	enum rec_op op;
	char comm[16];
	struct rec_where where;
	unsigned int first : 1, count : 7;
	u32 args[2][2];
	enum rec_sign sign;
	enum rec_wide wide;
};

/* A fixed head and a tail of which only `len` bytes are submitted; only ever a pointer into `scratch`. */
struct blob {
	u32 len;
	enum rec_op op;
	char data[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} blobs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} riches SEC(".maps");

/* a value declared by size: the map does not bring struct blob into BTF */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__uint(value_size, sizeof(struct blob));
} scratch SEC(".maps");

const char greeting[32] = "hello from the kernel";
u64 next_seq = 0;
u32 blob_len = 5;	/* how many bytes of data on_getppid submits */

static __always_inline void send_event(u64 seq)
{
	struct event e = {};

	e.seq = seq;
	e.pid = bpf_get_current_pid_tgid() >> 32;
	e.op = ROP_CLOSE;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	e.where.line = 42;
	__builtin_memcpy(e.where.file, "a.c", 4);
	e.first = 1;
	e.count = 99;
	e.args[0][0] = 1;
	e.args[0][1] = 2;
	e.args[1][0] = 3;
	e.args[1][1] = 4;
	e.sign = S_NEG;
	e.wide = W_HUGE;
	bpf_ringbuf_output(&events, &e, sizeof(e), 0);
}

static __always_inline void send_blob(u64 len)
{
	u32 zero = 0;
	struct blob *b = bpf_map_lookup_elem(&scratch, &zero);

	if (!b)
		return;
	if (len > sizeof(b->data))
		len = sizeof(b->data);
	b->len = len;
	b->op = ROP_OPEN;
	__builtin_memcpy(b->data, greeting, sizeof(greeting));
	bpf_ringbuf_output(&blobs, b, __builtin_offsetof(struct blob, data) + len, 0);
}

/* Test run: one struct event with seq ctx[0]. */
SEC("raw_tp")
int emit_event(u64 *ctx)
{
	send_event(ctx[0]);
	return 0;
}

/* Test run: one struct blob submitted with ctx[0] bytes of data (at most 4096). */
SEC("raw_tp")
int emit_blob(u64 *ctx)
{
	send_blob(ctx[0]);
	return 0;
}

/* Test run: one struct rich with every kind of member set. */
SEC("raw_tp")
int emit_rich(u64 *ctx)
{
	struct rich r = {
		.ts = 0x1122334455667788ULL,
		.pid = 4321,
		.op = ROP_FAIL,
		.comm = "rich",
		.where = { .line = 7, .file = "b.c" },
		.value = { .half = { .lo = 0x61626364, .hi = 0x65666768 } },
		.grid = { { 1, 2, 3 }, { 4, 5, 6 } },
		.names = { "ab", "cde" },
		.flag = 1,
		.level = 5,
		.delta = -9,
		.small_op = ROP_CLOSE,
		.as_u32 = 0x04030201,
		.x = -1,
		.y = 2,
		.ptr = (void *)0xdeadbeef,
		.name = (const char *)0x1000,
		.callback = 0,
		.ok = 1,
		.negative = -1234567890123LL,
		.mac = { 0, 1, 2, 0xfd, 0xfe, 0xff },
	};

	bpf_ringbuf_output(&riches, &r, sizeof(r), 0);
	return 0;
}

/* Every getppid() of the target process: one event and one blob of blob_len bytes. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	send_event(__sync_fetch_and_add(&next_seq, 1));
	send_blob(blob_len);
	return 0;
}
