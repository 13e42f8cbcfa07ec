#!/usr/bin/env bash
# Builds the browser runtime: hearth-web for wasm32 (release, size-minded profile) and its
# wasm-bindgen glue into pkg/wasm/, then prints the .wasm size raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
if [ "$want" != "$have" ]; then
  echo "wasm-bindgen-cli $want is needed (found: ${have:-none}):" >&2
  echo "  cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi

# WebAssembly SIMD (every browser with WebGPU has it) lets the CPU fallback's loops vectorise.
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
  cargo build -p hearth-web --target wasm32-unknown-unknown --profile wasm-release
rm -rf pkg/wasm
wasm-bindgen --target web --out-dir pkg/wasm --out-name hearth_web \
  target/wasm32-unknown-unknown/wasm-release/hearth_web.wasm
if command -v wasm-opt >/dev/null; then
  wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    pkg/wasm/hearth_web_bg.wasm -o pkg/wasm/hearth_web_bg.wasm
fi
raw=$(stat -c %s pkg/wasm/hearth_web_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/hearth_web_bg.wasm | wc -c)
echo "pkg/wasm/hearth_web_bg.wasm: $raw bytes ($gz gzipped)"
