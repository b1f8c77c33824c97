#!/bin/sh
# What `make fuzz` needs besides the project's own setup: the nightly
# toolchain (libFuzzer's instrumentation) and cargo-fuzz. As root they are
# installed; otherwise the command to run is printed and this fails, as
# scripts/setup.sh does for system packages.
set -eu
need=""
if ! cargo +nightly --version >/dev/null 2>&1; then
  cmd="rustup toolchain install nightly --profile minimal"
  if [ "$(id -u)" = 0 ]; then
    echo "fuzz setup: $cmd"; $cmd
  else
    need="$need\n  $cmd"
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cmd="cargo install cargo-fuzz --locked"
  if [ "$(id -u)" = 0 ]; then
    echo "fuzz setup: $cmd"; $cmd
  else
    need="$need\n  $cmd"
  fi
fi
if [ -n "$need" ]; then
  printf "fuzz setup: missing tools; run:%b\n" "$need" >&2
  exit 1
fi
