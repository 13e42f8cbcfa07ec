#!/usr/bin/env bash
# Builds a minimal Vite app (index.html, main.js) against the npm package as a user gets it:
# `npm pack` of pkg/ (pkg/wasm must be built), installed from the tarball, then `vite build`
# into $1 (default: dist).
set -euo pipefail
cd "$(dirname "$0")"
out=$(realpath -m "${1:-dist}")
[ -x node_modules/.bin/vite ] || npm ci --no-audit --no-fund
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(cd ../../pkg && npm pack --pack-destination "$work" --silent)
rm -rf node_modules/hearth-llm
npm install --no-save --no-audit --no-fund "$work/$tarball" >/dev/null
node_modules/.bin/vite build --logLevel warn --outDir "$out" --emptyOutDir
