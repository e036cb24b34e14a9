#!/usr/bin/env bash
# `make stream-down`: stop what `make stream-up` started (the consumers, then Redis if it started one).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
RUN="$HOME_DIR/run"
for pidfile in "$RUN"/stream-*.pid; do
  [ -e "$pidfile" ] || continue
  name=$(basename "$pidfile" .pid)
  stop_recorded "$RUN" "$name"
done
stop_recorded "$RUN" redis
