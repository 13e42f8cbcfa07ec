#!/usr/bin/env bash
# Builds the Chromium extension: target/extension/ (www/extension/ + the hearth-llm package's
# files + pkg/wasm + the bundled model), loadable unpacked, and target/hearth-extension.zip for
# a store upload. Everything the extension runs is inside it: no remotely hosted code.
# Needs pkg/wasm (scripts/build-wasm.sh) and www/models/shakespeare.q8_0.gguf.
set -euo pipefail
cd "$(dirname "$0")/.."

src=www/extension
out=target/extension
zip=target/hearth-extension.zip
model=www/models/shakespeare.q8_0.gguf
package=(index.js errors.js fetch.js protocol.js worker.js shards.js shard.js runtime.js)
wasm=(wasm/hearth_web.js wasm/hearth_web_bg.wasm wasm/hearth_web_relaxed_bg.wasm)

missing=0
for f in "${wasm[@]}"; do
  if [ ! -f "pkg/$f" ]; then
    echo "pkg/$f is missing: build the wasm runtime first (scripts/build-wasm.sh)" >&2
    missing=1
  fi
done
for f in "${package[@]}"; do
  [ -f "pkg/$f" ] || { echo "pkg/$f is missing" >&2; missing=1; }
done
[ -f "$model" ] || { echo "$model is missing: the extension bundles it as its default model" >&2; missing=1; }
[ -f "$src/manifest.json" ] || { echo "$src/manifest.json is missing" >&2; missing=1; }
[ "$missing" -eq 0 ] || exit 1

rm -rf "$out" "$zip"
mkdir -p "$out/hearth/wasm" "$out/models"
cp -R "$src/." "$out/"
# The package keeps its own layout under hearth/: index.js finds worker.js, and worker.js the
# wasm glue, relative to import.meta.url.
for f in "${package[@]}" "${wasm[@]}"; do cp "pkg/$f" "$out/hearth/$f"; done
cp "$model" "$out/models/"

# Every file the manifest and the panel name must be in the build.
node - "$out" <<'EOF'
const { readFileSync, existsSync } = require('node:fs');
const { join } = require('node:path');
const dir = process.argv[2];
const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const named = [
  manifest.background.service_worker, manifest.side_panel.default_path,
  ...Object.values(manifest.icons), ...Object.values(manifest.action.default_icon),
  'panel.js', 'panel.css', 'hearth/index.js', 'hearth/worker.js', 'hearth/runtime.js', 'hearth/wasm/hearth_web_bg.wasm',
  'hearth/wasm/hearth_web_relaxed_bg.wasm',
  'models/shakespeare.q8_0.gguf',
];
const absent = named.filter((f) => !existsSync(join(dir, f)));
if (absent.length) {
  console.error(`the extension build lacks: ${absent.join(', ')}`);
  process.exit(1);
}
EOF

# Reproducible archive: sorted entries, fixed timestamps, manifest.json at the root.
if command -v python3 >/dev/null; then
  python3 - "$out" "$zip" <<'EOF'
import os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
paths = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs)
with zipfile.ZipFile(dest, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for p in paths:
        info = zipfile.ZipInfo(p.replace(os.sep, '/'), date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(os.path.join(src, p), 'rb') as f:
            z.writestr(info, f.read())
EOF
elif command -v zip >/dev/null; then
  (cd "$out" && find . -type f | sort | sed 's|^\./||' | TZ=UTC zip -X -9 -q "../$(basename "$zip")" -@)
else
  echo "neither python3 nor zip is available to write $zip" >&2
  exit 1
fi

files=$(find "$out" -type f | wc -l)
echo "$out: $files files, $(du -sk "$out" | cut -f1) KiB"
echo "$zip: $(stat -c %s "$zip") bytes"
