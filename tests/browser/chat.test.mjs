// End-to-end: the npm package in headless Chromium (system build, SwiftShader WebGPU), loading
// fixture models from local static servers. Needs pkg/wasm (scripts/build-wasm.sh) and
// target/release/hearth (the reference for greedy output). One browser page serves every test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync, rmSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../../scripts/serve.mjs';
import { launch, testPage, greedyTokens, cliBackend } from './chromium.mjs';
import { gguf, llamaWithType, splitGguf, withChatTemplate } from './gguf.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEARTH = join(ROOT, 'target/release/hearth');
const PROMPT = 'The quick brown fox';
const STEPS = 12;

let dir, app, models, noCors, noRange, browser, page;

const fixture = (name) => gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models', `${name}.gguf.gz`)));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hearth-browser-'));
  // The smallest fixture (512-token SentencePiece vocabulary), given a chat template that
  // writes BOS itself, so every test runs on WebGPU in seconds.
  writeFileSync(join(dir, 'model.gguf'), withChatTemplate(fixture('llama-spm.q8_0')));
  copyFileSync(join(dir, 'model.gguf'), join(dir, 'resume.gguf'));
  splitGguf(readFileSync(join(dir, 'model.gguf')), 3)
    .forEach((part, i) => writeFileSync(join(dir, `split-0000${i + 1}-of-00003.gguf`), part));
  // A real Qwen2 chat template and 151,936-token vocabulary.
  writeFileSync(join(dir, 'qwen2.gguf'), fixture('qwen2-tiny.q8_0'));
  copyFileSync(join(dir, 'qwen2.gguf'), join(dir, 'shared.gguf'));
  writeFileSync(join(dir, 'page.html'), '<!doctype html><title>not a model</title>'.repeat(100));
  writeFileSync(join(dir, 'mamba.gguf'), gguf({ 'general.architecture': 'mamba' }, []));
  // Type 16 is IQ2_XXS: 66 bytes per 256 values, and no decoder here.
  writeFileSync(join(dir, 'iq2.gguf'), llamaWithType(16, 66));
  app = await serve(ROOT);
  models = await serve(dir);
  noCors = await serve(dir, { cors: false });
  noRange = await serve(dir, { range: false });
  browser = await launch();
  page = await testPage(browser, app.url, { logErrors: true });
});

