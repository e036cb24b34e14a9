#!/usr/bin/env bash
# `make down`: stop what `make up` started (service, worker, Prefect server, Prometheus), each by process group.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
RUN="$HOME_DIR/run"
export FLYWHEEL_HOME="$HOME_DIR"
.venv/bin/flywheel service stop --stack local --all 2>/dev/null || true
for name in worker prefect-server prometheus; do stop_recorded "$RUN" "$name"; done
