"""The load ``dynbpf demo`` runs its application under: a steady stream of execs, opens and connects.

A separate process (``python -m dynbpf._cli.demo_load``), so that what the
demo's programs count is what the kernel saw a real process do, not what
the demo says it did. It runs until SIGTERM or SIGINT, then prints how
many of each it did as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

#: per round, every ``TICK`` seconds: tens of events a second of each kind, little CPU
TICK = 0.05
EXECS, OPENS, CONNECTS = 1, 4, 2


def main() -> int:
    done = {"pid": os.getpid(), "exec": 0, "open": 0, "connect": 0}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        began = time.monotonic()
        for _ in range(EXECS):
            subprocess.run(["/bin/true"], check=False)
            done["exec"] += 1
        for _ in range(OPENS):
            os.close(os.open("/dev/null", os.O_WRONLY))  # an openat, and nothing left behind if killed
            done["open"] += 1
        for _ in range(CONNECTS):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("127.0.0.1", 9))  # UDP: no packet sent, but the connect syscall runs
            done["connect"] += 1
        time.sleep(max(0.0, TICK - (time.monotonic() - began)))
    sys.stdout.write(json.dumps(done) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