after(async () => {
  await browser?.close();
  await Promise.all([app, models, noCors, noRange].filter(Boolean).map((s) => s.close()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Loads `url` in the page, greedy-generates STEPS tokens after PROMPT, and returns what came. */
function loadAndGenerate(url, options = {}) {
  return page.evaluate(async ({ url, options, prompt, steps }) => {
    const progress = [];
    const engine = await window.Hearth.load(url, { ...options, onProgress: (p) => progress.push(p) });
    const promptTokens = await engine.tokenize(prompt);
    const tokens = [];
    let text = '';
    for await (const t of engine.generate(prompt, { max_tokens: steps })) {
      tokens.push(t.token);
      text += t.text;
    }
    const info = engine.info;
    engine.dispose();
    return { progress, promptTokens, tokens, text, info };
  }, { url, options, prompt: PROMPT, steps: STEPS });
}

/** The CLI's greedy continuation of PROMPT on `backend` (see cliBackend): { tokens, generated, text }. */
function reference(backend = 'webgpu') {
  const out = execFileSync(HEARTH, [
    'generate', '--model', join(dir, 'model.gguf'), '--prompt', PROMPT, '--max-tokens', String(STEPS), '--json',
    '--backend', cliBackend(backend),
  ]);
  return JSON.parse(out.toString());
}

/** `hearth chat`'s greedy replies to `lines` (user messages, one turn each), as it prints them. */
function chatReference(model, lines, maxTokens, backend) {
  const args = ['chat', '--model', join(dir, model), '--max-tokens', String(maxTokens), '--backend', cliBackend(backend)];
  return execFileSync(HEARTH, args, {
    input: lines.map((l) => `${l}\n`).join(''),
  }).toString();
}

let first;

test('loads over Range requests and streams the native greedy continuation', async () => {
  first = await loadAndGenerate(`${models.url}/model.gguf`, { backend: 'webgpu' });
  const want = reference();
  assert.equal(first.info.backend, 'webgpu', `fell back to the CPU: ${first.info.fallbackReason}`);
  assert.deepEqual(first.promptTokens, want.tokens);
  assert.deepEqual(first.tokens, want.generated);
  assert.equal(first.text, want.text);
  const modelRequests = models.state.requests.filter((r) => r.path === '/model.gguf');
  assert.ok(modelRequests.every((r) => r.range !== null), 'every model request is ranged');
  // Progress only moves forward, and each phase ends at its total.
  const rank = (p) => ['download', 'load'].indexOf(p.phase);
  for (let i = 1; i < first.progress.length; i++) {
    const [a, b] = [first.progress[i - 1], first.progress[i]];
    assert.ok(rank(b) > rank(a) || (rank(b) === rank(a) && b.loaded > a.loaded), JSON.stringify([a, b]));
  }
  for (const phase of ['download', 'load']) {
    const last = first.progress.filter((p) => p.phase === phase).at(-1);
    assert.ok(last, `no ${phase} progress`);
    assert.equal(last.loaded, last.total, `${phase} progress ends at its total`);
  }
  assert.equal(first.progress.at(-1).total, first.info.weightBytes);
  assert.equal(first.info.architecture, 'llama');
  assert.equal(first.info.quantization, 'Q8_0');
  assert.equal(first.info.chatTemplate, true);
});

test('auto runs on the CPU where the WebGPU adapter is software (SwiftShader), and says why', async () => {
  const r = await loadAndGenerate(`${models.url}/model.gguf`, { cache: false });
  assert.equal(r.info.backend, 'cpu');
  assert.match(r.info.fallbackReason, /software renderer/);
  const want = reference('cpu');
  assert.deepEqual(r.tokens, want.generated);
  assert.equal(r.text, want.text);
});

test('a model split in three files (gguf-split) loads from its list of URLs', async () => {
  const urls = [1, 2, 3].map((i) => `${models.url}/split-0000${i}-of-00003.gguf`);
  const r = await loadAndGenerate(urls, { cache: false, backend: 'webgpu' });
  assert.equal(r.info.backend, 'webgpu');
  for (const u of urls) {
    const path = new URL(u).pathname;
    assert.ok(models.state.requests.filter((q) => q.path === path).length >= 2, `${path}: its header and tensors were read`);
  }
  assert.deepEqual(r.tokens, first.tokens);
  assert.equal(r.text, first.text);
});

test('the package works the same inside a worker', async () => {
  const r = await page.evaluate(({ url, prompt, steps }) => new Promise((resolve) => {
    const w = new Worker('/tests/browser/in-worker.mjs', { type: 'module' });
    w.onmessage = ({ data }) => { w.terminate(); resolve(data); };
    w.onerror = (e) => resolve({ error: e.message });
    w.postMessage({ url, prompt, steps });
  }), { url: `${models.url}/model.gguf`, prompt: PROMPT, steps: STEPS });
  assert.equal(r.error, undefined);
  assert.equal(r.backend, 'webgpu');
  assert.deepEqual(r.tokens, first.tokens);
});

test('sampling with top_k on WebGPU (reading back the best tokens only) equals `hearth generate`', async () => {
  const sampling = { temperature: 0.9, top_k: 40, top_p: 0.95, seed: 7 };
  const r = await page.evaluate(async ({ url, prompt, steps, sampling }) => {
    const engine = await window.Hearth.load(url, { backend: 'webgpu' });
    const tokens = [];
    for await (const t of engine.generate(prompt, { max_tokens: steps, ...sampling })) tokens.push(t.token);
    const backend = engine.info.backend;
    engine.dispose();
    return { tokens, backend };
  }, { url: `${models.url}/model.gguf`, prompt: PROMPT, steps: STEPS, sampling });
  assert.equal(r.backend, 'webgpu');
  const want = JSON.parse(execFileSync(HEARTH, [
    'generate', '--model', join(dir, 'model.gguf'), '--prompt', PROMPT, '--max-tokens', String(STEPS),
    '--temperature', '0.9', '--top-k', '40', '--top-p', '0.95', '--seed', '7', '--backend', 'cpu-reference', '--json',
  ]).toString());
  assert.deepEqual(r.tokens, want.generated);
});

test('chat completions: streamed chunks, usage, prefix reuse, and abort midway', async () => {
  const MAX = 8;
  const r = await page.evaluate(async ({ url, MAX }) => {
    const engine = await window.Hearth.load(url, { backend: 'webgpu' });
    const messages = [{ role: 'user', content: 'Hello there' }];
    const stream = await engine.chat.completions.create({ messages, stream: true, temperature: 0, max_tokens: MAX });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const text = chunks.map((c) => c.choices[0].delta.content ?? '').join('');
    const whole = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: MAX });
    const next = await engine.chat.completions.create({
      messages: [...messages, { role: 'assistant', content: text }, { role: 'user', content: 'And then?' }],
      temperature: 0, max_tokens: MAX,
    });
    const controller = new AbortController();
    let got = 0;
    let abortCode = null;
    try {
      const s = await engine.chat.completions.create({ messages, stream: true, max_tokens: 200, seed: 1, signal: controller.signal });
      for await (const c of s) {
        if (!c.choices[0]?.delta.content || ++got < 3) continue;
        // Let more tokens arrive from the worker first: the abort must drop them too.
        await new Promise((resolve) => setTimeout(resolve, 500));
        controller.abort();
      }
    } catch (e) {
      abortCode = e.code;
    }
    const after = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: MAX });
    const backend = engine.info.backend;
    engine.dispose();
    return { chunks, text, whole, next, abortCode, got, after, backend };
  }, { url: `${models.url}/model.gguf`, MAX });
  assert.equal(r.backend, 'webgpu');
  const want = chatReference('model.gguf', ['Hello there', 'And then?'], MAX, 'webgpu');
  assert.equal(`${r.text}\n${r.next.choices[0].message.content}\n`, want, 'both turns equal `hearth chat`');
  assert.equal(r.chunks[0].object, 'chat.completion.chunk');
  assert.equal(r.chunks[0].choices[0].delta.role, 'assistant');
  const last = r.chunks.at(-1);
  assert.equal(last.choices[0].finish_reason, last.usage.completion_tokens === MAX ? 'length' : 'stop');
  assert.ok(last.usage.completion_tokens <= MAX);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  assert.equal(r.whole.object, 'chat.completion');
  assert.equal(r.whole.choices[0].message.content, r.text, 'streamed and whole answers agree');
  // The same prompt again runs only its last token.
  assert.equal(r.whole.usage.prompt_tokens_details.cached_tokens, r.whole.usage.prompt_tokens - 1);
  // The next turn extends the first (its last token may merge with the reply's first).
  assert.ok(r.next.usage.prompt_tokens_details.cached_tokens >= r.whole.usage.prompt_tokens - 1, 'the next turn reuses the first');
  assert.equal(r.abortCode, 'aborted');
  assert.equal(r.got, 3, 'no chunk arrives after the abort');
  assert.equal(r.after.choices[0].message.content, r.text, 'the engine is usable after an abort');
});

