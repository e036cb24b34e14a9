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

# alive NAME / start NAME COMMAND...: whether RUN/NAME.pid names a live process; start COMMAND detached in
# its own process group, its output in LOGS/NAME.log, its pid in RUN/NAME.pid (RUN and LOGS set by the caller)
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
start() {
  local name=$1; shift
  if alive "$name"; then echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  echo "started $name (pid $!, log $LOGS/$name.log)"
}
