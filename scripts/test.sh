#!/usr/bin/env bash
# The test command: everything CI checks, in the order that fails fastest.
# Needs real Redis and RabbitMQ on loopback (the integration tests talk to
# them), so it first makes sure they are installed and running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export RUST_BACKTRACE=1
# Colour codes only clutter CI logs.
if [[ ${CI:-} == true ]]; then export CARGO_TERM_COLOR=never; fi

step() { printf '\n==> %s\n' "$*"; }

step "services (scripts/deps.sh)"
bash scripts/deps.sh

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Before the tests: they run `promtool check metrics`, which this installs.
step "alert rules and their unit tests (scripts/check-alerts.sh)"
bash scripts/check-alerts.sh

# cargo test rather than nextest: it is always there and its summary lines are
# what CI reads.
step "cargo test --workspace"
cargo test --workspace

step "deploy files (scripts/check-deploy.sh)"
bash scripts/check-deploy.sh

printf '\nall checks passed\n'