test('chat with a real Qwen2 template and vocabulary equals `hearth chat`', async () => {
  const MAX = 8;
  const r = await page.evaluate(async ({ url, MAX }) => {
    // The CPU backend: this vocabulary's output head is slow on a software WebGPU device.
    const engine = await window.Hearth.load(url, { backend: 'cpu', cache: false });
    const reply = await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Hello there' }], temperature: 0, max_tokens: MAX,
    });
    engine.dispose();
    return reply;
  }, { url: `${models.url}/qwen2.gguf`, MAX });
  assert.equal(`${r.choices[0].message.content}\n`, chatReference('qwen2.gguf', ['Hello there'], MAX, 'cpu'));
  assert.ok(r.usage.completion_tokens > 0);
});

test('reloads from the cache with the server stopped, forced onto the CPU', async () => {
  const cached = await page.evaluate(() => window.Hearth.cache.list());
  assert.ok(cached.some((e) => e.url.endsWith('/model.gguf')));
  const url = `${models.url}/model.gguf`;
  await models.close();
  const again = await loadAndGenerate(url, { backend: 'cpu' });
  assert.equal(again.info.backend, 'cpu');
  assert.deepEqual(again.tokens, first.tokens);
  assert.equal(again.text, first.text);
  const offline = await page.evaluate(async (u) => {
    try { await window.Hearth.load(u); return null; } catch (e) { return e.code; }
  }, url.replace('model.gguf', 'resume.gguf'));
  assert.equal(offline, 'network');
  models = await serve(dir);
});

