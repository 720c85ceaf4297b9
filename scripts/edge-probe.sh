#!/usr/bin/env bash
# `make edge-probe`: the release gateway, with its default limits, against the
# hostile clients of scripts/edge-probe.py (docs/security.md, "Measured
# against hostile clients"). About a minute after the build; loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_name=edge
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh

# 2,000 slow bodies plus probes need more descriptors than a shell's default.
ulimit -n "$(ulimit -Hn)"
target/release/sluice-gateway >"$run/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
wait_ready 127.0.0.1:19180 "$gateway"
python3 scripts/edge-probe.py 127.0.0.1:18180 "$gateway" "$SLUICE_BENCH_SECRET" ${EDGE_STEPS:+"$EDGE_STEPS"}
echo
echo "shed and closed, from /metrics:"
curl -fsS http://127.0.0.1:19180/metrics | grep -E '^sluice_gateway_(shed_total|connections_closed_total|requests_total\{.*(overloaded|timeout|invalid_signature)")' | grep -v ' 0$' || true
