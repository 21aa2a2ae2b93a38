// SPDX-License-Identifier: GPL-2.0
// Every kind of __kconfig extern libbpf fills, at every size and alignment, so
// that the .kconfig layout (sort by alignment, size, name) and the encoding of
// each value can be compared byte for byte with libbpf's. Read by one program
// that is never loaded: only the externs matter.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

typedef unsigned int kcfg_u32;

extern unsigned long long CONFIG_PHYSICAL_START __kconfig __weak;         /* 0x hex, u64 */
extern long long CONFIG_ILLEGAL_POINTER_VALUE __kconfig __weak;           /* top bit set, s64 */
extern int CONFIG_HZ __kconfig;                                             /* decimal, s32 */
extern const volatile kcfg_u32 CONFIG_NR_CPUS __kconfig __weak;            /* typedef + qualifiers */
extern short CONFIG_LOG_BUF_SHIFT __kconfig __weak;                         /* s16 */
extern unsigned short CONFIG_DYNBPF_MISSING_U16 __kconfig __weak;           /* weak, absent: zero */
extern unsigned char CONFIG_BPF_JIT __kconfig __weak;                       /* char holding 'y' */
extern signed char CONFIG_CONSOLE_LOGLEVEL_DEFAULT __kconfig __weak;        /* char holding a number */
extern bool CONFIG_BPF __kconfig;                                           /* bool */
extern bool CONFIG_DYNBPF_MISSING_BOOL __kconfig __weak;
extern enum libbpf_tristate CONFIG_BPF_SYSCALL __kconfig __weak;            /* tristate y */
extern enum libbpf_tristate CONFIG_DYNBPF_MISSING_TRI __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[3] __kconfig __weak;                    /* "(none)" truncated */
extern char CONFIG_CC_VERSION_TEXT[100] __kconfig __weak;                   /* fits */
extern char CONFIG_DEFAULT_INIT[1] __kconfig __weak;                        /* "" */
extern unsigned char CONFIG_LSM[7] __kconfig __weak;                        /* unsigned char array */
extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern int LINUX_DYNBPF_NOT_PROVIDED __kconfig __weak;                      /* unknown LINUX_, weak: zero */

__u64 sink[24];

SEC("?socket")
int read_kconfig(void *ctx)
{
	int i = 0;

	sink[i++] = CONFIG_PHYSICAL_START;
	sink[i++] = CONFIG_ILLEGAL_POINTER_VALUE;
	sink[i++] = CONFIG_HZ;
	sink[i++] = CONFIG_NR_CPUS;
	sink[i++] = CONFIG_LOG_BUF_SHIFT;
	sink[i++] = CONFIG_DYNBPF_MISSING_U16;
	sink[i++] = CONFIG_BPF_JIT;
	sink[i++] = CONFIG_CONSOLE_LOGLEVEL_DEFAULT;
	sink[i++] = CONFIG_BPF;
	sink[i++] = CONFIG_DYNBPF_MISSING_BOOL;
	sink[i++] = CONFIG_BPF_SYSCALL;
	sink[i++] = CONFIG_DYNBPF_MISSING_TRI;
	sink[i++] = CONFIG_DEFAULT_HOSTNAME[0];
	sink[i++] = CONFIG_CC_VERSION_TEXT[0];
	sink[i++] = CONFIG_DEFAULT_INIT[0];
	sink[i++] = CONFIG_LSM[0];
	sink[i++] = LINUX_KERNEL_VERSION;
	sink[i++] = LINUX_HAS_BPF_COOKIE;
	sink[i++] = LINUX_DYNBPF_NOT_PROVIDED;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
