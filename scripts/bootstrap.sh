#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root): system
# packages for compiling BPF fixtures, then the locked Python environment.
# Sourced by run.sh and test.sh; safe to run again at any time.
# --matrix: also what the kernel matrix needs (scripts/kernel-matrix.sh): qemu
# and the host tools virtme-ng uses, and virtme-ng itself in .tools/matrix.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VERSION="0.13.9"
APT_PACKAGES=(clang llvm libbpf-dev bpftool gcc systemtap-sdt-dev)
MATRIX=0
if [[ "${1:-}" == --matrix ]]; then
    MATRIX=1
    # udev: virtme-ng's guest init names its I/O ports through it (without it, guest output is lost);
    # kmod: depmod indexes the unpacked modules; busybox-static: the guest's initramfs; zstd: the
    # kernel images' compression (their BTF is read on the host); file: virtme-ng reads image versions
    APT_PACKAGES+=(qemu-system-x86 udev kmod busybox-static zstd file)
fi

log() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing Debian packages: ${missing[*]}; run this script as root to install them"
        exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# uv lives in its own small venv so the project venv only holds locked deps.
if [[ ! -x "$ROOT/.tools/bin/uv" ]] || [[ "$("$ROOT/.tools/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
    log "installing uv $UV_VERSION"
    python3 -m venv "$ROOT/.tools"
    "$ROOT/.tools/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

# requirements.lock pins every dependency with hashes (regenerate with
# scripts/lock.sh); the project itself is installed editable on top.
export UV_PYTHON_DOWNLOADS=never
uv="$ROOT/.tools/bin/uv"
if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
    "$uv" venv --quiet --python "$(command -v python3)" "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.dynbpf-lock"
want="$(sha256sum "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
    log "syncing Python dependencies"
    VIRTUAL_ENV="$ROOT/.venv" "$uv" pip sync --quiet --require-hashes "$ROOT/requirements.lock"
    VIRTUAL_ENV="$ROOT/.venv" "$uv" pip install --quiet --no-deps -e "$ROOT"
    echo "$want" >"$stamp"
fi

if ((MATRIX)); then
    # virtme-ng in a venv of its own, from its own lock: the project's venv stays as the plain run has it
    matrix="$ROOT/.tools/matrix"
    [[ -x "$matrix/bin/python" ]] || "$uv" venv --quiet --python "$(command -v python3)" "$matrix"
    want="$(sha256sum "$ROOT/requirements-matrix.lock" | cut -d' ' -f1)"
    if [[ ! -f "$matrix/.dynbpf-lock" ]] || [[ "$(cat "$matrix/.dynbpf-lock")" != "$want" ]]; then
        log "syncing the kernel matrix's Python dependencies"
        VIRTUAL_ENV="$matrix" "$uv" pip sync --quiet --require-hashes "$ROOT/requirements-matrix.lock"
        echo "$want" >"$matrix/.dynbpf-lock"
    fi
fi
