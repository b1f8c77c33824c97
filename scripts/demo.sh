#!/usr/bin/env bash
# The `make demo` walkthrough: boot a sandbox from a small local image, write
# a file in it, stop it, boot it again and read the file back; then capture
# its stopped disk as a snapshot artifact (by hand until `msb snapshot
# create` lands), inspect and verify it, and show that tampering is caught.
# Everything lives under target/demo; your real ~/.microsandbox is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

msb=target/release/msb
demo=target/demo
export MSB_HOME="$PWD/$demo/home"
export MSB_KERNEL_DIR=${MSB_KERNEL_DIR:-$PWD/target/runtime}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# A previous run may have left its sandbox up: take it down first.
[[ -d "$MSB_HOME" ]] && "$msb" rm demo >/dev/null 2>&1 || true
rm -rf "$demo"
mkdir -p "$demo"

step "what the runtime has"
run "$msb" doctor

step "a tiny local image from Debian's busybox-static (no registry needed)"
run "$msb" image busybox --tag local/busybox:latest

step "boot a sandbox, write a file in it"
run "$msb" create demo --image local/busybox:latest
run "$msb" exec demo -- sh -c 'echo "hello from inside the sandbox" > /root/hello.txt; cat /root/hello.txt; uname -sr'

step "stop it, boot it again: the file is still there"
run "$msb" stop demo
run "$msb" start demo
run "$msb" exec demo -- cat /root/hello.txt
run "$msb" stop demo
run "$msb" ls

step "capture the stopped sandbox's disk as a snapshot artifact"
art="$MSB_HOME/snapshots/demo-snap"
mkdir -p "$art"
cp --sparse=always "$MSB_HOME/sandboxes/demo/upper.ext4" "$art/upper.ext4"
du -h --apparent-size "$art/upper.ext4"; du -h "$art/upper.ext4"
digest=$("$msb" upper digest --json "$art/upper.ext4" | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
image_digest=$("$msb" image ls --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["manifest_digest"])')
size=$(stat -c %s "$art/upper.ext4")
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{"schema":1,"format":"raw","fstype":"ext4","image":{"ref":"local/busybox:latest","manifest_digest":"%s"},"parent":null,"created_at":"%s","labels":{"stage":"demo"},"upper":{"file":"upper.ext4","size_bytes":%s,"integrity":{"algorithm":"msb-merkle-sha256-v1","digest":"%s"}},"source_sandbox":"demo"}' \
  "$image_digest" "$created" "$size" "$digest" > "$art/manifest.json"

step "inspect and verify it (a bare name resolves under \$MSB_HOME/snapshots)"
run "$msb" snapshot inspect demo-snap
run "$msb" snapshot verify demo-snap
run "$msb" upper digest --algorithm msb-sparse-sha256-v1 "$art/upper.ext4"

step "tamper: write one byte into a former hole, verify again (must fail)"
printf '\x01' | dd of="$art/upper.ext4" bs=1 seek=$((3 * 1024 * 1024 * 1024)) conv=notrunc status=none
status=0
"$msb" snapshot verify demo-snap 2>&1 || status=$?
if ((status == 0)); then
  echo "demo: tampering was NOT detected" >&2
  exit 1
fi
echo "tampering detected (exit code $status), as it should be"

step "clean up"
run "$msb" rm demo
