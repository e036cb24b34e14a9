#!/usr/bin/env bash
# `make staging-up`: the staging stack's services on this machine, each a real server on loopback.
#   PostgreSQL (Debian's package)  backend of the MLflow server, Optuna's studies and the Prefect server
#   moto's S3 server               the S3-compatible endpoint (no MinIO package exists here); the artifact
#                                  store and MLflow reach it only through s3fs/boto3 with an endpoint URL
#   mlflow server                  tracking + registry on PostgreSQL, artifacts proxied to s3://.../mlflow
#   prefect server                 on PostgreSQL, with the stack's process work pool, deployments and a worker
#   redis-server (Debian's)        the streams of `flywheel stream serve`, password-protected
#   prometheus (Debian's)          scrapes the services with the SLO rules (flywheel metrics config)
# Credentials are generated once into $STAGING/credentials.env (mode 600) unless the environment already
# sets them, and reach the flows only through the stack's secret references (environment variables, or
# the Prefect Secret blocks created here). `make staging-down` stops everything and wipes the state.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HOME_DIR="${FLYWHEEL_HOME:-$ROOT/.flywheel}"
STAGING="${FLYWHEEL_STAGING_DIR:-$HOME_DIR/staging}"
RUN="$STAGING/run"
LOGS="$STAGING/logs"
BIN="$ROOT/.venv/bin"
# the ports stacks/staging.yaml names
PG_PORT=5433 S3_PORT=5055 MLFLOW_PORT=5010 PREFECT_PORT=4210 REDIS_PORT=6390 PROM_PORT=9091
BUCKET=flywheel-staging
mkdir -p "$RUN" "$LOGS"
# private, but traversable when root must hand PostgreSQL's folders to the `postgres` user
if [ "$(id -u)" -eq 0 ]; then chmod 711 "$STAGING"; else chmod 700 "$STAGING"; fi
export FLYWHEEL_HOME="$HOME_DIR" PREFECT_CLI_PROMPT=false PREFECT_SERVER_ANALYTICS_ENABLED=false
export MLFLOW_DISABLE_TELEMETRY=true WHYLOGS_NO_ANALYTICS=True NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
step() { printf '[%5.1fs] %s\n' "$(($(date +%s%N) / 1000000 - T0))e-3" "$*"; }
T0=$(($(date +%s%N) / 1000000))

# ---------------------------------------------------------------- credentials (never in YAML)
CREDS="$STAGING/credentials.env"
if [ ! -f "$CREDS" ]; then
  pw=${POSTGRES_PASSWORD:-$("$BIN/python" -c "import secrets; print(secrets.token_hex(16))")}
  (umask 077; cat > "$CREDS" <<EOF
# Written by make staging-up. Private: load with  set -a; . $CREDS; set +a
POSTGRES_PASSWORD=$pw
OPTUNA_DB_URL=postgresql://flywheel:$pw@127.0.0.1:$PG_PORT/optuna
S3_ACCESS_KEY=${S3_ACCESS_KEY:-AKIA$("$BIN/python" -c "import secrets; print(secrets.token_hex(8).upper())")}
S3_SECRET_KEY=${S3_SECRET_KEY:-$("$BIN/python" -c "import secrets; print(secrets.token_urlsafe(30))")}
EOF
  )
fi
load_creds() { set -a; . "$CREDS"; set +a; }
load_creds
# the prediction store's database (stacks/staging.yaml's {{predictions.db_url}}), added to older files too
if [ -z "${PREDICTIONS_DB_URL:-}" ]; then
  (umask 077; echo "PREDICTIONS_DB_URL=postgresql://flywheel:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/predictions" >> "$CREDS")
  load_creds
fi

# the stream's Redis (stacks/staging.yaml's {{redis.url}}), added to older files too
if [ -z "${REDIS_PASSWORD:-}" ]; then
  rpw=$("$BIN/python" -c "import secrets; print(secrets.token_hex(16))")
  (umask 077; printf 'REDIS_PASSWORD=%s\nREDIS_URL=redis://:%s@127.0.0.1:%s/0\n' "$rpw" "$rpw" "$REDIS_PORT" >> "$CREDS")
  load_creds
