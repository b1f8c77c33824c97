#!/usr/bin/env bash
# Installs what the Python SDK's build and tests need, when missing: the
# python3 venv module (apt, as root) and a venv under target/ holding
# maturin, pytest, pytest-asyncio and mypy. Idempotent: a venv that already
# has the pinned tools is left alone.
#
#   scripts/setup-python.sh [VENV]      VENV defaults to target/venv-py
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-target/venv-py}
TOOLS=(maturin==1.16.* pytest pytest-asyncio mypy)
STAMP="$VENV/.tools-${#TOOLS[@]}-maturin-1.16"

log() { printf 'setup-python: %s\n' "$*" >&2; }

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    "$(dirname "$0")/apt-install-missing.sh" setup-python python3-venv
fi

if [[ -f $STAMP && -x $VENV/bin/maturin ]]; then
    exit 0
fi
log "creating $VENV with ${TOOLS[*]}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "${TOOLS[@]}"
touch "$STAMP"
