#!/usr/bin/env bash
# The capacity plan's measurements (docs/operations.md, "Capacity plan"): CPU
# seconds per 1,000 events of the gateway, the worker, RabbitMQ and Redis, from
# one open-loop run with the worker delivering. RabbitMQ and Redis are private
# instances of this script's own (ports 16990 and 23990), so their CPU time is
# Sluice's alone even on a machine whose shared brokers are busy. Release
# binaries; about 1 minute. RATE and DURATION override the load.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rate=${RATE:-2000}
duration=${DURATION:-20s}
amqp_port=16990
redis_port=23990
node=sluice-capacity@localhost

cargo build --release --bins >/dev/null 2>&1
dir=$(mktemp -d)
pids=()
# shellcheck source=scripts/private-brokers.sh
. scripts/private-brokers.sh
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  private_brokers_stop
  [[ -n ${KEEP:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT
# Sets $beam and $redis, the pids sampled below, and the brokers' URLs.
private_brokers_start "$dir" "$node" "$amqp_port" "$redis_port"

prefix=capacity-$(date +%s)
export SLUICE_BENCH_SECRET=bench-only-secret SLUICE_BENCH_WA_SECRET=bench-only-wa-secret \
  SLUICE_BENCH_WA_VERIFY=bench-only-verify SLUICE_BENCH_ROUTE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
sed "s/@PREFIX@/$prefix/" scripts/bench.toml >"$dir/sluice.toml"
export SLUICE_CONFIG=$dir/sluice.toml

target/release/sluice-load receive --listen 127.0.0.1:18999 --idle 5s --bursts 1 >"$dir/receive.txt" &
pids+=($!)
target/release/sluice-gateway >"$dir/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
target/release/sluice-worker >"$dir/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:19180/readyz >/dev/null 2>&1 \
    && curl -fsS http://127.0.0.1:19181/readyz >/dev/null 2>&1 && break
  sleep 0.2
done

echo "## $(nproc) cores; gateway, worker, receiver, private RabbitMQ and Redis on this machine"
echo "### open loop at $rate req/s for $duration, one event per request, worker delivering"
target/release/sluice-load --pid "gateway=$gateway" --pid "worker=$worker" \
  --pid "rabbitmq=$beam" --pid "redis=$redis" \
  open --rate "$rate" --duration "$duration" --label "open, $rate req/s, all four measured"
# The worker's share counts only if it kept up: the receiver's row says what
# it delivered, and when.
for _ in $(seq 1 120); do grep -q "worker 1" "$dir/receive.txt" 2>/dev/null && break; sleep 0.5; done
cat "$dir/receive.txt"
