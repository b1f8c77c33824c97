#!/bin/bash
# Build every fuzz target (or those named) with cargo-fuzz and run each for
# FUZZ_SECONDS (default 600), FUZZ_JOBS (default 1) at a time. The growing
# corpus of a target is target/fuzz-corpus/<target> (the checked-in seeds of
# fuzz/corpus/<target> are read, never written); crash inputs land in
# target/fuzz-artifacts/<target>/, logs in target/fuzz-logs/. Each target's
# seconds, execs/s, final corpus size and crashes (parsed from libFuzzer's
# final stats) go to target/fuzz-report.txt. A crash fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-1}
SANITIZER=${FUZZ_SANITIZER:-none}
NICE=${FUZZ_NICE:-10}
ALL="manifest integrity_sparse_sha256 integrity_merkle archive_import image_layer guest_frames netd_frames"
TARGETS=${*:-$ALL}
ROOT=$PWD
BUILD="cargo +nightly fuzz build -s $SANITIZER --debug-assertions --target-dir $ROOT/target/fuzz"
REPORT=$ROOT/target/fuzz-report.txt
mkdir -p target/fuzz-logs target/fuzz-results
# Scratch files of the targets (temp homes, layouts): tmpfs when there is one.
if [ -z "${MSB_FUZZ_TMPDIR:-}" ] && [ -d /dev/shm ]; then
  export MSB_FUZZ_TMPDIR=/dev/shm/msb-fuzz-$$
fi
mkdir -p "${MSB_FUZZ_TMPDIR:-${TMPDIR:-/tmp}}"

(cd fuzz && nice -n "$NICE" $BUILD) || exit 1

run_one() {
  local t=$1
  local corpus=$ROOT/target/fuzz-corpus/$t artifacts=$ROOT/target/fuzz-artifacts/$t/
  local log=$ROOT/target/fuzz-logs/$t.log
  mkdir -p "$corpus" "$artifacts"
  local start=$(date +%s)
  (cd fuzz && nice -n "$NICE" cargo +nightly fuzz run -s "$SANITIZER" --debug-assertions \
      --target-dir "$ROOT/target/fuzz" "$t" "$corpus" "$ROOT/fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=60 \
      -rss_limit_mb=2048 -artifact_prefix="$artifacts") >"$log" 2>&1
  local status=$?
  # libFuzzer's own time (the build before it is not fuzzing).
  local took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  [ -n "$took" ] || took=$(( $(date +%s) - start ))
  local execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  local units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  local corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
  local crashes=$(find "$artifacts" -type f | wc -l)
  printf '%-24s %6ss %8s exec/s %10s execs  corpus %-12s crashes %s  exit %s\n' \
    "$t" "$took" "${execs:-?}" "${units:-?}" "${corp:-?}" "$crashes" "$status" \
    >"$ROOT/target/fuzz-results/$t"
  cat "$ROOT/target/fuzz-results/$t"
  [ "$status" = 0 ] && [ "$crashes" = 0 ]
}
export -f run_one
export ROOT SECONDS_EACH SANITIZER NICE

status=0
printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'run_one {}' || status=1
{
  echo "fuzz run $(date -u +%FT%TZ): ${SECONDS_EACH}s per target, $JOBS at a time, sanitizer $SANITIZER"
  for t in $TARGETS; do cat "target/fuzz-results/$t" 2>/dev/null || echo "$t: no result"; done
} >"$REPORT"
cat "$REPORT"
[ -n "${MSB_FUZZ_TMPDIR:-}" ] && case "$MSB_FUZZ_TMPDIR" in /dev/shm/msb-fuzz-*) rm -rf "$MSB_FUZZ_TMPDIR";; esac
exit $status
