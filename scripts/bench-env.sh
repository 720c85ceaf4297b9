# shellcheck shell=bash
# What scripts/bench.sh and scripts/soak.sh share, sourced with the run's name
# in $run_name: Redis and RabbitMQ up, release binaries built, a config with a
# queue prefix of the run's own (scripts/bench.toml), and a cleanup that stops
# every process in $pids and deletes the run's queues and dedup keys.

bash scripts/deps.sh
cargo build --release --bins >/dev/null 2>&1

run=.run/${run_name:?set run_name before sourcing bench-env.sh}
mkdir -p "$run"
prefix="$run_name-$(date +%s)"
export SLUICE_BENCH_SECRET=bench-only-secret SLUICE_BENCH_WA_SECRET=bench-only-wa-secret \
  SLUICE_BENCH_WA_VERIFY=bench-only-verify SLUICE_BENCH_ROUTE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
sed "s/@PREFIX@/$prefix/" scripts/bench.toml >"$run/sluice.toml"
export SLUICE_CONFIG=$run/sluice.toml

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for q in work dead retry.1s retry.5s retry.25s retry.2m retry.10m retry.1h; do
    rabbitmqctl delete_queue "$prefix.$q" -q >/dev/null 2>&1 || true
  done
  redis-cli --scan --pattern "$prefix:*" | xargs -r -n 5000 redis-cli unlink >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Waits for $2's /readyz at $1; fails if process $2 exits first (a port
# already taken by another gateway would otherwise be measured instead).
wait_ready() {
  for _ in $(seq 1 100); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "bench: the process behind $1 exited; see $run/*.log (is the port taken?)" >&2
      exit 1
    fi
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "bench: $1 did not become ready" >&2
  exit 1
}
