// LFM2 (`lfm2`: gated short-convolution layers, whose recurrent state cannot be cut back to a
// prefix, beside grouped-query attention layers) through the npm package in headless Chromium,
// on WebGPU (SwiftShader) and the CPU: greedy text equal to the CLI's for a prompt longer than
// one 64-token chunk, and prompts that go on from the reply or depart after it continuing from
// the state or its snapshot.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference). One engine
// per backend serves every test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertLikeReference, commonPrefix, fixtureBench, heldAfter, runFollowUps } from './chromium.mjs';

const BACKENDS = ['webgpu', 'cpu'];
// Over 64 tokens: the prompt runs as two chunks through each convolution's state.
const LONG = Array.from({ length: 8 }, (_, i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`).join(' ');
const STEPS = 6;

let bench, model, page;

before(async () => {
  // The tiny fixture: 5 layers (convolutions 0, 2, 3; attention 1, 4) and the real Llama 3
  // vocabulary.
  bench = await fixtureBench('lfm2', 'lfm2-tiny.q8_0', BACKENDS);
  ({ model, page } = bench);
});

after(() => bench?.close());

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\`; prompts that go on from the last reply, or depart after it, run only their new tokens`, async () => {
    // The second prompt goes on from the first reply; the third departs after it.
    const { runs, info } = await runFollowUps(page, backend, LONG, [' And so on.', ' Or not.'], STEPS);
    assert.equal(info.backend, backend, `fell back: ${info.fallbackReason}`);
    assert.equal(info.architecture, 'lfm2');
    for (const run of runs) assertLikeReference(model, run.got, run.prompt, STEPS, backend);
    assert.ok(runs[0].got.usage.prompt_tokens > 64, `the prompt has ${runs[0].got.usage.prompt_tokens} tokens`);
    // Convolution state cannot be cut back, so a later prompt goes on from the state or from a
    // snapshot at or before where it departs from what the run before left, never from
    // nothing; its text is still a fresh run's (above).
    for (const i of [1, 2]) {
      const same = commonPrefix(runs[i].tokens, heldAfter(runs[i - 1]));
      const cached = runs[i].got.usage.prompt_tokens_details.cached_tokens;
      assert.ok(cached > 0 && cached <= same, `prompt ${i}: ${cached} cached of ${same} shared`);
    }
  });
}
