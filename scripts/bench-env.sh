# shellcheck shell=bash
# What scripts/bench.sh and scripts/soak.sh share, sourced with the run's name
# in $run_name: Redis and RabbitMQ up, release binaries built, a config with a
# queue prefix of the run's own (scripts/bench.toml), and a cleanup that stops
# every process in $pids and deletes the run's queues, exchanges and dedup
# keys. It refuses to start while another process holds one of its ports.

bash scripts/deps.sh
cargo build --release --bins >/dev/null 2>&1

# The gateway's, its admin, the worker's admin and the receiver's ports: a
# process already there (say a gateway left running) would be measured instead.
for port in 18180 19180 19181 18999; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench: 127.0.0.1:$port is taken by another process; stop it first (ss -ltnp | grep $port)" >&2
    exit 1
  fi
done

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
  target/release/sluice-load clean || echo "bench: could not delete the queues and exchanges of $prefix" >&2
  redis-cli --scan --pattern "$prefix:*" | xargs -r -n 5000 redis-cli unlink >/dev/null 2>&1 || true
}
trap cleanup EXIT

# shellcheck source=scripts/wait-ready.sh
. scripts/wait-ready.sh
