#!/usr/bin/env bash
# Installs what the registry tests and `make bench-pull` need: Debian's
# `docker-registry` (distribution 2.8, the registry they run on 127.0.0.1),
# `skopeo` (the independent client that pushes images into it), `htpasswd`
# (bcrypt users for its basic auth), and `openssl` and `curl`. Nothing is
# installed twice.
set -euo pipefail

# command → Debian package that provides it
declare -A NEEDS=(
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [htpasswd]=apache2-utils
  [openssl]=openssl
  [curl]=curl
)

missing=()
for cmd in "${!NEEDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDS[$cmd]}")
done

"$(dirname "$0")/apt-install-missing.sh" setup-registry "${missing[@]}"
