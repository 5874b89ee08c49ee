# Two commands for users: `make demo` and `make test`. Everything they need is installed here,
# into the project (.venv, .tools) or through rustup, apt and pip; nothing by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV := .venv
PYTHON := $(VENV)/bin/python
TOOLS := $(CURDIR)/.tools
# cargo's module exports every callback of the SDK; the module Envoy loads is post-linked from it.
CARGO_MODULE := target/wasm32-wasip1/release/canary_split.wasm
MODULE := target/canary_split.wasm
# 276 KiB: the module is 280,572 bytes. 256 KiB held until the guard (response path, shared data,
# the trip rule) and sticky cookies came in; serde_path_to_error's wrappers around every config
# type are 32 KB of it, and the config's field paths in errors need them. The budget is there to
# catch growth nobody chose.
MODULE_BUDGET_BYTES := 282624
IMAGE_TAG := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# The test runner must match the wasm-bindgen version in Cargo.lock exactly.
WASM_BINDGEN_VERSION = $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/^version = "\(.*\)"/\1/p;}' Cargo.lock)
WASM_TEST_RUNNER := $(TOOLS)/bin/wasm-bindgen-test-runner

.PHONY: build binaryen cli demo demo-kserve demo-rollout demo-guard image test test-rust test-wasm test-python lint setup system-tools rust-targets clean

## build: the filter module (post-linked, see scripts/post_link.py), checked against its size budget
build: rust-targets binaryen
	cargo build --release --target wasm32-wasip1
	python3 scripts/post_link.py $(CARGO_MODULE) $(MODULE)
	@size=$$(stat -c %s $(MODULE)); \
	echo "$(MODULE): $$size bytes (budget $(MODULE_BUDGET_BYTES))"; \
	test $$size -le $(MODULE_BUDGET_BYTES) || { echo "module is over its size budget"; exit 1; }

## demo: Envoy with the filter in front of two local upstreams; shows split, pinning, stickiness
demo: build $(VENV)/.installed
	$(PYTHON) scripts/demo.py

## demo-kserve: the istio/ deployment on two real KServe model servers
demo-kserve: build $(VENV)/.installed $(VENV)/.kserve-installed
	$(PYTHON) scripts/demo_kserve.py

## demo-rollout: canary-split rollout against a real Prometheus: a healthy canary ramped to 100 %,
## a failing one rolled back
demo-rollout: build cli $(VENV)/.installed system-tools
	$(PYTHON) scripts/demo_rollout.py

## demo-guard: the filter's guard with nothing else running: a canary that starts failing is taken
## out of the split within seconds, pinned testers still reach it
demo-guard: build $(VENV)/.installed
	$(PYTHON) scripts/demo_guard.py

## test: every test: native core, the core inside a Wasm engine, real Envoy end to end, a short
## run of every benchmark configuration so the suite cannot rot, and 30 s of the soak
test: lint test-rust test-wasm test-python bench-smoke soak-smoke

## lint: formatting, clippy (natively and for the module), and no build output tracked by git
lint: rust-targets
	@tracked=$$(git ls-files | grep -E '(^|/)target/'); \
	if [ -n "$$tracked" ]; then \
		echo "build outputs are tracked by git (git rm -r --cached them; target/ is ignored):"; \
		echo "$$tracked" | head -5; exit 1; fi
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p canary-split --lib --target wasm32-wasip1 -- -D warnings
	cargo clippy -p canary-split --lib --target wasm32-wasip1 --features crash-trigger -- -D warnings

test-rust:
	cargo test --workspace

test-wasm: rust-targets $(WASM_TEST_RUNNER)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_TEST_RUNNER) \
		cargo test --lib --target wasm32-unknown-unknown

# The manifest checks run the native CLI; the end-to-end tests run the module in Envoy.
test-python: build cli $(VENV)/.installed $(VENV)/.kserve-installed system-tools
	$(PYTHON) -m pytest tests

## cli: the operator tool (check, explain, status, rollout) at target/debug/canary-split
cli:
	cargo build -p canary-split-cli

## image: the module as an OCI image layout (Wasm image "compat" variant) in target/oci/
image: build $(VENV)/.installed
	$(PYTHON) scripts/oci_image.py $(MODULE) target/oci/canary-split $(IMAGE_TAG)

setup: rust-targets $(VENV)/.installed $(WASM_TEST_RUNNER) system-tools

# Debian packages the tests and benchmarks use (root, as on the project's machines); promtool, which
# runs the alerts' unit tests, comes with prometheus, whose server the end-to-end tests run (its
# recommended node exporter is not needed);
# openssl makes the benchmark gateway's throwaway TLS certificate; kubectl (Debian's kubernetes-client)
# renders the Kustomizations.
SYSTEM_TOOLS := skopeo wrk h2load promtool prometheus openssl kubectl
system-tools:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends skopeo wrk nghttp2-client prometheus openssl \
		$$(command -v kubectl >/dev/null || echo kubernetes-client); fi

# wasm-metadce and wasm-opt, for the post-link pass.
binaryen:
	@command -v wasm-metadce >/dev/null && command -v wasm-opt >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends binaryen; }

rust-targets:
	@rustup target list --installed | grep -qx wasm32-wasip1 && \
	 rustup target list --installed | grep -qx wasm32-unknown-unknown || \
	 rustup target add wasm32-wasip1 wasm32-unknown-unknown

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

$(VENV)/.kserve-installed: $(VENV)/.installed tests/requirements-kserve.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt -r tests/requirements-kserve.txt
	touch $@

$(WASM_TEST_RUNNER): Cargo.lock
	cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS) --force
	touch $@

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS)

include bench/bench.mk
