/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dynbpf.h: declare an application's features in the BPF C source.
 *
 * Each macro puts one BTF decl tag, "dynbpf:<key>=<value>", on the program it
 * precedes; dynbpf reads them back with dynbpf.FeatureMap.from_object(), so
 * the object carries its own feature map (docs/features.md, "Declaring
 * features"). Pass dynbpf.include_dir() to clang with -I.
 *
 *	DYNBPF_FEATURE("process")
 *	DYNBPF_HOOK("exec")
 *	DYNBPF_REQUIRES("trampolines")
 *	SEC("fexit/begin_new_exec")
 *	int BPF_PROG(exec_fexit, struct linux_binprm *bprm, int ret)
 *
 * Tags need clang 14 or later. A kernel without BTF_KIND_DECL_TAG (before
 * Linux 5.16) still loads the object: dynbpf sanitises the tags away, as
 * libbpf does.
 */
#ifndef __DYNBPF_H__
#define __DYNBPF_H__

#if !defined(__has_attribute)
#error "dynbpf.h needs clang 14 or later (BTF decl tags: __attribute__((btf_decl_tag)))"
#elif !__has_attribute(btf_decl_tag)
#error "dynbpf.h needs clang 14 or later (BTF decl tags: __attribute__((btf_decl_tag)))"
#endif

#define DYNBPF__TAG(text) __attribute__((btf_decl_tag(text)))
#define DYNBPF__STR(x) #x

/* The program's hook is a required hook of feature `name` (repeat for several features). */
#define DYNBPF_FEATURE(name) DYNBPF__TAG("dynbpf:feature=" name)
/* In the features this program names, its hook is best-effort: tried, reported, never failing them. */
#define DYNBPF_BEST_EFFORT DYNBPF__TAG("dynbpf:best_effort")
/* The program's hook (default: the program's name); programs of one hook are its variants. */
#define DYNBPF_HOOK(name) DYNBPF__TAG("dynbpf:hook=" name)
/* Programs of one hook with the same variant name form one variant (default: the program's name). */
#define DYNBPF_VARIANT(name) DYNBPF__TAG("dynbpf:variant=" name)
/* The variant's place in its hook, an integer literal: lower is tried first (default 0; ties in program order). */
#define DYNBPF_PREFER(n) DYNBPF__TAG("dynbpf:prefer=" DYNBPF__STR(n))
/* What the variant needs of the kernel: "trampolines", "helper:kprobe/bpf_get_current_task_btf", ... (repeatable). */
#define DYNBPF_REQUIRES(requirement) DYNBPF__TAG("dynbpf:requires=" requirement)
/* A keyword of the program's attach(): DYNBPF_ATTACH("category", "sched"); a value of digits is a number. */
#define DYNBPF_ATTACH(keyword, value) DYNBPF__TAG("dynbpf:attach." keyword "=" value)
/* Feature `feature` switches `required` on with it; may sit on any program. */
#define DYNBPF_FEATURE_REQUIRES(feature, required) DYNBPF__TAG("dynbpf:feature_requires=" feature ":" required)

#endif /* __DYNBPF_H__ */
