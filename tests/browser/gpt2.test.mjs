// GPT-2 (`gpt2`: learned positions, LayerNorm, fused QKV, GELU MLP) through the npm package in
// headless Chromium, on WebGPU (SwiftShader) and the CPU: greedy text equal to the CLI's for a
// prompt longer than one 64-token chunk, and a prompt past the learned positions (the fixture
// has 128) refused as `context_full`.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertLikeReference, fixtureBench } from './chromium.mjs';

const BACKENDS = ['webgpu', 'cpu'];
const line = (i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`;
// About 80 tokens: two chunks, within the 128 positions with the reply.
const LONG = Array.from({ length: 6 }, (_, i) => line(i)).join(' ');
// About 180 tokens: past the positions.
const TOO_LONG = Array.from({ length: 14 }, (_, i) => line(i)).join(' ');
const STEPS = 8;

let bench, model, page;

before(async () => {
  bench = await fixtureBench('gpt2', 'gpt2-tiny.q8_0', BACKENDS);
  ({ model, page } = bench);
});

after(() => bench?.close());

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\`; a prompt past the learned positions is context_full`, async () => {
    const r = await page.evaluate(async ({ backend, prompt, tooLong, steps }) => {
      const engine = window.engines[backend];
      await engine.reset();
      const got = await window.generate(engine, prompt, { max_tokens: steps });
      const refused = await window.generate(engine, tooLong, { max_tokens: steps }).then(
        () => null, (e) => e.code);
      return { got, refused, info: engine.info };
    }, { backend, prompt: LONG, tooLong: TOO_LONG, steps: STEPS });
    assert.equal(r.info.backend, backend, `fell back: ${r.info.fallbackReason}`);
    assert.equal(r.info.architecture, 'gpt2');
    assertLikeReference(model, r.got, LONG, STEPS, backend);
    assert.ok(r.got.usage.prompt_tokens > 64, `the prompt has ${r.got.usage.prompt_tokens} tokens`);
    assert.equal(r.refused, 'context_full');
  });
}
