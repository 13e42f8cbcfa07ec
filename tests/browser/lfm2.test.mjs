// LFM2 (`lfm2`: gated short-convolution layers, whose recurrent state cannot be cut back to a
// prefix, beside grouped-query attention layers) through the npm package in headless Chromium,
// on WebGPU (SwiftShader) and the CPU: greedy text equal to the CLI's for a prompt longer than
// one 64-token chunk, and prompts that go on from the reply or depart after it continuing from
// the state or its snapshot.
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
// Over 64 tokens: the prompt runs as two chunks through each convolution's state.
const LONG = Array.from({ length: 8 }, (_, i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`).join(' ');
const STEPS = 6;

let bench, model, page;

before(async () => {
  bench = await openBench('lfm2', (dir) => {
    // The tiny fixture: 5 layers (convolutions 0, 2, 3; attention 1, 4) and the real Llama 3
    // vocabulary.
    model = join(dir, 'lfm2.gguf');
    writeFileSync(model, gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/lfm2-tiny.q8_0.gguf.gz'))));
  }, { logErrors: true });
  ({ page } = bench);
  await loadEngines(page, `${bench.models.url}/lfm2.gguf`, BACKENDS);
});

after(() => bench?.close());

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\`; prompts that go on from the last reply, or depart after it, run only their new tokens`, async () => {
    const r = await page.evaluate(async ({ backend, prompt, steps }) => {
      const engine = window.engines[backend];
      await engine.reset();
      const first = await window.generate(engine, prompt, { max_tokens: steps });
      const next = `${prompt}${first.text} And so on.`;
      const second = await window.generate(engine, next, { max_tokens: steps });
      // Another ending for the second prompt: back to where the first reply ended.
      const other = `${prompt}${first.text} Or not.`;
      const third = await window.generate(engine, other, { max_tokens: steps });
      const tokens = await Promise.all([prompt, next, other].map((p) => engine.tokenize(p)));
      return { first, next, second, other, third, tokens, info: engine.info };
    }, { backend, prompt: LONG, steps: STEPS });
    assert.equal(r.info.backend, backend, `fell back: ${r.info.fallbackReason}`);
    assert.equal(r.info.architecture, 'lfm2');
    for (const [got, prompt] of [[r.first, LONG], [r.second, r.next], [r.third, r.other]]) {
      assertLikeReference(model, got, prompt, STEPS, backend);
    }
    assert.ok(r.first.usage.prompt_tokens > 64, `the prompt has ${r.first.usage.prompt_tokens} tokens`);
    // What the state holds after the request before each: its prompt and the reply but for the
    // last token, which was chosen and never run. Convolution state cannot be cut back, so a
    // later prompt goes on from the state or from a snapshot at or before where it departs
    // from what is held, never from nothing; its text is still a fresh run's (above).
    const held = (i, got) => [...r.tokens[i], ...got.tokens.slice(0, got.usage.completion_tokens - 1)];
    for (const [i, before, got] of [[1, held(0, r.first), r.second], [2, held(1, r.second), r.third]]) {
      let same = 0;
      while (same < before.length && r.tokens[i][same] === before[same]) same++;
      const cached = got.usage.prompt_tokens_details.cached_tokens;
      assert.ok(cached > 0 && cached <= same, `prompt ${i}: ${cached} cached of ${same} shared`);
    }
  });
}
