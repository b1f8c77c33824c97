#!/usr/bin/env bash
# The `make demo` walkthrough. Today: build a small snapshot artifact by hand
# (an ext4 upper made by mkfs.ext4, a manifest with recorded integrity), then
# inspect and verify it with `msb`, and show that tampering is caught.
# Everything lives under target/demo; your real ~/.microsandbox is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

msb=target/release/msb
demo=target/demo
export MSB_HOME="$PWD/$demo/home"
art="$MSB_HOME/snapshots/demo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$demo"
mkdir -p "$demo/content/root" "$art"
echo "hello from a microsandbox snapshot" > "$demo/content/root/hello.txt"

step "make a 1 GiB sparse ext4 upper holding /root/hello.txt"
truncate -s 1G "$art/upper.ext4"
PATH="$PATH:/sbin:/usr/sbin" mkfs.ext4 -q -F -d "$demo/content" "$art/upper.ext4"
du -h --apparent-size "$art/upper.ext4"; du -h "$art/upper.ext4"

step "msb upper digest (default algorithm, then the 0.6.6 exchange algorithm)"
"$msb" upper digest "$art/upper.ext4"
"$msb" upper digest --algorithm msb-sparse-sha256-v1 "$art/upper.ext4"
digest=$("$msb" upper digest --json "$art/upper.ext4" | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')

size=$(stat -c %s "$art/upper.ext4")
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{"schema":1,"format":"raw","fstype":"ext4","image":{"ref":"local/busybox:demo","manifest_digest":"sha256:%s"},"parent":null,"created_at":"%s","labels":{"stage":"demo"},"upper":{"file":"upper.ext4","size_bytes":%s,"integrity":{"algorithm":"msb-merkle-sha256-v1","digest":"%s"}},"source_sandbox":"demo"}' \
  "$(printf 0%.0s {1..64})" "$created" "$size" "$digest" > "$art/manifest.json"

step "msb snapshot inspect demo   (a bare name resolves under \$MSB_HOME/snapshots)"
"$msb" snapshot inspect demo

step "msb snapshot verify demo"
"$msb" snapshot verify demo
"$msb" snapshot verify --json demo

step "tamper: write one byte into a former hole, verify again (must fail)"
printf '\x01' | dd of="$art/upper.ext4" bs=1 seek=$((512 * 1024 * 1024)) conv=notrunc status=none
status=0
"$msb" snapshot verify demo 2>&1 || status=$?
if ((status == 0)); then
  echo "demo: tampering was NOT detected" >&2
  exit 1
fi
echo "tampering detected (exit code $status), as it should be"
