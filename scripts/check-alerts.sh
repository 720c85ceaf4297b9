#!/usr/bin/env bash
# Checks Sluice's Prometheus files with promtool: the alert rules parse
# (`promtool check rules`), their unit tests pass (`promtool test rules`) and
# the scrape config is valid (`promtool check config`). Run by
# scripts/test.sh before the cargo tests, which also use promtool
# (`promtool check metrics` on both binaries' /metrics pages).
#
# promtool comes from Debian's `prometheus` package, installed here only when
# missing. The package would start a Prometheus server on :9090; a
# policy-rc.d keeps apt from starting it, and a server the install started
# anyway is stopped again. Nothing stays bound to :9090. Where promtool
# cannot be installed (no apt, no root or sudo) the checks are skipped with
# a message saying so, not failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

say() { printf 'check-alerts: %s\n' "$*"; }

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi

POLICY_RC_ADDED=""
cleanup() {
  if [[ -n $POLICY_RC_ADDED ]]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# Installs Debian's prometheus package (for promtool); false when it cannot.
install_promtool() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [[ $(id -u) -eq 0 || ${#SUDO[@]} -gt 0 ]] || return 1
  local running_before=""
  pgrep -x prometheus >/dev/null 2>&1 && running_before=1
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null || return 1
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=1
  fi
  say "installing promtool: apt-get install prometheus"
  local log
  log=$(mktemp -t sluice-promtool-apt.XXXXXX)
  if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus >"$log" 2>&1; then
    "${SUDO[@]}" apt-get update -q >"$log" 2>&1 || true
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus >"$log" 2>&1 \
      || { tail -n 20 "$log" >&2; rm -f "$log"; return 1; }
  fi
  rm -f "$log"
  # Only a server this install started is ours to stop.
  if [[ -z $running_before ]] && pgrep -x prometheus >/dev/null 2>&1; then
    say "stopping the Prometheus server the package started"
    "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 \
      || "${SUDO[@]}" service prometheus stop >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null 2>&1
}

if ! command -v promtool >/dev/null 2>&1 && ! install_promtool; then
  say "SKIPPED: promtool is not installed and could not be (apt-get install prometheus needs apt and root or sudo); alert rules and their tests were not checked"
  exit 0
fi

say "$(promtool --version 2>&1 | head -n 1)"
promtool check rules deploy/prometheus/*.rules.yml
promtool test rules deploy/prometheus/tests/*.test.yml
promtool check config --syntax-only deploy/prometheus/prometheus.yml
say "alert rules, their unit tests and the scrape config pass"