/** [first, last] byte of a request's Range header. */
const rangeOf = (request) => /^bytes=(\d+)-(\d+)$/.exec(request.range).slice(1).map(Number);

test('two tabs loading one URL at once download it once; bytes altered in the cache are fetched again', async () => {
  const url = `${models.url}/shared.gguf`;
  // Two tabs of one profile: they share the cache.
  const context = await browser.newContext();
  const [tab, other] = await Promise.all([0, 1].map(async () => {
    const p = await context.newPage();
    await p.goto(`${app.url}/tests/browser/page.html`);
    await p.waitForFunction(() => window.ready === true);
    return p;
  }));
  const loadIn = (p) => greedyTokens(p, url, { backend: 'cpu' }, 'Hello there');
  const requests = () => models.state.requests.filter((r) => r.path === '/shared.gguf');
  try {
    const [a, b] = await Promise.all([loadIn(tab), loadIn(other)]);
    assert.deepEqual(a, b);
    // Each tab's opening request (from byte 0); past them, the file was asked for once: the
    // second load waited for the first and read the cache it filled. (One load may ask again
    // for bytes past where it stopped reading a response, so what is asked for is bounded by
    // less than two downloads of the file, not by one.)
    const later = requests().filter((r) => !r.range.startsWith('bytes=0-')).map(rangeOf);
    assert.equal(requests().length - later.length, 2);
    assert.ok(later.length > 0);
    const once = statSync(join(dir, 'shared.gguf')).size - (1 << 20);
    const asked = later.reduce((n, [a, b]) => n + b - a + 1, 0);
    assert.ok(asked < 2 * once, `the file was fetched twice: ${JSON.stringify(later)}`);
    const entries = (await tab.evaluate(() => window.Hearth.cache.list())).filter((e) => e.url === url);
    assert.equal(entries.length, 1);

    // One byte changed on disk: its megabyte is fetched again, and the output is the same.
    await tab.evaluate(async (u) => {
      const key = [...new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(u)))]
        .map((x) => x.toString(16).padStart(2, '0')).join('');
      const root = await navigator.storage.getDirectory();
      const file = await (await root.getDirectoryHandle('hearth-cache')).getFileHandle(`${key}.bin`);
      const at = 5_000_000;
      const byte = new Uint8Array(await (await file.getFile()).slice(at, at + 1).arrayBuffer());
      const w = await file.createWritable({ keepExistingData: true });
      await w.write({ type: 'write', position: at, data: Uint8Array.of(byte[0] ^ 0xff) });
      await w.close();
    }, url);
    const before = requests().length;
    assert.deepEqual(await loadIn(tab), a);
    const again = requests().slice(before);
    assert.deepEqual(again.map((r) => r.range).slice(1), [`bytes=${4 << 20}-${(5 << 20) - 1}`]);
  } finally {
    await context.close();
  }
});