fi

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
start() {  # name, command...: detached in its own process group, logging to $LOGS
  local name=$1; shift
  if alive "$name"; then step "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  step "started $name (pid $!, log $LOGS/$name.log)"
}
wait_http() {  # name, url, seconds
  for _ in $(seq 1 "$3"); do curl -sf -o /dev/null "$2" && return 0; alive "$1" || break; sleep 1; done
  echo "$1 did not come up at $2; its log ($LOGS/$1.log) ends with:" >&2
  tail -n 30 "$LOGS/$1.log" >&2
  exit 1
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin() { find /usr/lib/postgresql -maxdepth 3 -name pg_ctl -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname; }
PG_BIN=$(pg_bin)
if [ -z "$PG_BIN" ]; then
  step "installing PostgreSQL from Debian's packages"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql > "$LOGS/apt.log"
  PG_BIN=$(pg_bin)
fi
PGDATA="$STAGING/pgdata"
PGSOCK="$STAGING/pgsock"
# initdb and postgres refuse to run as root: run them as Debian's `postgres` user then
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" "$PGSOCK"
  pwfile="$STAGING/.pgpass.tmp"
  (umask 077; printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile")
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA" "$PGSOCK" "$pwfile"
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U flywheel --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 > "$LOGS/initdb.log"
  rm -f "$pwfile"
  step "initialised a PostgreSQL cluster in $PGDATA"
fi
if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status > /dev/null 2>&1; then
  step "PostgreSQL already running on 127.0.0.1:$PG_PORT"
else
  touch "$LOGS/postgres.log"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$LOGS/postgres.log"
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1" start > /dev/null
  step "started PostgreSQL on 127.0.0.1:$PG_PORT"
fi
for db in mlflow optuna prefect predictions; do
  exists=$(as_pg psql -h "$PGSOCK" -p "$PG_PORT" -U flywheel -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$db'")
  [ "$exists" = 1 ] || as_pg psql -h "$PGSOCK" -p "$PG_PORT" -U flywheel -d postgres -qc "CREATE DATABASE $db"
done

# ---------------------------------------------------------------- Redis (the streams)
REDIS_SERVER=$(bash scripts/apt-install.sh redis-server redis-server)
mkdir -p "$STAGING/redis"
# the password in a private config file, not on the command line (ps shows that)
(umask 077; printf 'port %s\nbind 127.0.0.1\ndir %s\nsave ""\nappendonly no\nrequirepass %s\n' \
  "$REDIS_PORT" "$STAGING/redis" "$REDIS_PASSWORD" > "$STAGING/redis/redis.conf")
start redis "$REDIS_SERVER" "$STAGING/redis/redis.conf"
for _ in $(seq 1 60); do (echo > "/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.5; done
step "Redis ready on 127.0.0.1:$REDIS_PORT (password in $CREDS)"

# ---------------------------------------------------------------- S3 endpoint (moto)
# Signature checks stay off: with moto's IAM mode on, GETs through presigned URLs fail (moto reads only the
# Authorization header), and an MLflow 3 server with S3 behind it hands clients presigned download URLs.
# The keys are still required and sent exactly as to AWS; AWS or MinIO would also verify them.
start s3 "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT"
for _ in $(seq 1 60); do (echo > "/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && break; sleep 0.5; done
"$BIN/python" - <<EOF
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:$S3_PORT", region_name="us-east-1",
                  aws_access_key_id="$S3_ACCESS_KEY", aws_secret_access_key="$S3_SECRET_KEY")
if "$BUCKET" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="$BUCKET")
EOF
step "bucket s3://$BUCKET ready on http://127.0.0.1:$S3_PORT"

# ---------------------------------------------------------------- MLflow server
# the backend URL (with its password) goes through the environment, not the command line (ps shows that)
MLFLOW_BACKEND_STORE_URI="postgresql://flywheel:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/mlflow" \
  MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
  AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
  start mlflow "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 \
  --serve-artifacts --artifacts-destination "s3://$BUCKET/mlflow"

# ---------------------------------------------------------------- Prefect server (PostgreSQL)
export PREFECT_HOME="$STAGING/prefect"
mkdir -p "$PREFECT_HOME"
PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://flywheel:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/prefect" \
  start prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
wait_http mlflow "http://127.0.0.1:$MLFLOW_PORT/health" 180
step "MLflow server ready on http://127.0.0.1:$MLFLOW_PORT (backend PostgreSQL, artifacts s3://$BUCKET/mlflow)"
wait_http prefect-server "$PREFECT_API_URL/health" 180
step "Prefect server ready on $PREFECT_API_URL (backend PostgreSQL)"

# ---------------------------------------------------------------- work pool, secrets, deployments, worker
"$BIN/flywheel" stack provision staging
# Secret blocks let a plain shell (or a worker started elsewhere) resolve the stack's references too
"$BIN/python" - <<'EOF'
import os
from prefect.blocks.system import Secret
for block, var in {"s3-access-key": "S3_ACCESS_KEY", "s3-secret-key": "S3_SECRET_KEY",
                   "optuna-db-url": "OPTUNA_DB_URL", "predictions-db-url": "PREDICTIONS_DB_URL",
                   "redis-url": "REDIS_URL"}.items():
    Secret(value=os.environ[var]).save(block, overwrite=True)
EOF
step "Prefect Secret blocks s3-access-key, s3-secret-key, optuna-db-url, predictions-db-url, redis-url saved"
if [ "${FLYWHEEL_STAGING_DEPLOY:-1}" = 1 ]; then
  "$BIN/prefect" --no-prompt deploy --all > "$LOGS/deploy.log" 2>&1 || { cat "$LOGS/deploy.log"; exit 1; }
  step "deployed training/P, monitoring/P, batch-inference/P, deployment/P per problem P (see $LOGS/deploy.log)"
fi
start worker "$BIN/prefect" worker start --pool staging-process --type process
PROM_CFG=$("$BIN/flywheel" metrics config --stack staging)
PROMETHEUS=$(bash scripts/apt-install.sh prometheus prometheus)
mkdir -p "$STAGING/prometheus-data"
start prometheus "$PROMETHEUS" --config.file="$PROM_CFG" --storage.tsdb.path="$STAGING/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT"
wait_http prometheus "http://127.0.0.1:$PROM_PORT/-/ready" 60
step "Prometheus ready on http://127.0.0.1:$PROM_PORT (rules from the stack's SLOs)"
"$BIN/flywheel" stack check staging

cat <<MSG

Staging is up (state in $STAGING):
  Prefect UI:  http://127.0.0.1:$PREFECT_PORT
  MLflow UI:   http://127.0.0.1:$MLFLOW_PORT
  S3 endpoint: http://127.0.0.1:$S3_PORT  (bucket $BUCKET)
  PostgreSQL:  127.0.0.1:$PG_PORT, user flywheel, databases mlflow, optuna, prefect, predictions
  Redis:       127.0.0.1:$REDIS_PORT (streams: flywheel stream serve --stack staging --problem P)
  Prometheus:  http://127.0.0.1:$PROM_PORT (flywheel metrics status --stack staging)
Use it:        set -a; . $CREDS; set +a
               FLYWHEEL_STACK=staging make run
Stop and wipe: make staging-down
MSG
