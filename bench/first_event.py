"""The Python side of bench/whole_start.py's time to first event: the tool of bench/first_event.c, with dynbpf.

Run as a script (``python bench/first_event.py first_event.bpf.o``) so that
only dynbpf is imported: open, load the two programs, attach them, trigger
getpgid(MAGIC_PID) until the ring buffer delivers, print the event.
"""

import contextlib
import os
import sys

import dynbpf

MAGIC_PID = 0x5EED1E
PROGRAMS = ("getpgid_enter", "getpgid_exit")


def main(path: str) -> int:
    with dynbpf.open(path) as coll:
        failures = coll.load(PROGRAMS)
        if failures:
            print(f"load: {failures}", file=sys.stderr)
            return 1
        links = [coll.programs[name].attach() for name in PROGRAMS]
        with coll.ring_buffer("events", record="struct event") as events:
            for _ in range(1000):
                with contextlib.suppress(ProcessLookupError):
                    os.getpgid(MAGIC_PID)
                records = events.read(timeout=0.01)
                if records:
                    print(f"event pid={records[0].pid} ret={records[0].ret}", flush=True)
                    break
            else:
                return 1
        for link in links:
            link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
