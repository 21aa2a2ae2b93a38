// SPDX-License-Identifier: GPL-2.0
// features_linked, first file: feature process declared in decl tags on a program named like a static of the other file
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <dynbpf.h>

char LICENSE[] SEC("license") = "GPL";

u64 exits = 0;

DYNBPF_FEATURE("process")
DYNBPF_HOOK("exit")
SEC("tp/sched/sched_process_exit")
int handle(void *ctx)
{
	__sync_fetch_and_add(&exits, 1);
	return 0;
}
