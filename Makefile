# Shoal — the commands a newcomer needs.
#   make run    start Shoal on this machine and show it working
#   make test   run the whole test suite (real etcd, real Docker containers)
#   make chaos  30 minutes of faults across hosts in network namespaces (root; see RELIABILITY.md)
# Both install what is missing first (Debian packages: protobuf-compiler, etcd-server,
# busybox-static, wget for the resolver test image, and chromium with chromium-driver for the dashboard's browser tests) and
# build the local test image (no registry is needed).

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := protobuf-compiler etcd-server busybox-static
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build release run test lint fmt bench bench-full chaos image clean hot-functions

all: build

## deps: install the Debian packages Shoal's build and tests need, when absent
deps:
	@missing=""; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	[ -x /usr/bin/wget ] || missing="$$missing wget"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || missing="$$missing busybox-static"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "deps: protoc, etcd, ip, iptables, wget, busybox-static, chromium and chromedriver are present"; fi

-include mk/image.mk

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release --bin shoal

## run: build Shoal and start it with an example service (see README)
run: deps image release
	./scripts/run-demo.sh

## test: the whole suite, with a real etcd and real Docker containers (each test binary is killed,
## and fails the suite, if it outlasts SHOAL_TEST_BINARY_TIMEOUT seconds: scripts/test-timeout.sh)
TEST_RUNNER = --config "target.'cfg(all())'.runner='$(CURDIR)/scripts/test-timeout.sh'"
test: deps image resolver-image
	mkdir -p target
	$(CARGO) test --workspace --no-fail-fast $(TEST_RUNNER) 2>&1 | tee target/test-output.txt; \
	status=$${PIPESTATUS[0]}; \
	./scripts/test-summary.sh target/test-output.txt; \
	exit $$status

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: deps
	$(CARGO) build --release --bin shoal --bin shoal-bench --bin shoal-proxy-bench --bin shoal-ui-bench --bin shoal-agent-memory-bench --bin shoal-decide-bench
	target/release/shoal-bench --quick
	target/release/shoal-proxy-bench
	target/release/shoal-ui-bench
	target/release/shoal-agent-memory-bench
	target/release/shoal-decide-bench

bench-full: deps
	$(CARGO) build --release --bin shoal --bin shoal-bench --bin shoal-ui-bench --bin shoal-agent-memory-bench --bin shoal-decide-bench
	target/release/shoal-bench --full
	target/release/shoal-ui-bench
	target/release/shoal-agent-memory-bench
	target/release/shoal-decide-bench

## hot-functions: record which functions a hollow agent and a controller run (callgrind, about
## 4 minutes) into link/hot-functions.txt, which the linker places together (build.rs)
hot-functions: deps
	command -v valgrind >/dev/null || $(SUDO) apt-get install -y valgrind
	$(CARGO) build --release --bin shoal
	scripts/hot-functions.sh target/release/shoal

## chaos: a seeded nemesis over a 3-host cluster in network namespaces for 30 minutes; appends
## one result line to chaos/results/chaos.jsonl (needs root: namespaces and iptables)
CHAOS_SEED ?= 1
CHAOS_DURATION ?= 30m
chaos: deps
	$(CARGO) build -p shoal -p shoal-chaos
	$(SUDO) target/debug/shoal-chaos --seed $(CHAOS_SEED) --duration $(CHAOS_DURATION) \
	  --results chaos/results/chaos.jsonl

clean:
	$(CARGO) clean
