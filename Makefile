# The two commands of the README: `make demo` and `make test`.

VENV := tests/.venv
PYTHON := $(VENV)/bin/python
FIXTURE := tests/fixtures/models/qwen2-tiny.q8_0.gguf.gz

.PHONY: demo test lint browser-test

# Builds the CLI and streams a continuation from a bundled fixture model (random weights with
# the real Qwen tokenizer: the text is fluent nonsense).
demo: target/release/hearth
	@mkdir -p target/demo
	gunzip -c $(FIXTURE) > target/demo/model.gguf
	target/release/hearth inspect target/demo/model.gguf
	target/release/hearth generate --model target/demo/model.gguf --prompt "Once upon a time" --max-tokens 24

target/release/hearth: FORCE
	cargo build --release -p hearth-cli

# Every test: formatting, lints, the Rust suites (GPU ones on whatever adapter exists, lavapipe
# in CI), the quantizer checked by gguf-py, and the browser checks in headless Chromium.
test: lint target/release/hearth $(VENV)/.installed
	cargo test --workspace
	$(PYTHON) tests/check_quantize.py target/release/hearth
	$(MAKE) browser-test

# The wasm runtime and npm package in headless Chromium (SwiftShader WebGPU and the CPU path).
browser-test: target/release/hearth
	scripts/build-wasm.sh
	tests/browser/run.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p hearth-web --target wasm32-unknown-unknown --all-targets -- -D warnings

$(VENV)/.installed: tests/requirements-ci.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r tests/requirements-ci.txt
	touch $@

FORCE:
