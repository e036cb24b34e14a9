#!/usr/bin/env bash
# `make up`: the local stack for scheduled use. A Prefect server on SQLite under .flywheel/, the stack's
# work pool and variables, the deployments of prefect.yaml (four per problem), a process worker, a
# Prometheus scraping the services with the SLO rules, and the prediction service of each problem that has
# a champion (its `deployment/PROBLEM` deployment). `make down` stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
PORT="${PREFECT_PORT:-4200}"
RUN="$HOME_DIR/run"
LOGS="$HOME_DIR/logs"
mkdir -p "$RUN" "$LOGS" "$HOME_DIR/prefect"
export FLYWHEEL_HOME="$HOME_DIR" PREFECT_HOME="$HOME_DIR/prefect" PREFECT_CLI_PROMPT=false
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true WHYLOGS_NO_ANALYTICS=True
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
BIN="$PWD/.venv/bin"

. scripts/lib.sh

start prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT"
for _ in $(seq 1 120); do curl -sf "$PREFECT_API_URL/health" > /dev/null && break; sleep 1; done
curl -sf "$PREFECT_API_URL/health" > /dev/null || { echo "Prefect server did not start: see $LOGS/prefect-server.log"; exit 1; }
"$BIN/flywheel" stack provision local
"$BIN/prefect" --no-prompt deploy --all > "$LOGS/deploy.log" 2>&1 || { cat "$LOGS/deploy.log"; exit 1; }
PROBLEMS=$(cd flows/problems && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')
echo "deployed training/P, monitoring/P, batch-inference/P, deployment/P for P in: $PROBLEMS(see $LOGS/deploy.log)"
start worker "$BIN/prefect" worker start --pool flywheel-local --type process
# Prometheus (Debian's package, installed when missing) scraping every service the deployer records, with
# the rules made from the stack's SLOs; the deployment flow rewrites its targets as services start
PROM_CFG=$("$BIN/flywheel" metrics config --stack local)
PROM_PORT=$("$BIN/python" -c "from stacks.loader import load_stack; print(load_stack('local').metrics.configuration.port)")
PROMETHEUS=$(bash scripts/apt-install.sh prometheus prometheus)
mkdir -p "$HOME_DIR/prometheus/data"
start prometheus "$PROMETHEUS" --config.file="$PROM_CFG" --storage.tsdb.path="$HOME_DIR/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=30d
# the problems whose model has a champion: their service deployment runs now, the others' on promotion
CHAMPIONS=$("$BIN/flywheel" problem list --with-champion --stack local | tr '\n' ' ')
for problem in $CHAMPIONS; do
  "$BIN/prefect" deployment run "deployment/$problem" > /dev/null && echo "service deployment run requested: deployment/$problem"
done
if [ -z "$CHAMPIONS" ]; then
  echo "no champion yet: run 'make run' first; a problem's service deploys itself when training promotes one"
fi
cat <<MSG

Prefect UI:  http://127.0.0.1:$PORT        (runs, deployments, automations, artifacts)
MLflow UI:   $BIN/mlflow ui --backend-store-uri sqlite:///$HOME_DIR/mlflow.db --port 5000
Service:     http://127.0.0.1:8080/docs    (once the service deployment has run)
Prometheus:  http://127.0.0.1:$PROM_PORT          (SLO rules and alerts; .venv/bin/flywheel metrics status)
Stop:        make down
MSG
