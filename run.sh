#!/usr/bin/env bash
# Set up (idempotently) and run dynbpf. With no arguments: the bundled example application under the agent
# for ~30 s (`dynbpf demo`: features switched live, the agent restarted, everything cleaned up); the
# object is compiled at first run and cached. `./run.sh probe`: the kernel capability report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$ROOT/scripts/bootstrap.sh"
if (($# == 0)); then
    obj="$(cd "$ROOT" && .venv/bin/python -c 'from examples.feature_agent import build; print(build())')"
    set -- demo "$obj"
fi
exec "$ROOT/.venv/bin/dynbpf" "$@"
