// End-to-end: the demo page (www/) in headless Chromium (system build, SwiftShader WebGPU),
// served from 127.0.0.1 by scripts/serve.mjs, driven only through its DOM: the bundled model
// loads on open, replies stream in, Stop stops, a local file loads, the CPU takes over without
// WebGPU, and errors read as the page's friendly text. Needs pkg/wasm (scripts/build-wasm.sh),
// the bundled model www/models/shakespeare.q8_0.gguf and target/release/hearth (the list of
// architectures). Screenshots go to target/artifacts/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../../scripts/serve.mjs';
import { gguf, withChatTemplate } from './gguf.mjs';
import { ERROR_TEXT, errorText } from '../../www/error-text.js';
import { ERROR_CODES } from '../../pkg/errors.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MODEL = join(ROOT, 'www/models/shakespeare.q8_0.gguf');
const HEARTH = join(ROOT, 'target/release/hearth');
const ARTIFACTS = join(ROOT, 'target/artifacts');
const FLAGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const WAIT = { timeout: 90_000 };
// Short: prompts run a token at a time on SwiftShader, about a second each.
const PROMPT = 'What news?';

let dir, app, models, stall, browser, page, bundledChats;

const launch = (webgpu) => chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : [...FLAGS, '--disable-webgpu'],
});

async function newPage(b) {
  const p = await b.newPage({ viewport: { width: 1280, height: 800 } });
  p.on('pageerror', (e) => console.error('[page]', e.message));
  p.on('console', (m) => {
    // The bundled model may ship without its training record (models/shakespeare.json).
    if (m.type() === 'error' && !/404 \(Not Found\)/.test(m.text())) console.error('[page]', m.text());
  });
  // Test instrumentation: the load phases the progress bar went through.
  await p.addInitScript(() => {
    window.__phases = [];
    new MutationObserver(() => {
      const bar = document.querySelector('[data-testid=progress]');
      const phase = bar && !bar.hidden && bar.dataset.phase;
      const text = document.getElementById('progress-text')?.textContent;
      if (phase && window.__phases.at(-1)?.text !== text) window.__phases.push({ phase, text });
    }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
  });
  return p;
}

const state = (p) => p.evaluate(() => document.body.dataset.state);
const text = (p, id) => p.locator(`[data-testid=${id}]`).innerText();

/** Waits until the page settles after a load; fails with the page's error text if it did not load. */
async function loaded(p) {
  await p.waitForFunction(() => ['ready', 'error', 'idle'].includes(document.body.dataset.state), null, WAIT);
  if ((await state(p)) !== 'ready') assert.fail(`the model did not load: ${await text(p, 'error')}`);
}

async function open(p, query = '') {
  await p.goto(`${app.url}/www/${query}`);
  await loaded(p);
}

/** Records every distinct text of the newest reply bubble, as the DOM changes. */
function watchReplies(p) {
  return p.evaluate(() => {
    window.__seen?.observer.disconnect();
    const log = document.querySelector('[data-testid=log]');
    const seen = { values: [] };
    seen.observer = new MutationObserver(() => {
      const bodies = log.querySelectorAll('[data-testid=message-assistant] [data-testid=message-text]');
      const t = bodies.length ? bodies[bodies.length - 1].textContent : '';
      if (t && t !== seen.values.at(-1)) seen.values.push(t);
    });
    seen.observer.observe(log, { subtree: true, childList: true, characterData: true });
    window.__seen = seen;
  });
}
const seen = (p) => p.evaluate(() => window.__seen.values);

function assertGrowing(values) {
  for (let i = 1; i < values.length; i++) {
    assert.ok(values[i].startsWith(values[i - 1]) && values[i].length > values[i - 1].length,
      `reply text did not grow: ${JSON.stringify(values[i - 1])} -> ${JSON.stringify(values[i])}`);
  }
}

async function setField(p, id, value) {
  await p.locator('#settings').evaluate((d) => { d.open = true; });
  await p.fill(`[data-testid=${id}]`, String(value));
}

/** Sends `prompt` with the keyboard and waits for the reply to end; returns the texts seen. */
async function ask(p, prompt) {
  await watchReplies(p);
  await p.fill('[data-testid=prompt]', prompt);
  const replies = () => p.locator('[data-testid=message-assistant]').count();
  const before = await replies();
  await p.press('[data-testid=prompt]', 'Enter');
  // Sending is synchronous up to the request: the reply's bubble is there by now (on the CPU a
  // short reply may even be over).
  await p.waitForFunction(() => document.body.dataset.state === 'ready', null, WAIT);
  assert.equal(await replies(), before + 1, 'Enter did not send');
  return seen(p);
}

before(async () => {
  assert.ok(existsSync(MODEL), `${MODEL} is missing: the page's bundled model`);
  const bytes = readFileSync(MODEL);
  // Whether the bundled model has a chat template decides the page's mode (chat or raw).
  bundledChats = bytes.subarray(0, 4 << 20).includes('tokenizer.chat_template');
  dir = mkdtempSync(join(tmpdir(), 'hearth-demo-'));
  // For the drop test, a model of the other mode: the SentencePiece fixture, with or without a
  // chat template.
  const fixture = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
  writeFileSync(join(dir, 'other.gguf'), bundledChats ? fixture : withChatTemplate(fixture));
  writeFileSync(join(dir, 'mamba.gguf'), gguf({ 'general.architecture': 'mamba' }, []));
  mkdirSync(ARTIFACTS, { recursive: true });
  app = await serve(ROOT);
  models = await serve(dir);
  // A server that takes requests and never answers: a download that hangs.
  stall = createServer((req, res) => {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'Range');
    if (req.method === 'OPTIONS') res.writeHead(204).end();
  });
  await new Promise((resolve) => stall.listen(0, '127.0.0.1', resolve));
  browser = await launch(true);
  page = await newPage(browser);
});

