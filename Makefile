# Forecourt's build and test entry points. `make test` is the README's test command and
# what CI runs (.ci/run): on a fresh Debian/Ubuntu machine with Rust and Python 3 it does
# every set-up step itself.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Every wasm workspace builds here, whatever CARGO_TARGET_DIR says (the tests look here).
WASM_TARGET_DIR := $(CURDIR)/target/wasm
WASM_BUILD := $(CARGO) build --release --target wasm32-wasip2 --target-dir $(WASM_TARGET_DIR)
PLUGINS := plugins/Cargo.toml
FIXTURES := runtime/tests/fixtures/plugins/Cargo.toml

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install what the build needs: the wasm target (rustup's auto-install is off here) and ONNX Runtime.
	rustup target add wasm32-wasip2
	scripts/fetch-onnxruntime.sh

.PHONY: plugins
plugins: setup ## Build the example plugins and the test fixtures for wasm32-wasip2.
	$(WASM_BUILD) --manifest-path $(PLUGINS)
	$(WASM_BUILD) --manifest-path $(FIXTURES)

.PHONY: build
build: setup ## Build the appliance (release).
	$(CARGO) build --release -p forecourt-cli

EXAMPLES := car-price housing iris
FORECOURT := $(CARGO) run --release -q -p forecourt-cli --

.PHONY: bundles
bundles: build plugins ## Assemble the example bundles into bundles/.
	for plugin in $(EXAMPLES); do $(FORECOURT) bundle build plugins/$$plugin --out bundles --target-dir $(WASM_TARGET_DIR); done

.PHONY: run
run: bundles ## Build everything and serve the example bundles on 127.0.0.1:8080, gRPC on 8081 (data in ./data).
	FORECOURT_GRPC__LISTEN=127.0.0.1:8081 $(FORECOURT) serve

.PHONY: load
load: bundles ## Load benchmark: /health, /v1 durable and relaxed, /v2 JSON and binary, gRPC, batch; req/s, p50, p99, CPU, RSS, disk.
	bench/suite.sh

# The browser libraries the pages are built with, committed under runtime/assets/web/vendor
# with their licences: fetched from the npm registry, each tarball's sha256 pinned here.
UPLOT := uplot 1.6.32 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d

.PHONY: vendor
vendor: ## Fetch the pages' vendored libraries again (uPlot) from npm, checking the pinned sha256.
	rm -rf runtime/assets/web/vendor/uplot
	scripts/fetch-npm.sh $(UPLOT) runtime/assets/web/vendor/uplot dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE

.PHONY: lint
lint: setup ## rustfmt and clippy, warnings as errors, on every workspace.
	$(CARGO) fmt --all --check
	$(CARGO) fmt --all --check --manifest-path $(PLUGINS)
	$(CARGO) fmt --all --check --manifest-path $(FIXTURES)
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings
	$(CARGO) clippy --workspace --all-targets --manifest-path $(PLUGINS) -- -D warnings
	$(CARGO) clippy --workspace --target wasm32-wasip2 --target-dir $(WASM_TARGET_DIR) --manifest-path $(FIXTURES) -- -D warnings

.PHONY: test
test: setup plugins lint packer-validate ## Everything CI checks: set-up, lint, unit, integration and end-to-end tests.
	$(CARGO) test --workspace --release
	$(CARGO) test --workspace --manifest-path $(PLUGINS)

# Fuzzing is not part of `make test`: it runs for a fixed time, not to a verdict.
FUZZ_SECONDS ?= 120
FUZZ_TARGETS ?= v1_request v2_tensors bundle_manifest bundle_archive fleet_message

.PHONY: fuzz
fuzz: ## Fuzz the parsers of outside input, FUZZ_SECONDS (120) per target of FUZZ_TARGETS (all five).
	CARGO="$(CARGO)" FUZZ_SECONDS="$(FUZZ_SECONDS)" FUZZ_TARGETS="$(FUZZ_TARGETS)" scripts/fuzz.sh

.PHONY: packer-validate
packer-validate: ## packer validate and fmt -check on the image template (Packer from apt if missing).
	packer/validate.sh

.PHONY: image
image: bundles ## Build the local appliance image (Debian bookworm, ext4) into target/image/.
	firmware-images/build-image.sh

.PHONY: image-test
image-test: image ## Build the local image, boot it under QEMU (TCG) and check it serves (3 min from scratch, 1 min again).
	firmware-images/boot-test.sh

.PHONY: image-packer
image-packer: bundles ## The same image through Packer's qemu source (the AMI's provisioning), booted and checked (about 2.5 min).
	firmware-images/packer-qemu.sh

.PHONY: bench
bench: plugins ## Criterion benchmarks (release).
	$(CARGO) bench -p forecourt
