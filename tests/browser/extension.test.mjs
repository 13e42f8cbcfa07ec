// The Chromium extension (target/extension, made by scripts/build-extension.sh) loaded unpacked
// in headless Chromium: its manifest asks for the documented minimal permissions under the
// strict extension CSP; its panel runs the bundled model on WebGPU (SwiftShader) and streams the
// answer; a context-menu selection reaches a panel that opens after it; a model from a URL is
// fetched cross-origin without host permissions and kept in OPFS; a model of an architecture
// it does not run is refused with the engine's list; and no request leaves the extension but
// the model downloads the user chose.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, statSync, existsSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../../scripts/serve.mjs';
import { gguf, withChatTemplate } from './gguf.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const EXT = join(ROOT, 'target/extension');
const ZIP = join(ROOT, 'target/hearth-extension.zip');
const HEARTH = join(ROOT, 'target/release/hearth');
const TEXT = 'To be, or not to be, that is the question';
// SwiftShader runs the bundled model at about a token a second (every prompt token included).
const STEPS = 6;

// What the README documents, and nothing more.
const PERMISSIONS = ['activeTab', 'contextMenus', 'scripting', 'sidePanel'];
const CSP = "script-src 'self' 'wasm-unsafe-eval'; object-src 'self'";

let profile, dir, site, models, context, worker, id, manifest;
const requests = [];

before(async () => {
  if (!existsSync(join(EXT, 'manifest.json')) || !existsSync(ZIP)) {
    throw new Error('target/extension is not built: run scripts/build-extension.sh first');
  }
  manifest = JSON.parse(readFileSync(join(EXT, 'manifest.json'), 'utf8'));
  dir = mkdtempSync(join(tmpdir(), 'hearth-ext-models-'));
  profile = mkdtempSync(join(tmpdir(), 'hearth-ext-profile-'));
  // A chat model for the URL path: the smallest fixture, given a chat template.
  const fixture = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
  writeFileSync(join(dir, 'chat.gguf'), withChatTemplate(fixture));
  writeFileSync(join(dir, 'mamba.gguf'), gguf({ 'general.architecture': 'mamba' }, []));
  writeFileSync(join(dir, 'page.html'), `<!doctype html><title>a page</title><p id="text">${TEXT}</p><p>Other words.</p>`);
  site = await serve(dir);
  models = await serve(dir);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    // Chromium's headless mode (the new one, the only one left) runs extensions.
    headless: true,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      `--disable-extensions-except=${EXT}`, `--load-extension=${EXT}`],
  });
  // Every request of every page, service worker and dedicated worker (the engine's) from now on.
  context.on('request', (r) => requests.push(r.url()));
  const ours = (w) => w.url().startsWith('chrome-extension://');
  worker = context.serviceWorkers().find(ours)
    ?? await context.waitForEvent('serviceworker', { predicate: ours, timeout: 30_000 });
  id = new URL(worker.url()).host;
});

after(async () => {
  await context?.close();
  await Promise.all([site, models].filter(Boolean).map((s) => s.close()));
  for (const d of [dir, profile]) if (d) rmSync(d, { recursive: true, force: true });
});

/** A new tab, closed when test `t` ends (a panel left open would take the next selection). */
async function newPage(t) {
  const page = await context.newPage();
  t.after(() => page.close());
  return page;
}

/** Opens the panel as a tab (the side panel shows the same page) and waits for `states`. */
async function openPanel(t, states = ['ready']) {
  const page = await newPage(t);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const response = await page.goto(`chrome-extension://${id}/panel.html`);
  await waitFor(page, states);
  return { page, errors, response };
}

function waitFor(page, states, timeout = 180_000) {
  return page.waitForFunction((s) => s.includes(document.body.dataset.state), states, { timeout });
}

/** Counts the changes to the result box from now on. */
function watchOutput(page) {
  return page.evaluate(() => {
    window.outputUpdates = 0;
    new MutationObserver(() => { window.outputUpdates++; })
      .observe(document.getElementById('output'), { childList: true, characterData: true, subtree: true });
  });
}

function panelState(page) {
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById('status').textContent,
    model: document.getElementById('model-info').textContent,
    backend: document.getElementById('backend').dataset.backend,
    backendTitle: document.getElementById('backend').title,
    output: document.getElementById('output').textContent,
    input: document.getElementById('input').value,
    task: document.getElementById('task').value,
    updates: window.outputUpdates,
  }));
}

const listFiles = (d) => readdirSync(d).flatMap((f) => {
  const p = join(d, f);
  return statSync(p).isDirectory() ? listFiles(p) : [relative(EXT, p)];
}).sort();

