#!/usr/bin/env bash
# A throwaway OCI registry for the SDK test suites: Debian's docker-registry
# (distribution 2.8, installed by scripts/setup-registry.sh) on 127.0.0.1
# with a free port, its config, storage, log and pid all under DIR.
#
#   scripts/test-registry.sh start DIR   prints 127.0.0.1:PORT once it answers
#   scripts/test-registry.sh stop DIR    kills the registry started in DIR
#
# The registry runs in its own session so the caller's pipes close when the
# script exits (a test reading this script's output does not wait on it).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2
registry=/usr/bin/docker-registry

case "$action" in
start)
  [ -x "$registry" ] || { echo "$registry is missing: run scripts/setup-registry.sh" >&2; exit 1; }
  mkdir -p "$dir/storage"
  dir=$(cd "$dir" && pwd)
  # The kernel's pick of a free port; the registry binds it a moment later.
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  setsid "$registry" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
  echo $! > "$dir/registry.pid"
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
      echo "127.0.0.1:$port"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
      echo "docker-registry exited; its log:" >&2
      cat "$dir/registry.log" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "docker-registry did not answer on 127.0.0.1:$port within 10 s" >&2
  kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
  exit 1
  ;;
stop)
  pidfile="$dir/registry.pid"
  [ -f "$pidfile" ] || exit 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  ;;
*) usage ;;
esac
