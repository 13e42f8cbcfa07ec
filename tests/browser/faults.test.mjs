// What a page sees when the machine lets it down: a model too big for memory, memory running
// out, a full storage quota, a WebGPU device lost midway. Runs in its own browser: one test crashes its GPU process.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../../scripts/serve.mjs';
import { launch, testPage } from './chromium.mjs';
import { withChatTemplate, withMetadata } from './gguf.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Positions whose KV cache exceeds both wasm memory and one WebGPU binding. */
const HUGE_CONTEXT = (1 << 24) - 1;

let dir, app, models, browser, page;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hearth-faults-'));
  const model = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
  writeFileSync(join(dir, 'model.gguf'), withChatTemplate(model));
  writeFileSync(join(dir, 'quota.gguf'), model);
  writeFileSync(join(dir, 'huge.gguf'), withMetadata(model, { 'llama.context_length': HUGE_CONTEXT }));
  writeFileSync(join(dir, 'qwen2.gguf'), gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/qwen2-tiny.q8_0.gguf.gz'))));
  app = await serve(ROOT);
  models = await serve(dir);
  browser = await launch();
  page = await testPage(browser, app.url);
});

after(async () => {
  await browser?.close();
  await Promise.all([app, models].filter(Boolean).map((s) => s.close()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Loads `url` with `options` in the page; resolves to the error code, or null if it loaded. */
function loadCode(url, options) {
  return page.evaluate(async ({ url, options }) => {
    try { (await window.Hearth.load(url, options)).dispose(); return null; }
    catch (e) { return e instanceof window.HearthError ? e.code : `not a HearthError: ${e}`; }
  }, { url, options });
}

test('a model too big for the device is refused before its weights are fetched', async () => {
  const url = `${models.url}/huge.gguf`;
  for (const backend of ['cpu', 'webgpu', 'auto']) {
    models.state.requests.length = 0;
    assert.equal(await loadCode(url, { backend, contextLength: HUGE_CONTEXT, cache: false }), 'too_large', backend);
    const fetched = models.state.requests.filter((r) => r.path === '/huge.gguf');
    // Header requests only (a prefix, from byte 0); "auto" reads it again for the CPU.
    assert.ok(fetched.length >= 1 && fetched.every((r) => r.range?.startsWith('bytes=0-')), `${backend}: ${JSON.stringify(fetched)}`);
  }
});

test('running out of WebAssembly memory is out_of_memory, and the page goes on', async () => {
  // V8 lets wasm memory grow to 50 MB only: the small model fits, the 152k-token Qwen2
  // vocabulary's model does not.
  const small = await launch(['--no-sandbox', '--js-flags=--wasm-max-mem-pages=800']);
  try {
    const p = await testPage(small, app.url);
    const codes = await p.evaluate(async (urls) => {
      const out = [];
      for (const url of urls) {
        try { (await window.Hearth.load(url, { backend: 'cpu', cache: false })).dispose(); out.push(null); }
        catch (e) { out.push(e instanceof window.HearthError ? e.code : `not a HearthError: ${e}`); }
      }
      return out;
    }, [`${models.url}/qwen2.gguf`, `${models.url}/model.gguf`]);
    assert.deepEqual(codes, ['out_of_memory', null]);
  } finally {
    await small.close();
  }
});

test('a full storage quota is reported, and loading without the cache still works', async () => {
  const cdp = await page.context().newCDPSession(page);
  const origin = new URL(app.url).origin;
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1024 });
  try {
    assert.equal(await loadCode(`${models.url}/quota.gguf`, { backend: 'cpu' }), 'quota_exceeded');
    assert.equal(await loadCode(`${models.url}/quota.gguf`, { backend: 'cpu', cache: false }), null);
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  }
});

test('a lost WebGPU device ends generation with code device_lost', async () => {
  const r = page.evaluate(async (url) => {
    const engine = await window.Hearth.load(url, { backend: 'webgpu', cache: false });
    const before = [];
    for await (const t of engine.generate('The', { maxTokens: 2 })) before.push(t.token);
    window.lostEngine = engine;
    return { before: before.length, backend: engine.info.backend };
  }, `${models.url}/model.gguf`);
  const loaded = await r;
  assert.equal(loaded.backend, 'webgpu');
  assert.equal(loaded.before, 2);
  // Crashing Chromium's GPU process loses every WebGPU device.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Browser.crashGpuProcess');
  const code = await page.evaluate(async () => {
    try {
      // The loss reaches the worker's device asynchronously; a few tries at most.
      for (let i = 0; i < 20; i++) {
        for await (const t of window.lostEngine.generate('The', { maxTokens: 4 })) void t;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      return null;
    } catch (e) {
      return e.code;
    } finally {
      window.lostEngine.dispose();
    }
  });
  assert.equal(code, 'device_lost');
});
