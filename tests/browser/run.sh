#!/usr/bin/env bash
# Every browser check, on headless Chromium with SwiftShader WebGPU:
#   1. node --test: the npm package end to end as a page imports it and as a Vite-built app
#      bundles it (chat, vite), structured output and tool calls (structured), hostile chat
#      templates and the abort watchdog (hostile), a hybrid recurrent model through it
#      (qwen35), a model with layers without rope (smollm3), a hybrid of short convolutions
#      and attention (lfm2), one with learned positions and LayerNorm (gpt2), sliding-window
#      layers on a ring of keys (gemma3), fused projections and LongRoPE (phi3), the CPU engine
#      split across workers on a cross-origin isolated page (workers), the demo page
#      (demo), the machine's faults (faults), and the extension (extension);
#   2. crates/hearth-web/tests/web.rs: WebGPU logits against the CPU's (wasm-bindgen-test),
#      and the CPU kernels of the relaxed-SIMD build against the reference, unless
#      HEARTH_SKIP_WASM_TESTS=1.
# Needs target/release/hearth, pkg/wasm and target/extension built first (cargo build --release
# -p hearth-cli; scripts/build-wasm.sh; scripts/build-extension.sh), /usr/bin/chromium and
# chromedriver, wasm-bindgen-cli and Node.js.
# Ends with a line "browser checks: N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
for f in target/release/hearth pkg/wasm/hearth_web_bg.wasm www/models/shakespeare.q8_0.gguf target/extension/manifest.json; do
  [ -e "$root/$f" ] || { echo "$f is missing: build it first" >&2; exit 1; }
done
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund || exit 1
(cd ../vite && { [ -x node_modules/.bin/vite ] || npm ci --no-audit --no-fund; }) || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
node --test --test-concurrency=1 --test-reporter=tap \
  chat.test.mjs structured.test.mjs hostile.test.mjs vite.test.mjs qwen35.test.mjs smollm3.test.mjs lfm2.test.mjs gpt2.test.mjs gemma3.test.mjs phi3.test.mjs workers.test.mjs demo.test.mjs extension.test.mjs faults.test.mjs 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -1)
passed=${passed:-0}
failed=${failed:-0}

if [ "${HEARTH_SKIP_WASM_TESTS:-0}" != 1 ]; then
  : >"$log"
  # The profile and flags of scripts/build-wasm.sh: the code that ships, and its dependencies
  # already built.
  (cd "$root/crates/hearth-web" &&
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} WASM_BINDGEN_TEST_TIMEOUT=180 \
      cargo test -p hearth-web --profile wasm-release --target wasm32-unknown-unknown --test web) \
    2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  # The CPU kernels of the relaxed-SIMD build (its own target directory, as build-wasm.sh has
  # it) against the reference.
  (cd "$root/crates/hearth-web" &&
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} WASM_BINDGEN_TEST_TIMEOUT=180 \
      cargo test -p hearth-web --profile wasm-release --target wasm32-unknown-unknown \
      --target-dir "$root/target/relaxed-simd" --test web cpu_fast_products) \
    2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  while read -r ok; do
    passed=$((passed + ${ok% *}))
    failed=$((failed + ${ok#* }))
  done < <(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log")
  [ "$(grep -c '^test result: ' "$log")" -eq 2 ] || failed=$((failed + 1))
fi

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "browser checks: $passed passed, $failed failed"
exit "$status"
