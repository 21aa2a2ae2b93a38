#!/usr/bin/env bash
# Set up (idempotently) and run dynbpf. With no arguments: the kernel capability report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$ROOT/scripts/bootstrap.sh"
if (($# == 0)); then set -- probe; fi
exec "$ROOT/.venv/bin/dynbpf" "$@"
