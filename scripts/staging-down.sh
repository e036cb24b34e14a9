#!/usr/bin/env bash
# `make staging-down`: stop what `make staging-up` started and wipe the staging state.
# The S3 endpoint (moto) keeps its objects in memory, so they vanish when it stops; PostgreSQL's rows
# (MLflow runs, registered versions, studies, flow runs) would then point at missing artifacts, so the
# cluster goes too, and the next `make staging-up` starts consistent. KEEP_STAGING_DATA=1 keeps them.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
STAGING="${FLYWHEEL_STAGING_DIR:-$HOME_DIR/staging}"
RUN="$STAGING/run"
export FLYWHEEL_HOME="$HOME_DIR"
[ -d "$STAGING" ] || { echo "nothing to stop: $STAGING does not exist"; exit 0; }
if [ -f "$STAGING/credentials.env" ]; then set -a; . "$STAGING/credentials.env"; set +a; fi
stop_recorded "$RUN" worker  # first: a flow run of its could start a service after they were stopped
.venv/bin/flywheel service stop --stack staging --all 2>/dev/null || true
for name in prefect-server mlflow s3 redis prometheus; do stop_recorded "$RUN" "$name"; done
PG_CTL=$(find /usr/lib/postgresql -maxdepth 3 -name pg_ctl -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1)
if [ -n "$PG_CTL" ] && [ -f "$STAGING/pgdata/PG_VERSION" ]; then
  as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if as_pg "$PG_CTL" -D "$STAGING/pgdata" status > /dev/null 2>&1; then
    as_pg "$PG_CTL" -D "$STAGING/pgdata" -m fast -w stop > /dev/null && echo "stopped PostgreSQL"
  fi
fi
if [ "${KEEP_STAGING_DATA:-0}" != 1 ]; then
  rm -rf "$STAGING"
  echo "wiped $STAGING"
fi
