#!/usr/bin/env bash
# `make stream-up`: streaming on the local stack. Debian's redis-server (installed when missing) on the
# stack's stream URL, unless a Redis already answers there, and a `flywheel stream serve` consumer for
# each problem whose model has a champion. State under .flywheel/ (redis/, run/, logs/); `make stream-down`
# stops them. Send records with `flywheel stream send FILE.jsonl --problem P`, watch `flywheel stream status`.
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${FLYWHEEL_HOME:-$PWD/.flywheel}"
RUN="$HOME_DIR/run"
LOGS="$HOME_DIR/logs"
STACK="${FLYWHEEL_STACK:-local}"
BIN="$PWD/.venv/bin"
mkdir -p "$RUN" "$LOGS" "$HOME_DIR/redis"
export FLYWHEEL_HOME="$HOME_DIR" MLFLOW_DISABLE_TELEMETRY=true WHYLOGS_NO_ANALYTICS=True

. scripts/lib.sh

# host and port of the stack's stream (a loopback URL without a password: the local stack's)
read -r HOST PORT < <("$BIN/python" - "$STACK" <<'EOF2'
import sys
from urllib.parse import urlparse
from stacks.loader import load_stack, selected_stack_name
stack = load_stack(selected_stack_name(sys.argv[1]))
if stack.stream is None:
    sys.exit(f"stack {stack.name!r} names no stream component")
url = urlparse(stack.stream_url())
print(url.hostname or "127.0.0.1", url.port or 6379)
EOF2
)
if (echo > "/dev/tcp/$HOST/$PORT") 2>/dev/null; then
  echo "Redis already answers on $HOST:$PORT"
else
  case "$HOST" in 127.0.0.1|localhost) ;; *) echo "no Redis at $HOST:$PORT and it is not this machine" >&2; exit 1;; esac
  REDIS_SERVER=$(bash scripts/apt-install.sh redis-server redis-server)
  start redis "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$HOME_DIR/redis" --appendonly yes
  for _ in $(seq 1 60); do (echo > "/dev/tcp/$HOST/$PORT") 2>/dev/null && break; sleep 0.5; done
fi
CHAMPIONS=$("$BIN/flywheel" problem list --with-champion --stack "$STACK" | tr '\n' ' ')
for problem in $CHAMPIONS; do
  start "stream-$problem" "$BIN/flywheel" stream serve --stack "$STACK" --problem "$problem"
done
if [ -z "$CHAMPIONS" ]; then
  echo "no champion yet: run 'make run' first, then 'make stream-up' again"
fi
cat <<MSG

Send:    $BIN/flywheel stream send records.jsonl --problem PROBLEM   (one JSON record a line)
Status:  $BIN/flywheel stream status --problem PROBLEM
Stop:    make stream-down
MSG
