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

step "the repository stands alone (scripts/check-standalone.sh)"
bash scripts/check-standalone.sh

# Licences, bans and sources of every dependency, against deny.toml (see
# docs/supply-chain.md; advisories are not checked: no advisory database can be
# fetched here). cargo-deny is pinned and installed when missing or another
# version: about 3 to 3.5 minutes of compiling on the 2-core machine, once.
CARGO_DENY_VERSION=0.20.2
step "cargo deny check licenses bans sources (cargo-deny $CARGO_DENY_VERSION)"
if [[ $(cargo deny --version 2>/dev/null || true) != "cargo-deny $CARGO_DENY_VERSION" ]]; then
  cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
fi
cargo deny check licenses bans sources

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
