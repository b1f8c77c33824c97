#!/usr/bin/env bash
# Usage: scripts/apt-install-missing.sh TAG [PACKAGE…]
# The one place the setup scripts install Debian packages: as root it
# installs the given packages with apt-get (nothing to do when none is
# given); otherwise it prints the command to run and fails. TAG prefixes
# its messages (the calling script's name).
set -euo pipefail
tag=$1
shift
mapfile -t packages < <(printf '%s\n' "$@" | sort -u | sed '/^$/d')
((${#packages[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "$tag: missing packages; run: sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
echo "$tag: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
