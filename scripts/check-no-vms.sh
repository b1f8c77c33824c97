#!/usr/bin/env bash
# Fails (and kills them) if QEMU processes started under DIR, or the network
# processes (msb-netd) beside them, are still alive: a test suite must not
# leave VMs behind.
set -euo pipefail
dir=${1:?usage: check-no-vms.sh DIR}
# Absolute, so that a relative DIR never matches another checkout's VMs.
dir=$(realpath -m "$dir")
left=$( (pgrep -f "qemu-system-x86_64 .*[ =,]${dir}/"; pgrep -f "msb-netd --sandbox ${dir}/") || true)
left=$(echo $left)
if [[ -n "$left" ]]; then
  echo "check-no-vms: QEMU or msb-netd processes outlived the test suite:" >&2
  ps -o pid,args -p $left >&2 || true
  kill -9 $left 2>/dev/null || true
  exit 1
fi
echo "check-no-vms: no VM outlived the suite"
