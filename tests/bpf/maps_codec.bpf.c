// SPDX-License-Identifier: GPL-2.0
// Values whose byte layout clang decides: bitfields (signed, unsigned, enum, bool,
// straddling bytes), anonymous unions and structs, nested arrays, enums (negative,
// 64-bit, packed), floats, 128-bit integers. Each global's initial bytes in .data
// are the oracle for dynbpf._maps codecs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum color { RED = 1, GREEN = 2, BLUE = 4 };
enum delta { MINUS_TWO = -2, ZERO = 0, PLUS_THREE = 3 };
enum wide { SMALL = 1, HUGE = 0x123456789aULL };
enum __attribute__((packed)) tiny { T_A = 1, T_B = 200 };

struct flags {
	unsigned int low : 3;
	int neg : 5;
	unsigned int straddle : 12;
	enum color hue : 4;
	_Bool on : 1;
	unsigned long long big : 41;
	char tail;
};

struct rec {
	__u16 kind;
	union {
		__u32 as_u32;
		__u8 as_bytes[4];
	};
	struct {
		__s8 x, y;
	};
	struct flags f[2];
	__u32 grid[2][3];
	char name[8];
	enum delta d;
	enum tiny t;
	enum wide w;
	float ratio;
	double precise;
	unsigned __int128 huge;
	__s64 negative;
	void *ptr;
};

struct key3 {
	__u32 a;
	__u16 b;
	__u8 c;
	__u8 pad;
};

struct flags sample_flags = {
	.low = 5, .neg = -9, .straddle = 0xabc, .hue = BLUE, .on = 1, .big = 0x1ffffffffffULL, .tail = 'z',
};

struct rec sample_rec = {
	.kind = 0xbeef,
	.as_u32 = 0x04030201,
	.x = -1,
	.y = 2,
	.f = { { .low = 1, .neg = -16, .straddle = 1, .hue = RED, .on = 0, .big = 7, .tail = -3 },
	       { .low = 7, .neg = 15, .straddle = 0xfff, .hue = GREEN, .on = 1, .big = 0, .tail = 'A' } },
	.grid = { { 1, 2, 3 }, { 4, 5, 6 } },
	.name = "dyn",
	.d = MINUS_TWO,
	.t = T_B,
	.w = HUGE,
	.ratio = 0.5f,
	.precise = -2.25,
	.huge = ((unsigned __int128)0x0123456789abcdefULL << 64) | 0xfedcba9876543210ULL,
	.negative = -1234567890123LL,
	.ptr = 0,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct key3);
	__type(value, struct rec);
} records SEC(".maps");

SEC("raw_tp/sys_enter")
int touch(void *ctx)
{
	struct key3 k = { .a = 1 };

	sample_flags.low++;
	bpf_map_update_elem(&records, &k, &sample_rec, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
