// The CPU engine split across workers through the npm package in headless Chromium: on a
// cross-origin isolated page each model's matrices are shared out by rows among `workers`
// wasm instances, and the greedy text is the CLI's (`--backend cpu`) all the same, for K-quants,
// a tied head, fused projections with learned positions, and a recurrent hybrid; the default
// takes one worker per core; a page that is not isolated splits them all the same, its workers
// answering by message; a bad count is refused. The same text from the build without relaxed
// SIMD (for browsers that lack it); a worker that stops answering, through the shared buffer or
// by message, fails the call as a lost device, and the engine loads itself again.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { assertLikeReference, openBench, testPage } from './chromium.mjs';
import { replacing, withEditedPackage } from './shim.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURES = ['llama-kq.q4_k_m', 'qwen2-tiny.q8_0', 'gpt2-tiny.q8_0', 'qwen35-tiny.q8_0'];
const PROMPT = 'The quick brown fox jumps over the lazy dog, and then';
const STEPS = 8;

let bench;

before(async () => {
  bench = await openBench('workers', (dir) => {
    for (const f of FIXTURES) {
      writeFileSync(join(dir, `${f}.gguf`), gunzipSync(readFileSync(join(ROOT, `tests/fixtures/models/${f}.gguf.gz`))));
    }
  }, { logErrors: true, isolated: true });
});

after(() => bench?.close());

/** Loads `url` with `options` in `page`, generates greedily, disposes: the result and info. */
function generateOnce(page, url, options) {
  return page.evaluate(async ({ url, options, prompt, steps }) => {
    const engine = await window.Hearth.load(url, { backend: 'cpu', cache: false, ...options });
    const out = { tokens: [], text: '' };
    const it = engine.generate(prompt, { max_tokens: steps })[Symbol.asyncIterator]();
    for (;;) {
      const { value, done } = await it.next();
      if (done) { Object.assign(out, value); break; }
      out.tokens.push(value.token);
      out.text += value.text;
    }
    const info = engine.info;
    await engine.dispose();
    return { got: out, info, isolated: self.crossOriginIsolated };
  }, { url, options, prompt: PROMPT, steps: STEPS });
}

for (const fixture of FIXTURES) {
  test(`${fixture}: three workers give the CLI's greedy text`, async () => {
    const r = await generateOnce(bench.page, `${bench.models.url}/${fixture}.gguf`, { workers: 3 });
    assert.ok(r.isolated, 'the test page is cross-origin isolated');
    assert.equal(r.info.backend, 'cpu');
    assert.equal(r.info.workers, 3);
    assert.equal(r.info.wasm, 'relaxed-simd');
    assertLikeReference(join(bench.dir, `${fixture}.gguf`), r.got, PROMPT, STEPS, 'cpu', `${fixture}, 3 workers`);
  });
}

test('the default is one worker per core, at most 8', async () => {
  const cores = await bench.page.evaluate(() => navigator.hardwareConcurrency);
  const r = await generateOnce(bench.page, `${bench.models.url}/${FIXTURES[0]}.gguf`, {});
  assert.equal(r.info.workers, Math.min(cores, 8));
  assertLikeReference(join(bench.dir, `${FIXTURES[0]}.gguf`), r.got, PROMPT, STEPS, 'cpu', 'default workers');
});

test('a page that is not cross-origin isolated splits the model by message; a bad count is refused', async () => {
  const { serve } = await import('../../scripts/serve.mjs');
  const plain = await serve(ROOT);
  try {
    const page = await testPage(bench.browser, plain.url);
    for (const fixture of FIXTURES) {
      const r = await generateOnce(page, `${bench.models.url}/${fixture}.gguf`, { workers: 3 });
      assert.equal(r.isolated, false);
      assert.equal(r.info.workers, 3);
      assertLikeReference(join(bench.dir, `${fixture}.gguf`), r.got, PROMPT, STEPS, 'cpu', `${fixture}, not isolated`);
    }
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    const r = await generateOnce(page, `${bench.models.url}/${FIXTURES[0]}.gguf`, {});
    assert.equal(r.info.workers, Math.min(cores, 8));
    const refused = await page.evaluate((url) => window.Hearth.load(url, { backend: 'cpu', workers: 0 }).then(
      () => null, (e) => `${e.code}: ${e.message}`), `${bench.models.url}/${FIXTURES[0]}.gguf`);
    assert.match(refused ?? '', /^bad_request: workers must be/);
    await page.close();
  } finally {
    await plain.close();
  }
});

test('the build without relaxed SIMD gives the same text, on two workers', async () => {
  const edits = { 'runtime.js': replacing('WebAssembly.validate(RELAXED_PROBE)', 'false') };
  const r = await withEditedPackage(bench.browser, edits, (page) => generateOnce(page, `${bench.models.url}/${FIXTURES[0]}.gguf`, { workers: 2 }), { isolated: true });
  assert.equal(r.info.wasm, 'simd128');
  assert.equal(r.info.workers, 2);
  assertLikeReference(join(bench.dir, `${FIXTURES[0]}.gguf`), r.got, PROMPT, STEPS, 'cpu', 'simd128');
});

for (const isolated of [true, false]) {
  test(`a worker that stops answering ${isolated ? 'through the shared buffer' : 'by message'} fails the call with device_lost; the engine loads again`, async () => {
    // The second shard says it serves, then never answers.
    const edits = {
      'shard.js': isolated
        ? replacing('serving.serve(data.buffer);', 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);')
        : replacing('self.postMessage({ type: SHARD.answer', 'if (data.input.length < 0) self.postMessage({ type: SHARD.answer'),
    };
    const r = await withEditedPackage(bench.browser, edits, (page) => page.evaluate(async (url) => {
      const engine = await window.Hearth.load(url, { backend: 'cpu', cache: false, workers: 2 });
      const events = [];
      const restored = new Promise((resolve) => engine.addEventListener('restored', (e) => resolve(e.detail.info)));
      engine.addEventListener('devicelost', (e) => events.push(e.detail.message));
      const start = performance.now();
      let error = null;
      try {
        for await (const _ of engine.generate('Hello', { max_tokens: 2 }));
      } catch (e) {
        error = { code: e.code, message: e.message };
      }
      const ms = performance.now() - start;
      const info = await Promise.race([restored, new Promise((resolve) => setTimeout(() => resolve(null), 60000))]);
      engine.dispose();
      return { error, ms, events, workers: info?.workers, isolated: self.crossOriginIsolated };
    }, `${bench.models.url}/${FIXTURES[0]}.gguf`), { isolated });
    assert.equal(r.isolated, isolated);
    assert.equal(r.error?.code, 'device_lost', JSON.stringify(r));
    assert.match(r.error.message, /^a CPU worker stopped answering for 30 s/);
    assert.ok(r.ms > 29000 && r.ms < 90000, `${r.ms} ms`);
    assert.equal(r.events.length, 1);
    assert.equal(r.workers, 2);
  });
}
