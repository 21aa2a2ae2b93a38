// SPDX-License-Identifier: GPL-2.0
// The tracing family of attach kinds, for tests/test_kernel_attach_tracing.py:
// trampolines on kernel functions and on the bpf_fentry_test*/bpf_modify_return_test
// functions BPF_PROG_TEST_RUN calls, fentry/fexit/freplace on a BPF program, an LSM
// hook that denies opening one file, kprobes and syscall probes, kprobe.multi. Each
// program counts its runs (only those of the test's process) and keeps what it saw
// and its bpf cookie. Only kernel functions present and probeable on every kernel
// of the matrix (6.1 to 7.x) are named; names are prefixed to avoid kernel types.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define TRC_EPERM 1
#define TRC_XDP_DROP 1
#define TRC_XDP_PASS 2
#define TRC_NR_GETPGID 121 /* x86_64 */

const volatile __u32 target_tgid = 0;

/* the inode number whose opening the LSM programs deny (0: none) */
__u64 deny_ino = 0;
/* what fmod_ret returns instead of running bpf_modify_return_test */
__s32 fmod_ret_value = 0;

__u64 fentry_test_hits, fentry_test_arg, fentry_test_cookie;
__u64 fexit_test_hits, fexit_test_ret, fexit_test_cookie;
__u64 fmod_ret_hits;
__u64 fexit_modify_hits;
__s64 fexit_modify_ret;
__u64 fentry_read_hits, fentry_read_count;
__u64 fexit_read_hits;
__s64 fexit_read_ret;
__u64 lsm_denied, lsm_s_denied;
__u64 fmod_denied, fmod_deny_cookie;
__u64 kprobe_hits, kprobe_count, kprobe_cookie;
__u64 kretprobe_hits, kretprobe_cookie;
__s64 kretprobe_ret;
__u64 ksyscall_hits, ksyscall_arg, ksyscall_cookie;
__u64 kretsyscall_hits, kretsyscall_cookie;
__s64 kretsyscall_ret;
__u64 multi_hits, multi_by_cookie[4];
__u64 kretmulti_hits;
__s64 kretmulti_ret;
__u64 session_runs;
/* what the session program's entry run returns: nonzero skips its return run */
__s32 session_skip_return = 0;
__u64 raw_tp_hits, raw_tp_cookie, tp_btf_hits, tp_btf_cookie;
__u64 prog_fentry_hits, prog_fentry_cookie, prog_fexit_hits;
__s64 prog_fexit_ret;

