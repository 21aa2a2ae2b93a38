#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, types, then pytest.
# Extra arguments go to pytest.
# --kernel VERSION (repeatable, first): run the suite instead on those Debian kernels under qemu
# (scripts/kernel-matrix.sh, docs/kernels.md), e.g. ./test.sh --kernel 7.2 tests/test_kernel_attach.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kernels=()
while [[ "${1:-}" == --kernel ]]; do
    [[ $# -ge 2 ]] || { echo "test.sh: --kernel needs a version (6.1, 6.12, 7.2, 7, ...)" >&2; exit 2; }
    kernels+=("$2")
    shift 2
done
if ((${#kernels[@]})); then
    exec "$ROOT/scripts/kernel-matrix.sh" "${kernels[@]}" -- "$@"
fi
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
exec .venv/bin/pytest "$@"
