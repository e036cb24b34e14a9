#!/usr/bin/env bash
# `make down`: stop what `make up` started (worker, services, Prefect server, Prometheus), each by process group.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
RUN="$HOME_DIR/run"
export FLYWHEEL_HOME="$HOME_DIR"
# the worker first: a flow run it is running (a promotion's service deployment) could otherwise start a
# service after the services were stopped, and leave it running
stop_recorded "$RUN" worker
.venv/bin/flywheel service stop --stack local --all 2>/dev/null || true
for name in prefect-server prometheus; do stop_recorded "$RUN" "$name"; done