after(async () => {
  await browser?.close();
  await Promise.all([app, models].filter(Boolean).map((s) => s.close()));
  stall?.closeAllConnections();
  stall?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('every HearthError code has its own text on the page; only "aborted" is silent', () => {
  assert.deepEqual(Object.keys(ERROR_TEXT).sort(), [...ERROR_CODES].sort());
  for (const code of ERROR_CODES) assert.equal(ERROR_TEXT[code] === '', code === 'aborted', code);
  assert.match(errorText({ code: 'http_error', status: 503 }), /HTTP 503/);
});

test('the bundled model loads on page open, with download progress, on the CPU where the adapter is software', async () => {
  await open(page);
  // SwiftShader is a software adapter: auto takes the faster CPU engine and says why.
  assert.match(await text(page, 'fig-backend'), /^CPU[\s\S]*WebGPU not used: the WebGPU adapter is a software renderer/);
  assert.match(await text(page, 'fig-memory'), /\d+(\.\d+)? (kB|MB|GB)/);
  assert.match(await text(page, 'fig-context'), /^0 \/ \d+$/);
  assert.equal(await page.getAttribute('[data-testid=model-status]', 'data-from'), 'network');
  assert.equal(await page.evaluate(() => document.body.dataset.mode), bundledChats ? 'chat' : 'raw');
  assert.equal(await page.isVisible('[data-testid=mode-note]'), !bundledChats);
  const phases = await page.evaluate(() => window.__phases);
  assert.ok(phases.some((p) => p.phase === 'download' && / of /.test(p.text)), JSON.stringify(phases));
  assert.ok(phases.some((p) => p.phase === 'load'), JSON.stringify(phases));
  assert.ok(await page.isHidden('[data-testid=progress]'));
});

test('keyboard: Shift+Enter is a new line, Enter sends; the reply streams in', async () => {
  await setField(page, 'max-tokens', 5);
  let values = [];
  // A reply may end early (a short speech); another seed gives another reply.
  for (let seed = 1; seed <= 6 && values.length < 3; seed++) {
    await page.click('[data-testid=new-chat]');
    await setField(page, 'seed', seed);
    await page.focus('[data-testid=prompt]');
    await page.keyboard.type('Good morrow.');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('What news?');
    assert.equal(await page.inputValue('[data-testid=prompt]'), 'Good morrow.\nWhat news?');
    assert.equal(await state(page), 'ready');
    assert.equal(await page.locator('[data-testid=message-user]').count(), 0);
    await watchReplies(page);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, WAIT);
    values = await seen(page);
  }
  assert.ok(values.length >= 3, `the reply came in ${values.length} DOM updates: ${JSON.stringify(values)}`);
  assertGrowing(values);
  assert.equal(await page.inputValue('[data-testid=prompt]'), '');
  assert.equal(await page.locator('[data-testid=message-user] [data-testid=message-text]').innerText(), 'Good morrow.\nWhat news?');
  assert.equal(await page.locator('[data-testid=message-assistant] [data-testid=message-text]').innerText(), values.at(-1));
  assert.match(await text(page, 'fig-prompt'), /tok\/s$/);
  assert.match(await text(page, 'fig-gen'), /tok\/s$/);
  assert.doesNotMatch(await text(page, 'fig-context'), /^0 \//);
  assert.ok(await page.isHidden('[data-testid=error]'));

  await page.click('[data-testid=new-chat]');
  await page.waitForFunction(() => /^0 \//.test(document.querySelector('[data-testid=fig-context]').textContent), null, WAIT);
  assert.equal(await page.locator('[data-testid=log] li').count(), 0);
});

test('a reply held to a JSON schema is data: it parses and keeps to the schema; a schema that is not JSON is said so', async () => {
  await page.click('[data-testid=new-chat]');
  await setField(page, 'max-tokens', 80);
  await setField(page, 'seed', 3);
  await page.selectOption('[data-testid=reply-format]', 'json_schema');
  assert.ok(await page.isVisible('[data-testid=schema]'));
  const schema = JSON.parse(await page.inputValue('[data-testid=schema]'));
  await ask(page, 'Who speaks, and how?');
  const reply = await page.locator('[data-testid=message-assistant] [data-testid=message-text]').innerText();
  const value = JSON.parse(reply);
  assert.deepEqual(Object.keys(value), schema.required);
  assert.ok(value.speaker.length <= 20 && schema.properties.mood.enum.includes(value.mood), reply);
  assert.ok(Number.isInteger(value.lines) && value.lines >= 1 && value.lines <= 9, reply);
  assert.ok(await page.isHidden('[data-testid=error]'));

  await page.fill('[data-testid=schema]', '{ not json');
  await page.fill('[data-testid=prompt]', 'Again?');
  await page.press('[data-testid=prompt]', 'Enter');
  await page.waitForSelector('[data-testid=error]:visible');
  assert.match(await page.locator('#error-detail').innerText(), /not JSON/);
  assert.equal(await page.inputValue('[data-testid=prompt]'), 'Again?');
  await page.selectOption('[data-testid=reply-format]', 'text');
  assert.ok(await page.isHidden('[data-testid=schema]'));
  await page.fill('[data-testid=prompt]', '');
});

test('Stop ends a long generation and the text stops growing', async () => {
  // On WebGPU (?backend=): SwiftShader is slow enough that a reply is still coming when Stop is
  // pressed; the CPU writes this small model's 1000 tokens in moments.
  await open(page, '?backend=webgpu');
  assert.match(await text(page, 'fig-backend'), /^WebGPU/);
  await setField(page, 'max-tokens', 1000);
  let stopped = false;
  // Seeds from 3: with 1 and 2 the bundled model's first speech is over in a few tokens.
  for (let seed = 3; seed <= 9 && !stopped; seed++) {
    await page.click('[data-testid=new-chat]');
    await setField(page, 'seed', seed);
    await watchReplies(page);
    await page.fill('[data-testid=prompt]', PROMPT);
    await page.click('[data-testid=send]');
    await page.waitForFunction(() => window.__seen.values.length >= 3 || document.body.dataset.state === 'ready', null, WAIT);
    if ((await state(page)) !== 'generating') continue; // ended by itself: try another seed
    await page.screenshot({ path: join(ARTIFACTS, 'demo-generating.png') });
    // Press Stop only if the reply is still coming (checked and clicked in one step).
    stopped = await page.evaluate(() => {
      if (document.body.dataset.state !== 'generating') return false;
      document.querySelector('[data-testid=stop]').click();
      return true;
    });
  }
  assert.ok(stopped, 'no generation was still running to stop');
  await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 5000 });
  const reply = page.locator('[data-testid=message-assistant]').last();
  const atStop = await reply.locator('[data-testid=message-text]').innerText();
  await page.waitForTimeout(1000);
  assert.equal(await reply.locator('[data-testid=message-text]').innerText(), atStop, 'text grew after Stop');
  assert.match(await reply.innerText(), /stopped/);
  assert.ok(await page.isHidden('[data-testid=stop]'));
  assert.ok(await page.isHidden('[data-testid=error]'), 'Stop shows no error');
  assert.ok(atStop.length > 0);
  // The chat goes on after a stop.
  await setField(page, 'max-tokens', 2);
  const next = await ask(page, 'On.');
  assert.ok(next.length >= 1, 'no reply after the stop');
});

test('a second visit loads the weights from the download cache, which can be emptied', async () => {
  await open(page);
  assert.equal(await page.getAttribute('[data-testid=model-status]', 'data-from'), 'cache');
  assert.match(await text(page, 'model-status'), /from the download cache/);
  await page.click('#cache summary');
  const entry = page.locator('[data-testid=cache-list] li', { hasText: 'shakespeare.q8_0.gguf' });
  await entry.waitFor(WAIT);
  await entry.getByRole('button', { name: /Delete/ }).click();
  await page.locator('[data-testid=cache-list]', { hasText: 'Nothing is cached' }).waitFor(WAIT);
});

test('a local file loads through the file input, on WebGPU when chosen', async () => {
  await page.selectOption('[data-testid=backend]', 'webgpu');
  await page.setInputFiles('[data-testid=model-file]', MODEL);
  await loaded(page);
  assert.equal(await page.getAttribute('[data-testid=model-status]', 'data-from'), 'file');
  assert.match(await text(page, 'model-status'), /read from your device/);
  assert.match(await text(page, 'fig-backend'), /^WebGPU/);
  await setField(page, 'max-tokens', 6);
  const values = await ask(page, PROMPT);
  assert.ok(values.length >= 1, 'no reply from the local file');
  assertGrowing(values);
  await page.selectOption('[data-testid=backend]', 'auto');
});

test('a file dropped on the page loads, in the other mode (chat, or raw continuation)', async () => {
  // A File built in the page from the model's bytes, dropped on the page.
  const transfer = await page.evaluateHandle(async (url) => {
    const bytes = await (await fetch(url)).arrayBuffer();
    const t = new DataTransfer();
    t.items.add(new File([bytes], 'other.gguf'));
    return t;
  }, `${models.url}/other.gguf`);
  await page.dispatchEvent('body', 'dragenter', { dataTransfer: transfer });
  assert.ok(await page.isVisible('#drop'), 'no drop target shown');
  await page.dispatchEvent('body', 'drop', { dataTransfer: transfer });
  await loaded(page);
  assert.ok(await page.isHidden('#drop'));
  assert.match(await text(page, 'model-status'), /read from your device/);
  const chats = !bundledChats;
  assert.equal(await page.evaluate(() => document.body.dataset.mode), chats ? 'chat' : 'raw');
  assert.equal(await page.isVisible('[data-testid=mode-note]'), !chats);
  await setField(page, 'max-tokens', 6);
  const values = await ask(page, 'The quick brown fox');
  assert.ok(values.length >= 1, 'no reply');
  assertGrowing(values);
  assert.match(await page.locator('[data-testid=message-assistant] .who').innerText(), chats ? /model/i : /continuation/i);
});

test('a ?model= link loads that URL; Cancel stops a load that hangs, quietly', async () => {
  const url = `http://127.0.0.1:${stall.address().port}/hangs.gguf`;
  await page.goto(`${app.url}/www/?model=${encodeURIComponent(url)}`);
  await page.waitForFunction(() => document.body.dataset.state === 'loading', null, WAIT);
  assert.equal(await page.inputValue('[data-testid=model-url]'), url);
  assert.ok(await page.isVisible('[data-testid=progress]'));
  await page.click('#cancel-load');
  await page.waitForFunction(() => document.body.dataset.state === 'idle', null, { timeout: 5000 });
  assert.ok(await page.isHidden('[data-testid=error]'), 'a cancelled load shows no error');
  assert.match(await text(page, 'model-status'), /cancelled/i);
  assert.ok(await page.isDisabled('[data-testid=send]'));
});

test('a typed URL that is not there reads as the friendly not_found text', async () => {
  await page.fill('[data-testid=model-url]', `${app.url}/www/models/no-such-model.gguf`);
  await page.click('[data-testid=load-url]');
  await page.waitForFunction(() => document.body.dataset.state === 'error', null, WAIT);
  assert.equal(await page.getAttribute('[data-testid=error]', 'data-code'), 'not_found');
  assert.equal(await text(page, 'error-text'), errorText({ code: 'not_found', status: 404 }));
  assert.ok(await page.isDisabled('[data-testid=send]'));
  // The failed download leaves nothing in the cache.
  await page.locator('#cache').evaluate((d) => { d.open = true; });
  await page.locator('[data-testid=cache-list]', { hasText: 'Nothing is cached' }).waitFor(WAIT);
  // The bundled model loads again from the list.
  await page.selectOption('[data-testid=model-select]', 'bundled');
  await page.click('[data-testid=load]');
  await loaded(page);
  assert.ok(await page.isHidden('[data-testid=error]'));
});

test('a model of another architecture reads as friendly text that names what runs, as the hint does', async () => {
  await page.fill('[data-testid=model-url]', `${models.url}/mamba.gguf`);
  await page.click('[data-testid=load-url]');
  await page.waitForFunction(() => document.body.dataset.state === 'error', null, WAIT);
  assert.equal(await page.getAttribute('[data-testid=error]', 'data-code'), 'unsupported_architecture');
  const supported = await page.evaluate(async () => (await import('/pkg/index.js')).default.architectures());
  // The list is hearth-core's, which `hearth inspect` prints for a file it cannot run.
  const inspect = execFileSync(HEARTH, ['inspect', join(dir, 'mamba.gguf')]).toString();
  assert.deepEqual(supported.map((a) => a.name), /\(supported: ([^)]+)\)/.exec(inspect)?.[1].split(', '));
  const shown = await text(page, 'error-text');
  assert.equal(shown, errorText({ code: 'unsupported_architecture', architecture: 'mamba', supported }));
  assert.match(shown, /\(mamba\)/);
  const hint = await text(page, 'architectures');
  for (const a of supported) {
    assert.ok(shown.includes(a.models), `${a.models}: ${shown}`);
    assert.ok(hint.includes(a.models), `${a.models}: ${hint}`);
  }
  await page.selectOption('[data-testid=model-select]', 'bundled');
  await page.click('[data-testid=load]');
  await loaded(page);
});

