# Shared by the up/down scripts: processes started detached in their own process group, recorded by pid.

# stop_recorded RUN_DIR NAME: SIGTERM the group recorded in RUN_DIR/NAME.pid, SIGKILL it after 10 s.
stop_recorded() {
  local pidfile="$1/$2.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $2 (pid $pid)"
  fi
  rm -f "$pidfile"
}
