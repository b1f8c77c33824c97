#!/usr/bin/env bash
# The `make demo` walkthrough: boot a sandbox from a small local image, write
# a file in it, stop it, boot it again and read the file back; snapshot the
# stopped sandbox with integrity, inspect and verify the snapshot, export it
# (with its image) to one archive, import that into a second, empty home (as
# on another machine), boot a new sandbox there from the imported snapshot
# and read the file; show that tampering is caught. Then the whole VM: a
# guest counting in memory is captured, resumed and forked twice (each fork
# continues from the captured count, on its own disk), and a create forks the
# base snapshot its first boot left (instant create). Last, the network: a
# sandbox of a Debian bookworm python image (scripts/build-debian-image.sh)
# pip-installs a package from PyPI, is snapshotted as `after-pip-install`,
# and a fresh sandbox booted from that snapshot with the network off imports it.
# Everything lives under target/demo; your real ~/.microsandbox is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

msb=target/release/msb
demo=target/demo
export MSB_HOME="$PWD/$demo/home"
# "Another machine": a second home that has never seen the image.
other_home="$PWD/$demo/other-home"
export MSB_KERNEL_DIR=${MSB_KERNEL_DIR:-$PWD/target/runtime}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# A previous run may have left its sandbox up: take it down first.
if [[ -d "$MSB_HOME" ]]; then
  for sb in demo fork-a fork-b quick pip offline; do "$msb" rm "$sb" >/dev/null 2>&1 || true; done
fi
if [[ -d "$other_home" ]]; then
  MSB_HOME="$other_home" "$msb" rm demo-restored >/dev/null 2>&1 || true
fi
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

step "snapshot the stopped sandbox, with integrity"
run "$msb" snapshot create demo --name demo-snap --label stage=demo --integrity
run "$msb" snapshot ls
art="$MSB_HOME/snapshots/demo-snap"
du -h --apparent-size "$art/upper.ext4"; du -h "$art/upper.ext4"

step "inspect and verify it (a bare name resolves under \$MSB_HOME/snapshots)"
run "$msb" snapshot inspect demo-snap
run "$msb" snapshot verify demo-snap

step "export it, with its image, to one archive (holes stay holes)"
archive="$demo/demo-snap.tar.zst"
run "$msb" snapshot export demo-snap "$archive" --with-image
ls -l "$archive"

step "import it on \"another machine\": a second, empty MSB_HOME"
run env MSB_HOME="$other_home" "$msb" image ls
run env MSB_HOME="$other_home" "$msb" snapshot import "$archive"
run env MSB_HOME="$other_home" "$msb" snapshot ls
run env MSB_HOME="$other_home" "$msb" snapshot verify demo-snap
du -h "$other_home/snapshots/demo-snap/upper.ext4"

step "boot a new sandbox there from the imported snapshot: the file is there"
run env MSB_HOME="$other_home" "$msb" create demo-restored --from-snapshot demo-snap
out=$(env MSB_HOME="$other_home" "$msb" exec demo-restored -- cat /root/hello.txt)
echo "$out"
[[ "$out" == "hello from inside the sandbox" ]] || { echo "demo: the file did not survive the trip" >&2; exit 1; }
run env MSB_HOME="$other_home" "$msb" rm demo-restored

step "tamper: write one byte into a former hole, verify again (must fail)"
printf '\x01' | dd of="$art/upper.ext4" bs=1 seek=$((3 * 1024 * 1024 * 1024)) conv=notrunc status=none
status=0
"$msb" snapshot verify demo-snap 2>&1 || status=$?
if ((status == 0)); then
  echo "demo: tampering was NOT detected" >&2
  exit 1
fi
echo "tampering detected (exit code $status), as it should be"

step "full-VM snapshot: a guest counting in memory (a shell variable, never on disk)"
run "$msb" start demo
run "$msb" exec demo -- sh -c 'mkfifo /tmp/count.fifo; setsid sh -c '"'"'n=0; trap "echo \$n > /tmp/count.fifo" USR1; while :; do n=$((n+1)); sleep 0.1; done'"'"' </dev/null >/dev/null 2>&1 & echo $! > /tmp/count.pid'
count='kill -USR1 $(cat /tmp/count.pid); cat /tmp/count.fifo'
sleep 1
run "$msb" exec demo -- sh -c "$count"
run "$msb" snapshot create demo --full --name demo-live
run "$msb" ls
run "$msb" resume demo
sleep 1
printf 'the original counts on: '; "$msb" exec demo -- sh -c "$count"

step "fork it twice: each continues from the captured count, no boot"
for f in fork-a fork-b; do
  t0=$(date +%s%N)
  run "$msb" fork demo-live "$f"
  printf '%s: forked in %d ms, count %s, hostname %s\n' "$f" $((($(date +%s%N) - t0) / 1000000)) \
    "$("$msb" exec "$f" -- sh -c "$count")" "$("$msb" exec "$f" -- hostname)"
done
run "$msb" exec fork-a -- sh -c 'echo only-in-a > /root/mine'
if "$msb" exec fork-b -- cat /root/mine 2>/dev/null; then
  echo "demo: forks share a disk" >&2; exit 1
fi
echo "fork-b does not see fork-a's file: each fork has its own disk"
run "$msb" snapshot verify demo-live
run "$msb" snapshot ls

step "instant create: the first sandbox of a shape left a base; this one forks it"
t0=$(date +%s%N)
run "$msb" create quick --image local/busybox:latest
run "$msb" exec quick -- hostname
printf 'created and answered in %d ms\n' $((($(date +%s%N) - t0) / 1000000))

step "clean up"
run "$msb" rm fork-a
run "$msb" rm fork-b
run "$msb" rm quick
run "$msb" snapshot rm demo-live
run "$msb" rm demo

step "networking: a Debian bookworm python image, built from deb.debian.org (cached)"
debian_archive=$(scripts/build-debian-image.sh)
ls -l "$debian_archive"
run "$msb" image load "$debian_archive" --tag local/debian-python:bookworm
run "$msb" run local/debian-python:bookworm -- python3 --version

step "after-pip-install: pip install from PyPI under the default policy (public)"
t0=$(date +%s%N)
run "$msb" create pip --image local/debian-python:bookworm --network public
run "$msb" exec pip -- pip install --break-system-packages --no-cache-dir \
  --disable-pip-version-check --root-user-action=ignore six
run "$msb" stop pip
run "$msb" snapshot create pip --name after-pip-install --label stage=after-pip-install
run "$msb" snapshot ls

step "a fresh sandbox from the snapshot, network off: the package is there"
run "$msb" create offline --from-snapshot after-pip-install --network none
version=$("$msb" exec offline -- python3 -c 'import six; print(six.__version__)')
echo "six $version"
[[ "$version" =~ ^[0-9]+(\.[0-9]+)+$ ]] || { echo "demo: six did not import offline" >&2; exit 1; }
interfaces=$("$msb" exec offline -- ls /sys/class/net)
echo "interfaces: $interfaces"
[[ "$interfaces" == "lo" ]] || { echo "demo: a network-none sandbox has more than lo" >&2; exit 1; }
printf 'after-pip-install flow in %d ms\n' $((($(date +%s%N) - t0) / 1000000))
run "$msb" rm offline
run "$msb" rm pip
