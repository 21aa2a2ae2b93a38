#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml (dependencies + dev group), with hashes, and
# requirements-matrix.lock from its matrix group alone (the kernel matrix's own venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh" >/dev/null 2>&1 || true
UV_PYTHON_DOWNLOADS=never "$ROOT/.tools/bin/uv" pip compile "$ROOT/pyproject.toml" --group dev \
    --generate-hashes --python-version 3.11 --no-header -q -o "$ROOT/requirements.lock"
cd "$ROOT"
UV_PYTHON_DOWNLOADS=never .tools/bin/uv pip compile --group pyproject.toml:matrix \
    --generate-hashes --python-version 3.11 --no-header -q -o requirements-matrix.lock
