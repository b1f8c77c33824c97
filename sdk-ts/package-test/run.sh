#!/usr/bin/env bash
# The package as a user gets it: install the two tarballs of DIST into an
# empty project in a temp dir outside the checkout (offline), then run the
# typical flow with node — PATH without cargo, no MSB_KERNEL_DIR — and a
# snapshot round trip through a registry on loopback (scripts/test-registry.sh).
# Usage: run.sh DIST_DIR
set -euo pipefail
dist=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp_root=${TMPDIR:-/tmp}
mkdir -p "$tmp_root"
tmp_root=$(cd "$tmp_root" && pwd)
project=$(mktemp -d /tmp/msb-ts-project-XXXXXX)
registry_script="$here/../../scripts/test-registry.sh"
trap '"$registry_script" stop "$project/registry"; rm -rf "$project"' EXIT
registry=$("$registry_script" start "$project/registry")
clean_path=$(tr ':' '\n' <<<"$PATH" | grep -v -e '\.cargo' -e rustup | paste -sd: -)
cd "$project"
env -u MSB_KERNEL_DIR PATH="$clean_path" npm init -y >/dev/null
env -u MSB_KERNEL_DIR PATH="$clean_path" npm install --offline --no-audit --no-fund --loglevel=error \
  "$dist"/microsandbox-linux-x64-gnu-*.tgz "$dist"/microsandbox-[0-9]*.tgz
cp "$here/flow.js" .
if PATH="$clean_path" command -v cargo >/dev/null; then
  echo "package test: cargo is still on PATH" >&2
  exit 1
fi
env -u MSB_KERNEL_DIR -u MSB_HOME PATH="$clean_path" MSB_TEST_TMP="$tmp_root" \
  MSB_TEST_REGISTRY="$registry" DOCKER_CONFIG="$project/registry" node flow.js
