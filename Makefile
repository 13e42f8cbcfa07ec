# The two commands of the README: `make demo` and `make test`.

VENV := tests/.venv
PYTHON := $(VENV)/bin/python
FIXTURE := tests/fixtures/models/qwen2-tiny.q8_0.gguf.gz

.PHONY: demo test lint

# Builds the CLI and streams a continuation from a bundled fixture model (random weights with
# the real Qwen tokenizer: the text is fluent nonsense).
demo: target/release/hearth
	@mkdir -p target/demo
	gunzip -c $(FIXTURE) > target/demo/model.gguf
	target/release/hearth inspect target/demo/model.gguf
	target/release/hearth generate --model target/demo/model.gguf --prompt "Once upon a time" --max-tokens 24

target/release/hearth: FORCE
	cargo build --release -p hearth-cli

# Every test: formatting, lints, the Rust suites, and the quantizer checked by gguf-py.
test: lint target/release/hearth $(VENV)/.installed
	cargo test --workspace
	$(PYTHON) tests/check_quantize.py target/release/hearth

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

$(VENV)/.installed: tests/requirements-ci.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r tests/requirements-ci.txt
	touch $@

FORCE:
