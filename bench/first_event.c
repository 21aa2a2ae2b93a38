// SPDX-License-Identifier: GPL-2.0
// The C side of bench/whole_start.py's time to first event: libbpf opens, loads and attaches
// first_event.bpf.o, triggers getpgid(MAGIC_PID) until the ring buffer delivers, prints the event.
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAGIC_PID 0x5eed1e

struct event {
	uint32_t pid;
	uint32_t pad;
	uint64_t took_ns;
	int64_t ret;
};

static int got;

static int on_event(void *ctx, void *data, size_t size)
{
	const struct event *e = data;

	(void)ctx;
	if (size < sizeof(*e))
		return 0;
	printf("event pid=%u ret=%lld\n", e->pid, (long long)e->ret);
	fflush(stdout);
	got = 1;
	return 1;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *links[2] = {0};
	struct ring_buffer *rb;
	int n = 0, err, tries;

	if (argc != 2) {
		fprintf(stderr, "usage: %s first_event.bpf.o\n", argv[0]);
		return 2;
	}
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "load: %s\n", strerror(-err));
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		if (n == 2)
			break;
		links[n] = bpf_program__attach(prog);
		if (!links[n]) {
			fprintf(stderr, "attach %s: %s\n", bpf_program__name(prog), strerror(errno));
			return 1;
		}
		n++;
	}
	rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")), on_event, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	for (tries = 0; !got && tries < 1000; tries++) {
		getpgid(MAGIC_PID);
		ring_buffer__poll(rb, 10);
	}
	ring_buffer__free(rb);
	while (n--)
		bpf_link__destroy(links[n]);
	bpf_object__close(obj);
	return got ? 0 : 1;
}
