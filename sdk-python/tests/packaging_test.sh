#!/usr/bin/env bash
# The wheel as a user gets it: installed with pip (no index) into a fresh
# venv in a project directory outside the checkout, then the typical flow
# on a real VM, with no Rust toolchain on PATH and no MSB_KERNEL_DIR, and a
# snapshot round trip through a registry on loopback (scripts/test-registry.sh).
#
#   sdk-python/tests/packaging_test.sh WHEEL
set -euo pipefail
wheel=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
project=$(mktemp -d /tmp/msb-py-package-XXXXXX)
homes=$(mktemp -d "${TMPDIR:-/tmp}/msb-py-package-homes-XXXXXX")
registry_script="$here/../../scripts/test-registry.sh"
trap '"$registry_script" stop "$project/registry"; rm -rf "$project" "$homes"' EXIT
registry=$("$registry_script" start "$project/registry")

cp "$here/packaging_flow.py" "$project/"
clean_path=$(tr ':' '\n' <<<"$PATH" | grep -v -e '\.cargo/bin' -e '/rustup' | paste -sd: -)
cd "$project"
env -u MSB_KERNEL_DIR -u MSB_HOME -u CARGO -u RUSTUP_HOME PATH="$clean_path" \
    DOCKER_CONFIG="$project/registry" bash -euo pipefail -c '
    ! command -v cargo >/dev/null || { echo "cargo is on PATH" >&2; exit 1; }
    python3 -m venv venv
    venv/bin/pip install -q --no-index "$1"
    venv/bin/python packaging_flow.py "$2" "$3"
' _ "$wheel" "$homes" "$registry"
