// SPDX-License-Identifier: GPL-2.0
// USDT programs for tests/test_kernel_usdt.py: each reads its probe's arguments
// with libbpf's usdt.bpf.h (bpf_usdt_arg, bpf_usdt_arg_cnt, bpf_usdt_cookie) and
// keeps what it saw in .bss, where the test compares it with what the C program
// passed.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

#define MAX_ARGS 12

struct seen {
	__u64 hits;
	long cnt;     /* bpf_usdt_arg_cnt() */
	long cookie;  /* bpf_usdt_cookie() */
	long args[MAX_ARGS];
	long errors;  /* bpf_usdt_arg() failures */
	char str[32]; /* the string the last argument points at, if asked */
};

struct seen regs_seen, mem_seen, guarded_seen, lib_seen;
const volatile int string_arg = -1; /* which argument of "regs" is a string */

static __always_inline void record(struct pt_regs *ctx, struct seen *s, int str_index)
{
	long cnt = bpf_usdt_arg_cnt(ctx);

	s->cnt = cnt;
	s->cookie = bpf_usdt_cookie(ctx);
	for (int i = 0; i < MAX_ARGS; i++) {
		if (i >= cnt)
			break;
		if (bpf_usdt_arg(ctx, i, &s->args[i]))
			s->errors++;
	}
	if (str_index >= 0 && str_index < MAX_ARGS)
		bpf_probe_read_user_str(s->str, sizeof(s->str), (const void *)s->args[str_index]);
	__sync_fetch_and_add(&s->hits, 1);
}

SEC("usdt")
int regs(struct pt_regs *ctx)
{
	record(ctx, &regs_seen, string_arg);
	return 0;
}

/* the section names provider and probe; the test passes only path= */
SEC("usdt/dynbpf-usdt-target:dynbpf:mem")
int mem(struct pt_regs *ctx)
{
	record(ctx, &mem_seen, -1);
	return 0;
}

SEC("usdt")
int BPF_USDT(guarded, long n, int tag)
{
	guarded_seen.args[0] = n;
	guarded_seen.args[1] = tag;
	guarded_seen.cookie = bpf_usdt_cookie(ctx);
	__sync_fetch_and_add(&guarded_seen.hits, 1);
	return 0;
}

SEC("usdt")
int lib(struct pt_regs *ctx)
{
	record(ctx, &lib_seen, -1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
