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
/** The end-of-text token of long.gguf, a model with room for thousands of positions. */
const LONG_EOS = 2;

let dir, app, models, browser, page;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hearth-faults-'));
  const model = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
  writeFileSync(join(dir, 'model.gguf'), withChatTemplate(model));
  writeFileSync(join(dir, 'quota.gguf'), model);
  writeFileSync(join(dir, 'long.gguf'), withMetadata(withChatTemplate(model), { 'llama.context_length': 4096, 'tokenizer.ggml.eos_token_id': LONG_EOS }));
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

test('a lost WebGPU device ends the stream with device_lost; the engine rebuilds itself and the conversation goes on, twice', async (t) => {
  const loaded = await page.evaluate(async (url) => {
    const engine = await window.Hearth.load(url, { backend: 'webgpu' });
    window.lostEngine = engine;
    window.lossEvents = [];
    for (const type of ['devicelost', 'restored', 'restorefailed']) {
      engine.addEventListener(type, (e) => window.lossEvents.push({ type, backend: e.detail.info?.backend ?? null }));
    }
    window.conversation = [
      { role: 'user', content: 'Hello there' },
      { role: 'assistant', content: 'Good day.' },
      { role: 'user', content: 'Tell me more' },
    ];
    const ask = () => engine.chat.completions.create({ messages: window.conversation, max_tokens: 8, temperature: 0 });
    const first = await ask();
    const again = await ask();
    return { backend: engine.info.backend, content: first.choices[0].message.content, again: again.choices[0].message.content, cached: again.usage.prompt_tokens_details.cached_tokens };
  }, `${models.url}/long.gguf`);
  assert.equal(loaded.backend, 'webgpu');
  assert.equal(loaded.again, loaded.content);
  assert.ok(loaded.cached > 0, 'the same conversation again reuses its prefix');
  const cdp = await page.context().newCDPSession(page);
  for (const round of [1, 2]) {
    // A stream long enough to be under way when the device goes: thousands of positions, and
    // end of text biased away.
    const stream = page.evaluate(async (LONG_EOS) => {
      window.midStream = false;
      const tokens = [];
      try {
        const options = { maxTokens: 4000, logitBias: { [LONG_EOS]: -100 } };
        for await (const t of window.lostEngine.generate('The', options)) {
          tokens.push(t.token);
          if (tokens.length === 2) window.midStream = true;
        }
        return { code: null, tokens: tokens.length };
      } catch (e) {
        return { code: e.code, tokens: tokens.length };
      }
    }, LONG_EOS);
    await page.waitForFunction(() => window.midStream, null, { timeout: 60000 });
    // Crashing Chromium's GPU process loses every WebGPU device.
    await cdp.send('Browser.crashGpuProcess');
    const ended = await stream;
    assert.equal(ended.code, 'device_lost', `round ${round}: ${JSON.stringify(ended)}`);
    assert.ok(ended.tokens >= 2, `round ${round}`);
    const after = await page.evaluate(async () => {
      const r = await window.lostEngine.chat.completions.create({ messages: window.conversation, max_tokens: 8, temperature: 0 });
      return { content: r.choices[0].message.content, cached: r.usage.prompt_tokens_details.cached_tokens, backend: window.lostEngine.info.backend };
    });
    // The same reply, from the whole conversation encoded again by a new engine.
    assert.equal(after.content, loaded.content, `round ${round}`);
    assert.equal(after.cached, 0, `round ${round}`);
    assert.ok(['webgpu', 'cpu'].includes(after.backend), `round ${round}: ${after.backend}`);
    t.diagnostic(`after loss ${round}: ${after.backend}, stream ended after ${ended.tokens} tokens`);
  }
  const events = await page.evaluate(() => { window.lostEngine.dispose(); return window.lossEvents; });
  assert.deepEqual(events.map((e) => e.type), ['devicelost', 'restored', 'devicelost', 'restored']);
});
