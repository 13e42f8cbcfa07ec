// What a page sees when the machine lets it down: a model too big for memory, memory running
// out (wasm's, or the GPU's while loading), a GPU limit, a full storage quota, a WebGPU device
// lost midway. Runs in its own browser: one test crashes its GPU process.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, testPage, greedyTokens, openBench } from './chromium.mjs';
import { withChatTemplate, withMetadata } from './gguf.mjs';
import { hardwareShim, noSpeedProbeShim, withWorkerShim } from './shim.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Positions whose KV cache exceeds both wasm memory and one WebGPU binding. */
const HUGE_CONTEXT = (1 << 24) - 1;
/** The end-of-text token of long.gguf, a model with room for thousands of positions. */
const LONG_EOS = 2;

let bench, dir, app, models, browser, page;

before(async () => {
  bench = await openBench('faults', (dir) => {
    const model = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
    writeFileSync(join(dir, 'model.gguf'), withChatTemplate(model));
    writeFileSync(join(dir, 'quota.gguf'), model);
    writeFileSync(join(dir, 'long.gguf'), withMetadata(withChatTemplate(model), { 'llama.context_length': 4096, 'tokenizer.ggml.eos_token_id': LONG_EOS }));
    writeFileSync(join(dir, 'huge.gguf'), withMetadata(model, { 'llama.context_length': HUGE_CONTEXT }));
    writeFileSync(join(dir, 'qwen2.gguf'), gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/qwen2-tiny.q8_0.gguf.gz'))));
  });
  ({ dir, app, models, browser, page } = bench);
});

after(() => bench?.close());

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
  // V8 lets wasm memory grow to 16 MB only: the small model fits in one worker, the
  // 152k-token Qwen2 vocabulary's model does not.
  const small = await launch(['--no-sandbox', '--js-flags=--wasm-max-mem-pages=250']);
  try {
    const p = await testPage(small, app.url);
    const codes = await p.evaluate(async (urls) => {
      const out = [];
      for (const url of urls) {
        try { (await window.Hearth.load(url, { backend: 'cpu', cache: false, workers: 1 })).dispose(); out.push(null); }
        catch (e) { out.push(e instanceof window.HearthError ? e.code : `not a HearthError: ${e}`); }
      }
      return out;
    }, [`${models.url}/qwen2.gguf`, `${models.url}/model.gguf`]);
    assert.deepEqual(codes, ['out_of_memory', null]);
  } finally {
    await small.close();
  }
});

/** Every adapter and device reports at most `bytes` per storage binding. */
const bindingLimitShim = (bytes) => `{
  const d = Object.getOwnPropertyDescriptor(GPUSupportedLimits.prototype, 'maxStorageBufferBindingSize');
  Object.defineProperty(GPUSupportedLimits.prototype, 'maxStorageBufferBindingSize',
    { ...d, get() { return Math.min(d.get.call(this), ${bytes}); } });
}`;

/**
 * A device holding more than \`bytes\` of buffers reports out of memory (at the next error
 * scope that watches for it, as a real device does); the buffers alive on every device are
 * counted, and their total posted on the BroadcastChannel "gpu-memory" at each change.
 */
const memoryShim = (bytes) => `{
  const live = new Map();
  const channel = new BroadcastChannel('gpu-memory');
  const total = (device) => [...live.values()].filter((b) => !device || b.device === device).reduce((n, b) => n + b.size, 0);
  const report = () => channel.postMessage(total(null));
  const scopes = new WeakMap();
  const over = new WeakSet();
  const D = GPUDevice.prototype;
  const { createBuffer, destroy, pushErrorScope, popErrorScope } = D;
  D.createBuffer = function (desc) {
    const buffer = createBuffer.call(this, desc);
    live.set(buffer, { device: this, size: desc.size });
    if (total(this) > ${bytes}) over.add(this);
    report();
    return buffer;
  };
  const destroyBuffer = GPUBuffer.prototype.destroy;
  GPUBuffer.prototype.destroy = function () { live.delete(this); report(); return destroyBuffer.call(this); };
  D.destroy = function () {
    for (const [buffer, b] of live) if (b.device === this) live.delete(buffer);
    report();
    return destroy.call(this);
  };
  D.pushErrorScope = function (filter) {
    if (!scopes.has(this)) scopes.set(this, []);
    scopes.get(this).push(filter);
    return pushErrorScope.call(this, filter);
  };
  D.popErrorScope = async function () {
    const filter = scopes.get(this)?.pop();
    const error = await popErrorScope.call(this);
    if (filter === 'out-of-memory' && over.has(this)) {
      over.delete(this);
      return new GPUOutOfMemoryError('over the test budget');
    }
    return error;
  };
}`;

test('auto runs on the CPU where a probe of the model finds it faster than the adapter, and says why', async () => {
  // SwiftShader made to read as a hardware adapter: the self-test passes, the probe finds it
  // slower than the CPU engine.
  const r = await withWorkerShim(browser, hardwareShim, (p) => p.evaluate(async (url) => {
    const engine = await window.Hearth.load(url, { backend: 'auto', cache: false });
    const tokens = [];
    for await (const t of engine.generate('The', { max_tokens: 4 })) tokens.push(t.token);
    const { backend, fallbackReason } = engine.info;
    engine.dispose();
    return { backend, fallbackReason, tokens: tokens.length };
  }, `${models.url}/model.gguf`));
  assert.equal(r.backend, 'cpu', JSON.stringify(r));
  assert.match(r.fallbackReason, /^the CPU engine is faster for this model: a probe of its shapes predicts [0-9.]+ ms a token for its products on the CPU, [0-9.]+ ms on /);
  assert.equal(r.tokens, 4);
});