test('at 375px wide the page fits and chats', async () => {
  await page.setViewportSize({ width: 375, height: 812 });
  try {
    if ((await state(page)) !== 'ready') await open(page);
    await setField(page, 'max-tokens', 4);
    await setField(page, 'seed', 3);
    const values = await ask(page, PROMPT);
    assert.ok(values.length >= 1, 'no reply');
    const overflow = await page.evaluate(() => {
      const wide = [...document.querySelectorAll('body *')].filter((el) => {
        const r = el.getBoundingClientRect();
        return r.width > 0 && el.closest('.sr-only') === null && (r.right > innerWidth + 0.5 || r.left < -0.5);
      });
      return { scroll: document.documentElement.scrollWidth, wide: wide.map((el) => el.id || el.className || el.tagName) };
    });
    assert.ok(overflow.scroll <= 375, `the page is ${overflow.scroll}px wide`);
    assert.deepEqual(overflow.wide, [], 'elements reach past the screen');
    await page.screenshot({ path: join(ARTIFACTS, 'demo-mobile.png'), fullPage: true });
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

test('without WebGPU the CPU takes over and says so, on a worker per core', async () => {
  const noGpu = await launch(false);
  try {
    const p = await newPage(noGpu);
    await open(p);
    const backend = await text(p, 'fig-backend');
    // Not isolated: the workers pass messages.
    const cores = await p.evaluate(() => navigator.hardwareConcurrency);
    const perCore = cores > 1 ? new RegExp(`^CPU, ${Math.min(cores, 8)} workers`) : /^CPU/;
    assert.match(backend, perCore);
    assert.match(backend, /WebGPU not used: no WebGPU adapter/);
    await setField(p, 'max-tokens', 8);
    const values = await ask(p, PROMPT);
    assert.ok(values.length >= 1, 'no reply on the CPU');
    assertGrowing(values);
    assert.match(await text(p, 'fig-gen'), /tok\/s|—/);
    // Served as `node scripts/serve.mjs` serves it, cross-origin isolated: shared memory.
    const isolated = await serve(ROOT, { isolated: true });
    try {
      const q = await newPage(noGpu);
      await q.goto(`${isolated.url}/www/`);
      await loaded(q);
      assert.match(await text(q, 'fig-backend'), perCore);
      await setField(q, 'max-tokens', 8);
      assert.ok((await ask(q, PROMPT)).length >= 1, 'no reply on the CPU workers');
    } finally {
      await isolated.close();
    }
  } finally {
    await noGpu.close();
  }
});
