// SPDX-License-Identifier: GPL-2.0
// features_linked, second file: feature files, requiring process from the other file; a static subprogram `handle`
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <dynbpf.h>

static u64 opens = 0;

/* The same name as the other file's program: the linked object calls it handle@files.bpf.c. */
static __noinline int handle(void *ctx)
{
	__sync_fetch_and_add(&opens, 1);
	return 0;
}

DYNBPF_FEATURE("files")
DYNBPF_FEATURE_REQUIRES("files", "process")
DYNBPF_HOOK("open")
SEC("tp/syscalls/sys_enter_openat")
int open_tp(void *ctx)
{
	return handle(ctx);
}
