#!/usr/bin/env bash
# Type-checks the package with tsc:
#   1. example.ts: OpenAI's own client types (the openai package) against the package's
#      declarations (pkg/index.d.ts), both ways: requests written for OpenAI are Hearth
#      requests, and Hearth's responses are OpenAI's response types;
#   2. pkg/*.js against those declarations, the worker protocol (pkg/protocol.js) and the wasm
#      glue's declarations (tsconfig.pkg.json), so it needs pkg/wasm (scripts/build-wasm.sh).
set -euo pipefail
cd "$(dirname "$0")"
[ -f ../../pkg/wasm/hearth_web.d.ts ] || { echo "pkg/wasm is missing: build it first (scripts/build-wasm.sh)" >&2; exit 1; }
[ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund
node_modules/.bin/tsc -p .
echo "types: example.ts type-checks against openai $(node -p 'require("./node_modules/openai/package.json").version')"
node_modules/.bin/tsc -p tsconfig.pkg.json
echo "types: pkg/*.js type-checks against pkg/index.d.ts"
