#!/usr/bin/env bash
# Builds the two npm tarballs into OUT (default target/dist/ts): the main
# package `microsandbox` (compiled JS + .d.ts) and the platform package
# `microsandbox-linux-x64-gnu` (the addon, stripped, and the guest assets as
# microsandbox-guest/). Usage: stage.sh NATIVE_LIB GUEST_ASSETS_DIR [OUT]
set -euo pipefail
native=$1 assets=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${3:-$root/target/dist/ts}
stage=$out/stage
rm -rf "$stage" && mkdir -p "$stage/main" "$stage/platform" "$out"
rm -f "$out"/*.tgz

sdk=$root/sdk-ts
cp "$sdk/README.md" "$stage/main/"
# The workspace link to the platform package serves the checkout only.
node -e 'const p = require(process.argv[1]); delete p.workspaces; delete p.devDependencies; delete p.scripts;
  require("fs").writeFileSync(process.argv[2], JSON.stringify(p, null, 2) + "\n")' "$sdk/package.json" "$stage/main/package.json"
cp -r "$sdk/dist" "$stage/main/dist"

plat=$sdk/npm/linux-x64-gnu
cp "$plat/package.json" "$plat/README.md" "$stage/platform/"
strip --strip-debug -o "$stage/platform/microsandbox.linux-x64-gnu.node" "$native"
mkdir -p "$stage/platform/microsandbox-guest"
cp -r "$assets"/. "$stage/platform/microsandbox-guest/"
for need in modules.order msb-guest-init msb-netd; do
  [[ -f $stage/platform/microsandbox-guest/$need ]] || { echo "stage: $assets lacks $need" >&2; exit 1; }
done

(cd "$stage/platform" && npm pack --silent --pack-destination "$out" >/dev/null)
(cd "$stage/main" && npm pack --silent --pack-destination "$out" >/dev/null)
rm -rf "$stage"
ls "$out"/*.tgz
