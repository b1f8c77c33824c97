#!/usr/bin/env bash
# Installs what the Go SDK's targets (mk/go.mk) need, and nothing twice: a
# C compiler for cgo (apt, as root), Go >= 1.22 (checked; /usr/local/go is
# used when it is not on PATH) and cbindgen 0.29 (cargo install). Not root:
# prints the command to run and fails.
set -euo pipefail

for bin in "${HOME:-/root}/.cargo/bin" /usr/local/go/bin; do
  [[ -d "$bin" && ":$PATH:" != *":$bin:"* ]] && PATH="$PATH:$bin"
done

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v busybox >/dev/null 2>&1 || [[ -x /bin/busybox ]] || missing+=(busybox-static)
"$(dirname "$0")/apt-install-missing.sh" setup-go "${missing[@]}"

if ! command -v go >/dev/null 2>&1; then
  echo "setup-go: Go >= 1.22 not found; install it from https://go.dev/dl (to /usr/local/go), then re-run" >&2
  exit 1
fi
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if ((go_minor < 22)); then
  echo "setup-go: Go $(go env GOVERSION) is too old; Go >= 1.22 is needed" >&2
  exit 1
fi

if ! cbindgen --version 2>/dev/null | grep -q '^cbindgen 0\.29\.'; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "setup-go: cargo not found (needed to install cbindgen 0.29)" >&2
    exit 1
  fi
  echo "setup-go: installing cbindgen 0.29"
  cargo install cbindgen --version '^0.29' --locked --quiet
fi
