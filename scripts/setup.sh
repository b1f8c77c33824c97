#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, and nothing twice. As root
# it installs missing Debian packages with apt-get; otherwise it prints the
# command to run and fails. Rust comes from the machine's rustup toolchain
# (Debian's cargo is too old for edition 2024).
set -euo pipefail

# command → Debian package that provides it
declare -A NEEDS=(
  [mkfs.ext4]=e2fsprogs
  [debugfs]=e2fsprogs
  [python3]=python3
  [truncate]=coreutils
  [mmdebstrap]=mmdebstrap
)

missing=()
for cmd in "${!NEEDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDS[$cmd]}")
done

"$(dirname "$0")/apt-install-missing.sh" setup "${missing[@]}"
"$(dirname "$0")/setup-registry.sh"

for bin in "${HOME:-/root}/.cargo/bin" /usr/local/cargo/bin; do
  [[ -x "$bin/cargo" && ":$PATH:" != *":$bin:"* ]] && PATH="$bin:$PATH"
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust >= 1.85 with rustup (https://rustup.rs), then re-run" >&2
  exit 1
fi
version=$(cargo --version | awk '{print $2}')
if [[ "$(printf '%s\n1.85.0\n' "$version" | sort -V | head -1)" != "1.85.0" ]]; then
  echo "setup: cargo $version is too old (edition 2024 needs >= 1.85); run: rustup update stable" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "setup: the $component component is missing; run: rustup component add $component" >&2
    exit 1
  fi
done
