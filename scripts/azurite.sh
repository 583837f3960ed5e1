#!/usr/bin/env bash
# Start or stop a local Azurite (from npm, in local/node_modules) on 127.0.0.1 with a throw-away data dir.
#   bash scripts/azurite.sh start   # default ports 10000-10002; prints the connection string
#   bash scripts/azurite.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
state=.local-run
pidfile=$state/azurite.pid
case "${1:-}" in
  start)
    bash scripts/setup.sh
    mkdir -p "$state"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "Azurite already running (pid $(cat "$pidfile"))"; exit 0
    fi
    .venv/bin/python -m local.azurite > "$state/azurite.out" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 100); do
      [ -s "$state/azurite.out" ] && break
      sleep 0.2
    done
    cat "$state/azurite.out"
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2
    ;;
esac