test('a model over a GPU limit is too_large on webgpu; auto runs it on the CPU and says why', async () => {
  // One layer's KV cache (256 positions of 2 x 16 values, f32) is 32 KiB.
  const r = await withWorkerShim(browser, `${hardwareShim}\n${noSpeedProbeShim}\n${bindingLimitShim(16 << 10)}`, (p) => p.evaluate(async (url) => {
      const out = {};
      for (const backend of ['webgpu', 'auto']) {
        try {
          const engine = await window.Hearth.load(url, { backend, cache: false });
          const tokens = [];
          for await (const t of engine.generate('The', { max_tokens: 4 })) tokens.push(t.token);
          out[backend] = { backend: engine.info.backend, why: engine.info.fallbackReason, tokens: tokens.length };
          engine.dispose();
        } catch (e) {
          out[backend] = { code: e.code, message: e.message };
        }
      }
      return out;
  }, `${models.url}/model.gguf`));
  assert.equal(r.webgpu.code, 'too_large', JSON.stringify(r));
  assert.match(r.webgpu.message, /KV cache .* one binding; this device allows 16384/);
  assert.deepEqual({ ...r.auto, why: undefined }, { backend: 'cpu', why: undefined, tokens: 4 });
  assert.match(r.auto.why, /KV cache/);
});

test('running out of GPU memory while loading frees what the load allocated; auto goes on on the CPU; a smaller model loads after', async () => {
  // 4 MiB of GPU memory: the llama fixture fits, the 152k-token Qwen2 one does not.
  const r = await withWorkerShim(browser, `${hardwareShim}\n${noSpeedProbeShim}\n${memoryShim(4 << 20)}`, (p) => p.evaluate(async ({ big, small }) => {
      let live = null;
      const channel = new BroadcastChannel('gpu-memory');
      channel.onmessage = (e) => { live = e.data; };
      const settled = () => new Promise((resolve) => setTimeout(resolve, 300));
      const out = {};
      try {
        (await window.Hearth.load(big, { backend: 'webgpu', cache: false })).dispose();
        out.webgpu = 'loaded';
      } catch (e) {
        out.webgpu = e.code;
      }
      const auto = await window.Hearth.load(big, { backend: 'auto', cache: false });
      await settled();
      out.auto = { backend: auto.info.backend, why: auto.info.fallbackReason, gpuBytes: live };
      auto.dispose();
      const engine = await window.Hearth.load(small, { backend: 'webgpu', cache: false });
      const tokens = [];
      for await (const t of engine.generate('The', { max_tokens: 4 })) tokens.push(t.token);
      out.small = { backend: engine.info.backend, tokens: tokens.length };
      engine.dispose();
      channel.close();
      return out;
  }, { big: `${models.url}/qwen2.gguf`, small: `${models.url}/model.gguf` }));
  assert.equal(r.webgpu, 'out_of_memory');
  assert.equal(r.auto.backend, 'cpu');
  assert.match(r.auto.why, /out of memory/);
  // Every buffer of the failed load (and of the device's self-test) is destroyed.
  assert.equal(r.auto.gpuBytes, 0);
  assert.deepEqual(r.small, { backend: 'webgpu', tokens: 4 });
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

test('a quota reached midway through a download keeps the cache whole; the next load goes on from it', async () => {
  const cdp = await page.context().newCDPSession(page);
  const origin = new URL(app.url).origin;
  const url = `${models.url}/qwen2.gguf`;
  const entry = () => page.evaluate(async (u) => (await window.Hearth.cache.list()).find((e) => e.url === u), url);
  const want = await greedyTokens(page, url, { backend: 'cpu', cache: false });
  // Room for about half of the 11 MB file.
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 6 << 20 });
  try {
    assert.equal(await loadCode(url, { backend: 'cpu' }), 'quota_exceeded');
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  }
  const kept = await entry();
  assert.ok(kept && kept.cachedBytes > 0 && !kept.complete, JSON.stringify(kept));
  const before = models.state.requests.length;
  assert.deepEqual(await greedyTokens(page, url, { backend: 'cpu' }), want);
  // What was cached is read back (each segment checked), not fetched again.
  const fetched = models.state.requests.slice(before).filter((r) => r.path === '/qwen2.gguf' && !r.range.startsWith('bytes=0-'));
  const bytes = fetched.reduce((n, r) => { const [a, b] = /(\d+)-(\d+)/.exec(r.range).slice(1).map(Number); return n + b - a + 1; }, 0);
  const size = readFileSync(join(dir, 'qwen2.gguf')).length;
  assert.ok(bytes <= size - kept.cachedBytes, `fetched ${bytes} of ${size} with ${kept.cachedBytes} cached`);
  assert.equal((await entry()).complete, true);
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
        const options = { max_tokens: 4000, logit_bias: { [LONG_EOS]: -100 } };
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
