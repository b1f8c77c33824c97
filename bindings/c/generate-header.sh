#!/usr/bin/env bash
# Generate the C header of the microsandbox C ABI with cbindgen 0.29.
#   generate-header.sh              write include/microsandbox.h (checked in)
#   generate-header.sh --out FILE   write FILE instead
#   generate-header.sh --check [HEADER]
#                                   generate into target/ and fail if HEADER
#                                   (default: include/microsandbox.h) differs
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
mode=write
out="$here/include/microsandbox.h"
case "${1:-}" in
  --out) out="$2" ;;
  --check) mode=check; out="${2:-$here/include/microsandbox.h}" ;;
  "") ;;
  *) echo "usage: $0 [--out FILE | --check [HEADER]]" >&2; exit 2 ;;
esac
version="$(cbindgen --version | awk '{print $2}')"
case "$version" in
  0.29.*) ;;
  *) echo "cbindgen 0.29 is needed, found $version (scripts/setup-go.sh installs it)" >&2; exit 1 ;;
esac
generate() { cbindgen --quiet --config "$here/cbindgen.toml" --crate microsandbox-c --output "$1" "$here"; }
if [ "$mode" = write ]; then
  generate "$out"
  exit 0
fi
fresh="$root/target/c-header/microsandbox.h"
mkdir -p "$(dirname "$fresh")"
generate "$fresh"
if ! diff -u "$out" "$fresh"; then
  echo "header drift: $out differs from a fresh cbindgen generation; run bindings/c/generate-header.sh" >&2
  exit 1
fi
echo "header up to date: $out"
