// SmolLM3 (`smollm3`: llama whose every fourth layer has no rope) through the npm package in
// headless Chromium, on WebGPU (SwiftShader) and the CPU: greedy text equal to the CLI's for a
// prompt longer than one 64-token chunk, and for a prompt that goes on from the reply, which
// runs only its new tokens.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference). One engine
// per backend serves every test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertLikeReference, loadEngines, openBench } from './chromium.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BACKENDS = ['webgpu', 'cpu'];
// Over 64 tokens: the prompt runs as two chunks, each through the layer without rope.
const LONG = Array.from({ length: 8 }, (_, i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`).join(' ');
const STEPS = 6;

let bench, model, page;

before(async () => {
  bench = await openBench('smollm3', (dir) => {
    // The tiny fixture: 4 layers (layer 3 without rope) and the real Llama 3 vocabulary.
    model = join(dir, 'smollm3.gguf');
    writeFileSync(model, gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/smollm3-tiny.q8_0.gguf.gz'))));
  }, { logErrors: true });
  ({ page } = bench);
  await loadEngines(page, `${bench.models.url}/smollm3.gguf`, BACKENDS);
});

after(() => bench?.close());

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\`, for a long prompt and for one that goes on from the reply`, async () => {
    const r = await page.evaluate(async ({ backend, prompt, steps }) => {
      const engine = window.engines[backend];
      await engine.reset();
      const first = await window.generate(engine, prompt, { max_tokens: steps });
      const next = `${prompt}${first.text} And so on.`;
      const second = await window.generate(engine, next, { max_tokens: steps });
      const tokens = await Promise.all([prompt, next].map((p) => engine.tokenize(p)));
      return { first, next, second, tokens, info: engine.info };
    }, { backend, prompt: LONG, steps: STEPS });
    assert.equal(r.info.backend, backend, `fell back: ${r.info.fallbackReason}`);
    assert.equal(r.info.architecture, 'smollm3');
    for (const [got, prompt] of [[r.first, LONG], [r.second, r.next]]) {
      assertLikeReference(model, got, prompt, STEPS, backend);
    }
    assert.ok(r.first.usage.prompt_tokens > 64, `the prompt has ${r.first.usage.prompt_tokens} tokens`);
    // The KV cache holds the first prompt and the reply but for its last token (chosen, never
    // run); the second prompt runs from where it stops matching them.
    const held = [...r.tokens[0], ...r.first.tokens.slice(0, r.first.usage.completion_tokens - 1)];
    let same = 0;
    while (same < held.length && r.tokens[1][same] === held[same]) same++;
    assert.ok(same >= r.tokens[0].length, 'the second prompt starts with the first');
    assert.equal(r.second.usage.prompt_tokens_details.cached_tokens, same);
  });
}
