// SmolLM3 (`smollm3`: llama whose every fourth layer has no rope) through the npm package in
// headless Chromium, on WebGPU (SwiftShader) and the CPU: greedy text equal to the CLI's for a
// prompt longer than one 64-token chunk, and for a prompt that goes on from the reply, which
// runs only its new tokens.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference). One engine
// per backend serves every test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertLikeReference, commonPrefix, fixtureBench, heldAfter, runFollowUps } from './chromium.mjs';

const BACKENDS = ['webgpu', 'cpu'];
// Over 64 tokens: the prompt runs as two chunks, each through the layer without rope.
const LONG = Array.from({ length: 8 }, (_, i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`).join(' ');
const STEPS = 6;

let bench, model, page;

before(async () => {
  // The tiny fixture: 4 layers (layer 3 without rope) and the real Llama 3 vocabulary.
  bench = await fixtureBench('smollm3', 'smollm3-tiny.q8_0', BACKENDS);
  ({ model, page } = bench);
});

after(() => bench?.close());

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\`, for a long prompt and for one that goes on from the reply`, async () => {
    const { runs, info } = await runFollowUps(page, backend, LONG, [' And so on.'], STEPS);
    assert.equal(info.backend, backend, `fell back: ${info.fallbackReason}`);
    assert.equal(info.architecture, 'smollm3');
    for (const run of runs) assertLikeReference(model, run.got, run.prompt, STEPS, backend);
    assert.ok(runs[0].got.usage.prompt_tokens > 64, `the prompt has ${runs[0].got.usage.prompt_tokens} tokens`);
    // The KV cache holds what the first run left; the second prompt runs from where it stops
    // matching that.
    const same = commonPrefix(runs[1].tokens, heldAfter(runs[0]));
    assert.ok(same >= runs[0].tokens.length, 'the second prompt starts with the first');
    assert.equal(runs[1].got.usage.prompt_tokens_details.cached_tokens, same);
  });
}
