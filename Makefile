# One entry point for the everyday tasks; each target is a thin wrapper so the
# scripts stay the single source of truth (CI runs scripts/test.sh too).
CARGO ?= cargo
CONFIG ?= config/sluice.example.toml

.PHONY: up down test fmt lint build run-gateway run-worker check-deploy deps bench edge-probe fuzz dlq-scale dlq-crash-loop faults cluster ordered

## up: start Redis/RabbitMQ if needed, build, run gateway + worker in the background
up:
	bash scripts/start.sh

## down: stop what `make up` started
down:
	bash scripts/stop.sh

## test: everything CI runs (fmt, clippy, tests, deploy checks)
test:
	bash scripts/test.sh

## fmt: format the workspace
fmt:
	$(CARGO) fmt --all

## lint: the formatting and clippy checks of CI
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## build: release binaries, as the quick start and the images use them
build:
	$(CARGO) build --release --bins

## run-gateway / run-worker: one binary in the foreground with the demo config and secret
run-gateway: deps
	. scripts/demo.env && exec $(CARGO) run --bin sluice-gateway -- --config $(CONFIG)

run-worker: deps
	. scripts/demo.env && exec $(CARGO) run --bin sluice-worker -- --config $(CONFIG)

## check-deploy: validate Dockerfile, compose, Prometheus/Grafana/RabbitMQ files
check-deploy:
	bash scripts/check-deploy.sh

## deps: install and start Redis and RabbitMQ if they are missing
deps:
	bash scripts/deps.sh

## bench: the load-generator suite (scripts/bench.sh, about 2 minutes after the build), then events per core of gateway and worker A/B against the previous commit (scripts/bench-cores.sh, about 3 minutes, plus once per base commit its release build; BENCH_BASE=<commit>, or none to skip the A/B), which rewrites the headline table of docs/benchmarks.md, then the Criterion micro-benchmarks
bench:
	bash scripts/bench.sh
	bash scripts/bench-cores.sh --docs
	$(CARGO) bench -p sluice-gateway --bench hot_paths

## edge-probe: the release gateway against hostile clients (scripts/edge-probe.sh, about a minute; docs/security.md)
edge-probe:
	bash scripts/edge-probe.sh

## fuzz: the parsers' property tests over arbitrary input (signature headers, extractors, config), 1,000,000 cases each (docs/security.md)
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-1000000} $(CARGO) test --release -p sluice-gateway -p sluice-shared --lib fuzz_ -- --nocapture

## dlq-scale: 100,000 dead events against the local RabbitMQ: stats, peek, a filtered export and a full replay, each checked whole and timed (release build, about 2 minutes; docs/benchmarks.md)
dlq-scale: deps
	$(CARGO) test --release -p sluice-worker --test e2e dlq::scale::a_hundred -- --ignored --nocapture

## dlq-crash-loop: the SIGKILL-half-way replay test RUNS times in a row (default 30), stopping at the first failure
dlq-crash-loop: deps
	$(CARGO) test -p sluice-worker --test e2e --no-run
	for i in $$(seq 1 $${RUNS:-30}); do \
	  echo "run $$i"; \
	  $(CARGO) test -q -p sluice-worker --test e2e dlq::crash -- --nocapture || exit 1; \
	done

## faults: every fault scenario under load, the long ones included (a 30 s RabbitMQ cut-off, a restart, a 5-minute outage soak), one at a time so the figures are the gateway's own (about 10 minutes; docs/reliability.md)
faults: deps
	$(CARGO) test -p sluice-worker --test e2e faults::under_load -- --include-ignored --nocapture --test-threads 1

## cluster: the cluster tests (release build, as production runs): a three-node RabbitMQ cluster losing the node both gateways are on and that leads the queues, Redis Sentinel losing its primary, a Redis Cluster losing a primary to its replica and taking 1,000-event batches, all from private nodes on loopback (about 5 minutes; figures in docs/reliability.md)
cluster: deps
	$(CARGO) test --release -p sluice-worker --test e2e cluster:: -- --ignored --test-threads 1 --nocapture

## ordered: an ordered route's per-key order over 10,000 interleaved events of 200 keys, a receiver failing 30 % of attempts and two workers, the first stopped a third of the way (release build, about a minute; docs/reliability.md)
ordered: deps
	$(CARGO) test --release -p sluice-worker --test e2e ordered::ten_thousand -- --ignored --nocapture
