#!/usr/bin/env bash
# Stops the gateway and worker that scripts/start.sh left running: SIGTERM,
# then waits for them to drain (the worker finishes in-flight deliveries
# within worker.shutdown_grace, 30 s by default) and removes the pid files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly RUN_DIR=.run
# A little over the worker's default shutdown_grace, so a normal drain is never cut short.
readonly STOP_TIMEOUT=40

# Prints the pid recorded for a binary if that process is still alive and is
# still that binary (a recycled pid must never be signalled).
live_pid() {
  local name=$1 file="$RUN_DIR/$1.pid" pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "sluice-$name" || return 1
  printf '%s\n' "$pid"
}

declare -A pids=()
for name in gateway worker; do
  if pid=$(live_pid "$name"); then
    kill -TERM "$pid"
    pids[$name]=$pid
  fi
done

deadline=$((SECONDS + STOP_TIMEOUT))
for name in "${!pids[@]}"; do
  pid=${pids[$name]}
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      # The worker acks only after a message's next home confirms it, so a
      # SIGKILL means a redelivery, never a loss.
      echo "stop: sluice-$name (pid $pid) still running after ${STOP_TIMEOUT} s: sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  echo "stopped sluice-$name (pid $pid)"
done

rm -f "$RUN_DIR/gateway.pid" "$RUN_DIR/worker.pid"
