#!/usr/bin/env bash
# Type-checks example.ts: OpenAI's own client types (the openai package) against the package's
# declarations (pkg/index.d.ts), both ways: requests written for OpenAI are Hearth requests,
# and Hearth's responses are OpenAI's response types.
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund
node_modules/.bin/tsc -p .
echo "types: example.ts type-checks against openai $(node -p 'require("./node_modules/openai/package.json").version')"
