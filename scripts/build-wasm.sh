#!/usr/bin/env bash
# Builds the browser runtime into pkg/wasm/: hearth-web for wasm32 and its wasm-bindgen glue,
# then prints each .wasm's size raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
if [ "$want" != "$have" ]; then
  echo "wasm-bindgen-cli $want is needed (found: ${have:-none}):" >&2
  echo "  cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi

# Two builds of hearth-web for wasm32 (release, size-minded profile): with WebAssembly SIMD
# (every browser with WebGPU has it), which lets the CPU fallback's loops vectorise, and also
# with relaxed SIMD (its 8-bit dot product), which pkg/runtime.js loads where the browser has
# it. The second has its own target directory, so that neither build undoes the other's.
build() { # target features, target directory, wasm-bindgen output directory
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=$1" \
    cargo build -p hearth-web --target wasm32-unknown-unknown --profile wasm-release --target-dir "$2"
  wasm-bindgen --target web --out-dir "$3" --out-name hearth_web \
    "$2/wasm32-unknown-unknown/wasm-release/hearth_web.wasm"
}
relaxed=target/relaxed-simd
rm -rf pkg/wasm "$relaxed/bindgen"
build +simd128 target pkg/wasm
build +simd128,+relaxed-simd "$relaxed" "$relaxed/bindgen"
# One glue module serves both: the builds must export and import the same.
for f in hearth_web.js hearth_web.d.ts hearth_web_bg.wasm.d.ts; do
  cmp -s "pkg/wasm/$f" "$relaxed/bindgen/$f" || {
    echo "the relaxed-SIMD build's $f differs from the other's" >&2
    exit 1
  }
done
mv "$relaxed/bindgen/hearth_web_bg.wasm" pkg/wasm/hearth_web_relaxed_bg.wasm
for wasm in pkg/wasm/hearth_web_bg.wasm pkg/wasm/hearth_web_relaxed_bg.wasm; do
  if command -v wasm-opt >/dev/null; then
    wasm-opt -O3 --enable-simd --enable-relaxed-simd --enable-bulk-memory \
      --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals \
      --enable-reference-types --enable-multivalue "$wasm" -o "$wasm"
  fi
  raw=$(stat -c %s "$wasm")
  gz=$(gzip -9 -c "$wasm" | wc -c)
  echo "$wasm: $raw bytes ($gz gzipped)"
done
