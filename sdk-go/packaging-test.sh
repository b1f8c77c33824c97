#!/usr/bin/env bash
# The packaging test: the Go dist directory (make dist-go) used as a user
# gets it. A fresh module in a temp dir outside the checkout requires the
# SDK through a replace directive to that directory only, is built with a
# PATH without cargo and without MSB_KERNEL_DIR, and runs the typical flow
# (internal/packaging/flow, copied from the dist directory) on a real VM,
# with a snapshot round trip through a registry on loopback
# (scripts/test-registry.sh).
#   packaging-test.sh DIST_DIR
set -euo pipefail
dist="$(cd "$1" && pwd)"
go_bin="$(command -v go || echo /usr/local/go/bin/go)"
# Outside the checkout (make test's TMPDIR is inside it).
work="$(mktemp -d /tmp/msb-go-packaging.XXXXXX)"
registry_script="$(cd "$(dirname "$0")/.." && pwd)/scripts/test-registry.sh"
trap '"$registry_script" stop "$work/registry"; rm -rf "$work"' EXIT
mkdir -p "$work/app" "$work/home1" "$work/home2" "$work/home3" "$work/scratch"
registry="$("$registry_script" start "$work/registry")"
cp "$dist/internal/packaging/flow/main.go" "$work/app/main.go"
cat > "$work/app/go.mod" <<MOD
module example.com/msbflow

go 1.22

require github.com/superradcompany/microsandbox/sdk/go v0.0.0

replace github.com/superradcompany/microsandbox/sdk/go => $dist
MOD
clean_path="$(dirname "$go_bin"):/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
cd "$work/app"
env -u MSB_KERNEL_DIR -u MSB_HOME -u CARGO_HOME -u RUSTUP_HOME PATH="$clean_path" DOCKER_CONFIG="$work/scratch" \
  GOFLAGS=-mod=mod GOPROXY=off GOCACHE="${GOCACHE:-$("$go_bin" env GOCACHE)}" \
  sh -c 'if command -v cargo >/dev/null; then echo "cargo is on PATH" >&2; exit 1; fi; go build -o flow . && ./flow "$@"' \
  flow "$work/home1" "$work/home2" "$work/home3" "$work/scratch" "$registry"
echo "packaging test: ok (dist $dist)"