test('resumes a download whose connection broke midway', async () => {
  // The tensors' request (after the header's, from byte 0) is cut 50 kB in.
  Object.assign(models.state, { dropAfter: 50_000, dropFrom: 1 });
  const r = await loadAndGenerate(`${models.url}/resume.gguf`, { cache: false, backend: 'cpu' });
  assert.equal(models.state.dropAfter, null, 'the connection was cut');
  const starts = models.state.requests.filter((q) => q.path === '/resume.gguf')
    .map((q) => Number(/^bytes=(\d+)-/.exec(q.range)[1]));
  assert.equal(starts.length, 3, `the header, the tensors, then the rest: ${starts}`);
  assert.ok(starts[2] >= starts[1] + 50_000, `resumed where the cut left off: ${starts}`);
  assert.deepEqual(r.tokens, first.tokens);
  assert.equal(r.text, first.text);
});

test('works with a server that has no Range support', async () => {
  const r = await loadAndGenerate(`${noRange.url}/model.gguf`, { cache: false, backend: 'cpu' });
  assert.deepEqual(r.tokens, first.tokens);
  // The header and the tensors come from one streamed body.
  assert.equal(noRange.state.requests.filter((q) => q.path === '/model.gguf').length, 1);
});

test('bad inputs give error codes', async () => {
  const cases = [
    [`${models.url}/missing.gguf`, 'not_found'],
    [`${noCors.url}/model.gguf`, 'cors'],
    [`${models.url}/page.html`, 'not_gguf'],
    [`${models.url}/mamba.gguf`, 'unsupported_architecture'],
    [`${models.url}/iq2.gguf`, 'unsupported_quantization'],
  ];
  const codes = await page.evaluate(async (cases) => {
    const out = [];
    for (const [url] of cases) {
      try { (await window.Hearth.load(url, { cache: false })).dispose(); out.push(null); }
      catch (e) { out.push(e instanceof window.HearthError ? e.code : `not a HearthError: ${e}`); }
    }
    const controller = new AbortController();
    controller.abort();
    try { await window.Hearth.load(cases[0][0], { signal: controller.signal }); out.push(null); }
    catch (e) { out.push(e.code); }
    // With the cache on, a failed load leaves no empty entry behind.
    try { await window.Hearth.load(cases[0][0]); } catch (e) { out.push(e.code); }
    const left = (await window.Hearth.cache.list()).filter((e) => e.url === cases[0][0]);
    out.push(left.length);
    return out;
  }, cases);
  assert.deepEqual(codes, [...cases.map(([, c]) => c), 'aborted', 'not_found', 0]);
});

test('an unknown architecture\'s error lists what Hearth runs: the CLI\'s list, also given by Hearth.architectures()', async () => {
  const r = await page.evaluate(async (url) => {
    let error = null;
    try { (await window.Hearth.load(url, { cache: false })).dispose(); }
    catch (e) { error = { code: e.code, architecture: e.architecture, supported: e.supported, wire: e.toJSON() }; }
    return { error, listed: await window.Hearth.architectures() };
  }, `${models.url}/mamba.gguf`);
  // `hearth inspect` reads the same list in hearth-core: "cannot run: ... (supported: a, b)".
  const inspect = execFileSync(HEARTH, ['inspect', join(dir, 'mamba.gguf')]).toString();
  const names = /\(supported: ([^)]+)\)/.exec(inspect)?.[1].split(', ');
  assert.ok(names?.length > 1, inspect);
  assert.equal(r.error.code, 'unsupported_architecture');
  assert.equal(r.error.architecture, 'mamba');
  assert.deepEqual(r.error.supported.map((a) => a.name), names);
  for (const a of r.error.supported) assert.ok(typeof a.models === 'string' && a.models.trim() !== '', JSON.stringify(a));
  assert.deepEqual(r.error.wire.supported, r.error.supported, 'the list survives postMessage');
  assert.deepEqual(r.listed, r.error.supported);
});
