#!/usr/bin/env bash
# Installs what the TypeScript SDK's targets (mk/ts.mk) need, and nothing
# twice: Node >= 20 with npm (Debian packages `nodejs` and `npm`, installed
# as root, otherwise the command is printed), then the package's
# devDependencies from its lockfile (`npm ci`, only when they are missing or
# the lockfile changed).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
"$(dirname "$0")/apt-install-missing.sh" setup-ts "${need[@]}"

major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 20)); then
  echo "setup-ts: Node $(node --version) is too old; the SDK needs Node >= 20" >&2
  exit 1
fi

stamp=sdk-ts/node_modules/.package-lock.json
if [[ ! -f $stamp || sdk-ts/package-lock.json -nt $stamp || ! -x sdk-ts/node_modules/.bin/tsc ]]; then
  echo "setup-ts: npm ci in sdk-ts"
  (cd sdk-ts && npm ci --no-audit --no-fund --loglevel=error)
fi