static __always_inline bool mine(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

/* --- raw tracepoints with bpf cookies (6.10) --- */

SEC("raw_tp/sys_enter")
int trc_raw_tp_cookie(struct bpf_raw_tracepoint_args *ctx)
{
	if (mine() && ctx->args[1] == TRC_NR_GETPGID) {
		__sync_fetch_and_add(&raw_tp_hits, 1);
		raw_tp_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(trc_tp_btf_cookie, struct pt_regs *regs, long id)
{
	if (mine() && id == TRC_NR_GETPGID) {
		__sync_fetch_and_add(&tp_btf_hits, 1);
		tp_btf_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

/* --- trampolines on the functions BPF_PROG_TEST_RUN of a tracing program calls --- */

SEC("fentry/bpf_fentry_test1")
int BPF_PROG(trc_fentry_test1, int a)
{
	if (mine()) {
		__sync_fetch_and_add(&fentry_test_hits, 1);
		fentry_test_arg = a;
		fentry_test_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("fexit/bpf_fentry_test2")
int BPF_PROG(trc_fexit_test2, int a, __u64 b, int ret)
{
	if (mine()) {
		__sync_fetch_and_add(&fexit_test_hits, 1);
		fexit_test_ret = ret;
		fexit_test_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

/* a nonzero return skips the function and becomes its return value */
SEC("fmod_ret/bpf_modify_return_test")
int BPF_PROG(trc_fmod_ret, int a, int *b, int ret)
{
	if (!mine())
		return 0;
	__sync_fetch_and_add(&fmod_ret_hits, 1);
	return fmod_ret_value;
}

SEC("fexit/bpf_modify_return_test")
int BPF_PROG(trc_fexit_modify, int a, int *b, int ret)
{
	if (mine()) {
		__sync_fetch_and_add(&fexit_modify_hits, 1);
		fexit_modify_ret = ret;
	}
	return 0;
}

/* --- trampolines on a kernel function a test calls through read(2) --- */

SEC("fentry/vfs_read")
int BPF_PROG(trc_fentry_read, struct file *file, char *buf, size_t count)
{
	if (mine()) {
		__sync_fetch_and_add(&fentry_read_hits, 1);
		fentry_read_count = count;
	}
	return 0;
}

SEC("fexit/vfs_read")
int BPF_PROG(trc_fexit_read, struct file *file, char *buf, size_t count, loff_t *pos, ssize_t ret)
{
	if (mine()) {
		__sync_fetch_and_add(&fexit_read_hits, 1);
		fexit_read_ret = ret;
	}
	return 0;
}

/* --- BPF LSM: opening the file whose inode is deny_ino fails with EPERM --- */

static __always_inline int deny(struct file *file, __u64 *counter)
{
	if (!deny_ino || !mine() || file->f_inode->i_ino != deny_ino)
		return 0;
	__sync_fetch_and_add(counter, 1);
	return -TRC_EPERM;
}

SEC("lsm/file_open")
int BPF_PROG(trc_lsm_deny, struct file *file, int ret)
{
	if (ret)
		return ret;
	return deny(file, &lsm_denied);
}

SEC("lsm.s/file_open")
int BPF_PROG(trc_lsm_s_deny, struct file *file, int ret)
{
	if (ret)
		return ret;
	return deny(file, &lsm_s_denied);
}

/* fmod_ret on a kernel function: the verifier lets it modify any security_* function, so the same deny
 * works without BPF LSM; a nonzero return skips security_file_open and becomes what it returns */
SEC("fmod_ret/security_file_open")
int BPF_PROG(trc_fmod_ret_deny, struct file *file, int ret)
{
	if (ret)
		return ret;
	if (mine())
		fmod_deny_cookie = bpf_get_attach_cookie(ctx);
	return deny(file, &fmod_denied);
}

/* --- kprobes and syscall probes --- */

SEC("kprobe/vfs_read")
int BPF_KPROBE(trc_kprobe_read, struct file *file, char *buf, size_t count)
{
	if (mine()) {
		__sync_fetch_and_add(&kprobe_hits, 1);
		kprobe_count = count;
		kprobe_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("kretprobe/vfs_read")
int BPF_KRETPROBE(trc_kretprobe_read, ssize_t ret)
{
	if (mine()) {
		__sync_fetch_and_add(&kretprobe_hits, 1);
		kretprobe_ret = ret;
		kretprobe_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("ksyscall/getpgid")
int BPF_KSYSCALL(trc_ksyscall_getpgid, int pid)
{
	if (mine()) {
		__sync_fetch_and_add(&ksyscall_hits, 1);
		ksyscall_arg = pid;
		ksyscall_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("kretsyscall/getpgid")
int BPF_KRETPROBE(trc_kretsyscall_getpgid, long ret)
{
	if (mine()) {
		__sync_fetch_and_add(&kretsyscall_hits, 1);
		kretsyscall_ret = ret;
		kretsyscall_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

/* --- kprobe.multi, kretprobe.multi, kprobe.session --- */

SEC("kprobe.multi/vfs_rea?")
int trc_kprobe_multi(struct pt_regs *ctx)
{
	if (mine()) {
		__sync_fetch_and_add(&multi_hits, 1);
		__sync_fetch_and_add(&multi_by_cookie[bpf_get_attach_cookie(ctx) & 3], 1);
	}
	return 0;
}

SEC("kretprobe.multi/vfs_read")
int BPF_KRETPROBE(trc_kretprobe_multi, ssize_t ret)
{
	if (mine()) {
		__sync_fetch_and_add(&kretmulti_hits, 1);
		kretmulti_ret = ret;
	}
	return 0;
}

/* ``?``: loaded only by the test that checks the kernel has kprobe.session (6.10). It runs on entry
 * and, if the entry run returned 0, again on return: counting runs tells them apart without a kfunc
 * (whose prototype changed across kernels). */
SEC("?kprobe.session/vfs_read")
int trc_kprobe_session(struct pt_regs *ctx)
{
	if (!mine())
		return 0;
	__sync_fetch_and_add(&session_runs, 1);
	return session_skip_return ? 1 : 0; /* the verifier wants 0 or 1 */
}

/* --- a BPF program others attach to: fentry/fexit on it and freplace of its function --- */

__noinline int trc_verdict(struct xdp_md *xdp)
{
	return xdp ? TRC_XDP_PASS : TRC_XDP_DROP;
}

SEC("xdp")
int trc_target(struct xdp_md *ctx)
{
	return trc_verdict(ctx);
}

/* bare sections: the target program and function are given when loading (clone or attach_targets) */
SEC("fentry")
int BPF_PROG(trc_prog_fentry, struct xdp_md *xdp)
{
	if (mine()) {
		__sync_fetch_and_add(&prog_fentry_hits, 1);
		prog_fentry_cookie = bpf_get_attach_cookie(ctx);
	}
	return 0;
}

SEC("fexit")
int BPF_PROG(trc_prog_fexit, struct xdp_md *xdp, int ret)
{
	if (mine()) {
		__sync_fetch_and_add(&prog_fexit_hits, 1);
		prog_fexit_ret = ret;
	}
	return 0;
}

SEC("freplace/trc_verdict")
int trc_replace(struct xdp_md *xdp)
{
	return TRC_XDP_DROP;
}
