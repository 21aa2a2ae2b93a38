#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml (dependencies + dev group), with hashes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh" >/dev/null 2>&1 || true
UV_PYTHON_DOWNLOADS=never "$ROOT/.tools/bin/uv" pip compile "$ROOT/pyproject.toml" --group dev \
    --generate-hashes --python-version 3.11 --no-header -q -o "$ROOT/requirements.lock"