test('the manifest asks for the minimal permissions under the strict CSP; the build holds the package', async () => {
  assert.equal(manifest.manifest_version, 3);
  assert.deepEqual([...manifest.permissions].sort(), PERMISSIONS);
  for (const key of ['host_permissions', 'optional_host_permissions', 'optional_permissions', 'content_scripts',
    'web_accessible_resources', 'externally_connectable']) {
    assert.equal(manifest[key], undefined, `the manifest must not have ${key}`);
  }
  assert.deepEqual(manifest.content_security_policy, { extension_pages: CSP });
  assert.deepEqual(manifest.background, { service_worker: 'background.js', type: 'module' });
  assert.equal(manifest.side_panel.default_path, 'panel.html');
  // The toolbar button reaches action.onClicked (which grants activeTab) instead of opening the
  // panel by itself.
  const panel = await worker.evaluate(async () => ({
    options: await chrome.sidePanel.getOptions({}),
    behavior: await chrome.sidePanel.getPanelBehavior(),
  }));
  assert.deepEqual(panel, { options: { enabled: true, path: 'panel.html' }, behavior: { openPanelOnActionClick: false } });
  // The package runs from inside the extension, as built from pkg/.
  for (const f of ['index.js', 'errors.js', 'fetch.js', 'protocol.js', 'worker.js', 'shards.js', 'shard.js', 'runtime.js',
    'wasm/hearth_web.js', 'wasm/hearth_web_bg.wasm', 'wasm/hearth_web_relaxed_bg.wasm']) {
    assert.ok(readFileSync(join(EXT, 'hearth', f)).equals(readFileSync(join(ROOT, 'pkg', f))), `hearth/${f} differs from pkg/${f}: rebuild`);
  }
  // No page or script of the extension names a remote script.
  for (const f of listFiles(EXT).filter((p) => /\.(html|js)$/.test(p))) {
    const text = readFileSync(join(EXT, f), 'utf8');
    assert.doesNotMatch(text, /(src=["']?|import\s*(\(|[^;]*from\s*)["'])(https?:)?\/\//, `${f} loads remote code`);
  }
  // The store upload holds exactly the unpacked build.
  const zipped = execFileSync('python3', ['-c',
    'import sys, zipfile; print("\\n".join(sorted(zipfile.ZipFile(sys.argv[1]).namelist())))', ZIP]).toString().trim().split('\n');
  assert.deepEqual(zipped, listFiles(EXT));
});

test('the panel runs the bundled model (on the CPU: SwiftShader is a software adapter) and streams the answer', async (t) => {
  const { page, errors, response } = await openPanel(t);
  // Chrome applies the manifest's CSP to the panel, and the worker and wasm run under it.
  assert.equal(response.headers()['content-security-policy'], CSP);
  const loaded = await panelState(page);
  assert.equal(loaded.backend, 'cpu', loaded.status);
  assert.match(loaded.backendTitle, /WebGPU not used: the WebGPU adapter is a software renderer/);
  assert.match(loaded.model, /^the bundled model: /);
  assert.match(loaded.status, /^Ready on the CPU/);
  await watchOutput(page);
  await page.fill('#input', TEXT);
  await page.selectOption('#task', 'continue');
  await page.fill('#max-tokens', String(STEPS));
  // Greedy, so the answer (and its length) does not depend on the seed.
  await page.fill('#temperature', '0');
  await page.click('#run');
  await waitFor(page, ['ready', 'error']);
  const r = await panelState(page);
  assert.equal(r.state, 'ready', r.status);
  assert.match(r.status, /^(Done\.|Stopped at the length limit\.)/);
  assert.ok(r.output.length > 0, 'no text came');
  assert.ok(r.updates >= 2, `the answer came in ${r.updates} update(s), not streamed`);
  assert.deepEqual(errors, []);
});

test('a context-menu selection reaches the panel that the click opens, which runs it until stopped', async (t) => {
  // A long answer, so that it is still running when Stop is pressed (the panel keeps the length
  // and where it runs): on the GPU, as SwiftShader is slow enough; the CPU writes this small
  // model's 500 tokens in moments.
  const setup = await openPanel(t);
  await setup.page.fill('#max-tokens', '500');
  await setup.page.selectOption('#run-on', 'webgpu');
  await setup.page.close();
  const pageTab = await newPage(t);
  await pageTab.goto(`${site.url}/page.html`);
  const selected = await pageTab.evaluate(() => {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById('text'));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    return String(getSelection());
  });
  assert.equal(selected, TEXT);
  // What Chrome calls on a right-click on "Hearth ▸ Rewrite selection" (selectionText is the
  // selection's text); the side panel itself needs the real click's user gesture, so the panel is
  // opened as a tab after it, as the side panel would load.
  await worker.evaluate((text) => self.hearthMenuClicked({ menuItemId: 'hearth-rewrite', selectionText: text }), selected);
  // The panel takes the selection as it starts, loads the model and runs the task; Stop ends it.
  const { page, errors } = await openPanel(t, ['running', 'error']);
  await page.click('#stop');
  await waitFor(page, ['ready', 'error']);
  const r = await panelState(page);
  assert.equal(r.state, 'ready', r.status);
  assert.equal(r.status, 'Stopped.');
  assert.equal(r.input, TEXT);
  assert.equal(r.task, 'rewrite');
  assert.deepEqual(errors, []);
  // The selection was handed over once: a panel opened now has none waiting.
  const second = await openPanel(t);
  assert.equal((await panelState(second.page)).input, '');
  assert.equal(await second.page.inputValue('#run-on'), 'webgpu', 'the choice of backend is kept');
  await second.page.selectOption('#run-on', 'auto');
});

test('a model from a URL loads cross-origin without host permissions, answers by chat, and is cached', async (t) => {
  const url = `${models.url}/chat.gguf`;
  const { page, errors } = await openPanel(t);
  await page.selectOption('#source', 'url');
  await page.fill('#url', url);
  await page.click('#load');
  await waitFor(page, ['ready', 'error']);
  let r = await panelState(page);
  assert.equal(r.state, 'ready', r.status);
  assert.equal(r.backend, 'cpu');
  assert.doesNotMatch(r.model, /base model/);
  const fetched = models.state.requests.filter((q) => q.path === '/chat.gguf');
  assert.ok(fetched.length > 0 && fetched.every((q) => q.range), 'the model came by Range requests');
  await watchOutput(page);
  await page.fill('#input', TEXT);
  await page.selectOption('#task', 'summarise');
  await page.fill('#max-tokens', String(STEPS));
  await page.fill('#temperature', '0');
  await page.click('#run');
  await waitFor(page, ['ready', 'error']);
  r = await panelState(page);
  assert.equal(r.state, 'ready', r.status);
  assert.match(r.status, /^(Done\.|Stopped at the length limit\.)/);
  // The download cache (OPFS) of the extension's origin holds the whole file, and the panel
  // lists it.
  await page.click('#cache summary');
  assert.match(await page.textContent('#cache-list'), new RegExp(`${url.replace(/[.]/g, '\\.')} \\([0-9.]+ MiB\\)`));
  await page.close();

  // Opened again, the panel reloads that model from the cache: one request checks the file is
  // unchanged, and no tensor bytes come over the network.
  const before = models.state.requests.length;
  const again = await openPanel(t);
  r = await panelState(again.page);
  assert.equal(r.state, 'ready', r.status);
  assert.match(r.model, /^chat\.gguf: /);
  const more = models.state.requests.slice(before).filter((q) => q.path === '/chat.gguf');
  assert.equal(more.length, 1, JSON.stringify(more));
  assert.deepEqual([...errors, ...again.errors], []);
});

test('a model of another architecture is refused with the list of what runs, from the engine', async (t) => {
  const { page } = await openPanel(t);
  await page.selectOption('#source', 'url');
  await page.fill('#url', `${models.url}/mamba.gguf`);
  await page.click('#load');
  await waitFor(page, ['error']);
  const { status } = await panelState(page);
  // The package the panel ships, asked directly; its names are hearth-core's, as `hearth
  // inspect` prints them.
  const supported = await page.evaluate(async () => (await import('./hearth/index.js')).Hearth.architectures());
  const inspect = execFileSync(HEARTH, ['inspect', join(dir, 'mamba.gguf')]).toString();
  assert.deepEqual(supported.map((a) => a.name), /\(supported: ([^)]+)\)/.exec(inspect)?.[1].split(', '));
  const families = new Intl.ListFormat('en', { type: 'conjunction' }).format(supported.map((a) => a.models));
  assert.ok(status.endsWith(`Hearth runs ${families} models.`), status);
});

test('nothing left the extension but the model downloads the user chose', () => {
  const own = `chrome-extension://${id}/`;
  const outside = requests.filter((u) => !u.startsWith(own) && !u.startsWith(`${site.url}/`));
  assert.ok(outside.length > 0, 'the URL model download was not seen');
  assert.deepEqual([...new Set(outside)].sort(), [`${models.url}/chat.gguf`, `${models.url}/mamba.gguf`]);
  // The test page's server saw only the page's own requests.
  const paths = new Set(site.state.requests.map((q) => q.path));
  assert.ok([...paths].every((p) => p === '/page.html' || p === '/favicon.ico'), [...paths].join(' '));
  // The bundled model was read from the extension itself.
  assert.ok(requests.includes(`${own}models/shakespeare.q8_0.gguf`));
});
