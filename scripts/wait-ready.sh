# shellcheck shell=bash
# wait_ready ADDR PID: waits for the /readyz of the process PID serving its
# admin port at ADDR; fails at once if the process exits first (a bad config,
# a port already taken) instead of waiting out the loop. Sourced by the bench
# scripts; their logs are in $run.
wait_ready() {
  local me
  me=$(basename "$0" .sh)
  for _ in $(seq 1 100); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "$me: the process behind $1 exited; see ${run:?}/*.log (is the port taken?)" >&2
      exit 1
    fi
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$me: $1 did not become ready" >&2
  exit 1
}
