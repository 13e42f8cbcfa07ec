# The two commands of the README: `make demo` and `make test`.

VENV := tests/.venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test test-aarch64 lint browser-test setup-demo setup-test

# Builds the wasm runtime and serves the demo page (www/, which loads the bundled Shakespeare
# model) on http://127.0.0.1:8080/www/; PORT=... picks another port.
demo: setup-demo
	scripts/build-wasm.sh
	node scripts/serve.mjs

setup-demo:
	scripts/setup.sh demo

setup-test:
	scripts/setup.sh test

target/release/hearth: FORCE
	cargo build --release -p hearth-cli

# Every test: formatting, lints, the Rust suites (GPU ones on whatever adapter exists, lavapipe
# in CI), the CPU kernels' NEON versions under qemu, the quantizer checked by gguf-py, the
# package's types against the openai client's and its JavaScript against its types (which needs
# the wasm glue's), its download cache under Node, and the browser checks in headless Chromium.
test: setup-test
	$(MAKE) lint target/release/hearth $(VENV)/.installed
	cargo test --workspace
	$(MAKE) test-aarch64
	$(PYTHON) tests/check_quantize.py target/release/hearth
	scripts/build-wasm.sh
	tests/types/check.sh
	node --test pkg/fetch.test.mjs
	$(MAKE) browser-test

# The CPU's integer kernels built for aarch64 (NEON) and run under qemu: only their module's
# tests, as the rest of hearth-core's take minutes emulated.
test-aarch64:
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
	  cargo test -p hearth-core --target aarch64-unknown-linux-gnu --lib model::cpu

# The wasm runtime, the npm package, the demo page and the extension in headless Chromium
# (SwiftShader WebGPU and the CPU path).
browser-test: target/release/hearth
	scripts/build-wasm.sh
	scripts/build-extension.sh
	tests/browser/run.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p hearth-core --target aarch64-unknown-linux-gnu --all-targets -- -D warnings
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
	  cargo clippy -p hearth-web --target wasm32-unknown-unknown --all-targets -- -D warnings
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
	  cargo clippy -p hearth-web --target wasm32-unknown-unknown --all-targets \
	  --target-dir target/relaxed-simd -- -D warnings

$(VENV)/.installed: tests/requirements-ci.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r tests/requirements-ci.txt
	touch $@

FORCE:
