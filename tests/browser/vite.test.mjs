// The npm package in a Vite-built app: packed, installed from the tarball and bundled by
// tests/vite/build.sh, then served as static files; its streamed chat reply must equal
// `hearth chat`'s. Needs pkg/wasm, target/release/hearth and tests/vite's npm dependencies.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../../scripts/serve.mjs';
import { cliBackend, launch } from './chromium.mjs';
import { withChatTemplate } from './gguf.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAX = 8;

let dir, app, models, browser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hearth-vite-'));
  execFileSync('bash', [join(ROOT, 'tests/vite/build.sh'), join(dir, 'dist')], { stdio: 'inherit' });
  const model = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
  writeFileSync(join(dir, 'model.gguf'), withChatTemplate(model));
  app = await serve(join(dir, 'dist'));
  models = await serve(dir);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await Promise.all([app, models].filter(Boolean).map((s) => s.close()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a Vite-built app streams the same chat reply as `hearth chat`', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  const model = encodeURIComponent(`${models.url}/model.gguf`);
  await page.goto(`${app.url}/index.html?model=${model}&backend=webgpu&max=${MAX}&say=Hello%20there`);
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: 60_000 });
  const result = await page.evaluate(() => window.result);
  assert.equal(result.error, undefined, `${result.error}\n${errors.join('\n')}`);
  assert.equal(result.backend, 'webgpu');
  const want = execFileSync(join(ROOT, 'target/release/hearth'), [
    'chat', '--model', join(dir, 'model.gguf'), '--max-tokens', String(MAX), '--backend', cliBackend('webgpu'),
  ], { input: 'Hello there\n' }).toString();
  assert.equal(`${result.text}\n`, want);
  assert.deepEqual(errors, []);
  // The bundle fetched the package's worker and wasm from the app's own assets.
  const assets = app.state.requests.map((r) => r.path);
  assert.ok(assets.some((p) => /^\/assets\/worker-.*\.js$/.test(p)), assets.join(' '));
  assert.ok(assets.some((p) => /^\/assets\/hearth_web_relaxed_bg-.*\.wasm$/.test(p)), assets.join(' '));
  // The build for browsers without relaxed SIMD is bundled too.
  assert.ok(readdirSync(join(dir, 'dist/assets')).some((f) => /^hearth_web_bg-.*\.wasm$/.test(f)));
});
