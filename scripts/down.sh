#!/usr/bin/env bash
# `make down`: stop what `make up` started (service, worker, Prefect server), each by process group.
set -uo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
RUN="$HOME_DIR/run"
export FLYWHEEL_HOME="$HOME_DIR"
.venv/bin/flywheel service stop --stack local 2>/dev/null || true
for name in worker prefect-server; do
  pidfile="$RUN/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
