#!/usr/bin/env bash
# The kernel matrix: run the test suite (or pytest arguments after --) on Debian kernels booted
# under qemu, and print the results side by side. See docs/kernels.md.
#   scripts/kernel-matrix.sh                       # 6.1, 6.12 and the newest 7.x, whole suite
#   scripts/kernel-matrix.sh 7 -- tests/test_kernel_attach.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh" --matrix
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/kernel_matrix.py" "$@"
