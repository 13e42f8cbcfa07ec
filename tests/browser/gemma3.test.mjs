// Gemma 3 (`gemma3`: sliding-window layers whose keys live in a ring of the window's size, a
// global layer, post-norms, GeGLU) through the npm package in headless Chromium, on WebGPU
// (SwiftShader) and the CPU: greedy text equal to the CLI's for a prompt longer than one
// 64-token chunk and than the ring (window 8 + 64 slots); prompts that go on from the reply or
// depart just after it keep the cache, and one that departs further back than the ring holds
// runs from the start.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference). One engine
// per backend serves every test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertLikeReference, commonPrefix, fixtureBench, heldAfter, runFollowUps } from './chromium.mjs';

const BACKENDS = ['webgpu', 'cpu'];
const line = (i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`;
// About 110 tokens of the fixture's 512-token vocabulary: past the 72-slot ring.
const LONG = Array.from({ length: 3 }, (_, i) => line(i)).join(' ');
// Shares only the first line with LONG: further back than the ring reaches.
const FAR_BACK = `${line(0)} Then something else happened.`;
const STEPS = 6;

let bench, model, page;

before(async () => {
  // The tiny fixture: 6 layers, 0-4 local (window 8), 5 global; a 512-token SentencePiece
  // vocabulary.
  bench = await fixtureBench('gemma3', 'gemma3-tiny.q8_0', BACKENDS);
  ({ model, page } = bench);
});

after(() => bench?.close());

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\` past the window's ring; later prompts keep what the ring still holds`, async () => {
    // The second prompt goes on from the first reply; the third departs after it.
    const { runs, info } = await runFollowUps(page, backend, LONG, [' And so on.', ' Or not.'], STEPS);
    assert.equal(info.backend, backend, `fell back: ${info.fallbackReason}`);
    assert.equal(info.architecture, 'gemma3');
    for (const run of runs) assertLikeReference(model, run.got, run.prompt, STEPS, backend);
    assert.ok(runs[0].got.usage.prompt_tokens > 72, `the prompt has ${runs[0].got.usage.prompt_tokens} tokens`);
    // Neither goes back further than the 64 slots past the window: the cache keeps all they
    // share with what the run before left.
    for (const i of [1, 2]) {
      const same = commonPrefix(runs[i].tokens, heldAfter(runs[i - 1]));
      assert.ok(same >= runs[0].tokens.length, `prompt ${i} starts with the first`);
      assert.equal(runs[i].got.usage.prompt_tokens_details.cached_tokens, same);
    }
    // A prompt that departs after the first line: the ring has overwritten the keys its window
    // needs there, so it runs from the start, and answers as a fresh engine does.
    const far = await page.evaluate(async ({ backend, prompt, steps }) => {
      const engine = window.engines[backend];
      return window.generate(engine, prompt, { max_tokens: steps });
    }, { backend, prompt: FAR_BACK, steps: STEPS });
    assert.equal(far.usage.prompt_tokens_details.cached_tokens, 0);
    assertLikeReference(model, far, FAR_BACK, STEPS, backend);
  });
}
