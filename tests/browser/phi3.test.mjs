// Phi-3 (`phi3`: fused QKV and gate|up projections, partial rotary, LongRoPE) through the npm
// package in headless Chromium, on WebGPU (SwiftShader) and the CPU: greedy text equal to the
// CLI's for a prompt longer than one 64-token chunk, with Phi-4-mini's rope (12 of 16 dimensions
// rotated, the short factors) and with Phi-3.5's (the long factors, attention factor 2), and a
// prompt that goes on from the reply.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertLikeReference, commonPrefix, heldAfter, loadEngines, openBench, runFollowUps } from './chromium.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BACKENDS = ['webgpu', 'cpu'];
// Over 64 tokens of the fixtures' 512-token vocabulary.
const LONG = Array.from({ length: 2 }, (_, i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`).join(' ');
const STEPS = 6;
// Both tiny fixtures: 2 layers, a 512-token SentencePiece vocabulary. phi3-tiny's context
// (4096 in the browser, the prompt and reply in the CLI) stays within its original 4096, so
// both take the short factors; phi3-long-tiny's original context is 4, so both take the long.
const FIXTURES = ['phi3-tiny', 'phi3-long-tiny'];

let bench, page;
const models = {};

before(async () => {
  bench = await openBench('phi3', (dir) => {
    for (const name of FIXTURES) {
      models[name] = join(dir, `${name}.gguf`);
      writeFileSync(models[name], gunzipSync(readFileSync(join(ROOT, `tests/fixtures/models/${name}.q8_0.gguf.gz`))));
    }
  }, { logErrors: true });
  ({ page } = bench);
});

after(() => bench?.close());

for (const name of FIXTURES) {
  test(`${name}: greedy text equals \`hearth generate\` on WebGPU and the CPU; a prompt that goes on from the reply runs only its new tokens`, async () => {
    await loadEngines(page, `${bench.models.url}/${name}.gguf`, BACKENDS);
    try {
      for (const backend of BACKENDS) {
        const { runs, info } = await runFollowUps(page, backend, LONG, [' And so on.'], STEPS);
        assert.equal(info.backend, backend, `fell back: ${info.fallbackReason}`);
        assert.equal(info.architecture, 'phi3');
        for (const run of runs) assertLikeReference(models[name], run.got, run.prompt, STEPS, backend, `${name} ${backend}`);
        assert.ok(runs[0].got.usage.prompt_tokens > 64, `the prompt has ${runs[0].got.usage.prompt_tokens} tokens`);
        assert.equal(runs[1].got.usage.prompt_tokens_details.cached_tokens, commonPrefix(runs[1].tokens, heldAfter(runs[0])));
      }
    } finally {
      await page.evaluate(() => Object.values(window.engines).forEach((e) => e.dispose()));
    }
  });
}
