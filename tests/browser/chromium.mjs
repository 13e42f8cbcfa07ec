// The Chromium every browser test drives: the system's, headless, WebGPU on (SwiftShader where
// there is no GPU), nothing in the background that reaches the network.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../../scripts/serve.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const FLAGS = ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** A browser launched with `args`. */
export function launch(args = FLAGS) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args });
}

/**
 * A new page of `browser` on `path` (tests/browser/page.html unless told) served from `appUrl`,
 * once the package has loaded there (the page sets `window.ready`); with `logErrors`, the
 * page's console errors are printed.
 */
export async function testPage(browser, appUrl, { logErrors = false, path = 'tests/browser/page.html' } = {}) {
  const page = await browser.newPage();
  if (logErrors) page.on('console', (m) => { if (m.type() === 'error') console.error('[page]', m.text()); });
  await page.goto(`${appUrl}/${path}`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

/**
 * What a test file runs on: `dir`, a new temporary directory that `fill(dir)` writes models
 * into; the repository served as `app` (its pages cross-origin isolated with `isolated`) and
 * `dir` as `models`; a browser, and a test page of the app (`logErrors` as for testPage).
 * `close()` ends them and removes `dir`, as a failure on the way does.
 */
export async function openBench(name, fill, { logErrors = false, isolated = false } = {}) {
  const bench = { dir: mkdtempSync(join(tmpdir(), `hearth-${name}-`)) };
  bench.close = async () => {
    await bench.browser?.close();
    await Promise.all([bench.app, bench.models].filter(Boolean).map((s) => s.close()));
    rmSync(bench.dir, { recursive: true, force: true });
  };
  try {
    fill(bench.dir);
    bench.app = await serve(ROOT, { isolated });
    bench.models = await serve(bench.dir);
    bench.browser = await launch();
    bench.page = await testPage(bench.browser, bench.app.url, { logErrors });
    return bench;
  } catch (e) {
    await bench.close();
    throw e;
  }
}

/**
 * openBench (errors logged) for one model: `tests/fixtures/models/<fixture>.gguf.gz` unpacked,
 * through `edit` where given, as `<name>.gguf`, and loaded once per backend (loadEngines). The
 * bench also has `model`, the file's path.
 */
export async function fixtureBench(name, fixture, backends, { edit = (bytes) => bytes } = {}) {
  let model;
  const bench = await openBench(name, (dir) => {
    model = join(dir, `${name}.gguf`);
    const bytes = gunzipSync(readFileSync(join(ROOT, `tests/fixtures/models/${fixture}.gguf.gz`)));
    writeFileSync(model, edit(bytes));
  }, { logErrors: true });
  bench.model = model;
  try {
    await loadEngines(bench.page, `${bench.models.url}/${name}.gguf`, backends);
    return bench;
  } catch (e) {
    await bench.close();
    throw e;
  }
}

/**
 * Loads `url` in `page` with `options` (Hearth.load's), takes the greedy tokens after `prompt`
 * (`maxTokens` of them), and disposes of the engine: the token ids.
 */
export function greedyTokens(page, url, options, prompt = 'Hello', maxTokens = 4) {
  return page.evaluate(async ({ url, options, prompt, maxTokens }) => {
    const engine = await window.Hearth.load(url, options);
    const tokens = [];
    for await (const t of engine.generate(prompt, { max_tokens: maxTokens })) tokens.push(t.token);
    engine.dispose();
    return tokens;
  }, { url, options, prompt, maxTokens });
}

/**
 * Loads `url` in `page` once per backend, uncached, as `window.engines[backend]` (`window.url`
 * keeps the URL), and defines `window.generate(engine, prompt, options)`: a generation's tokens
 * and text, with its end (finish reason and usage).
 */
export function loadEngines(page, url, backends) {
  return page.evaluate(async ({ url, backends }) => {
    window.url = url;
    window.engines = {};
    for (const backend of backends) window.engines[backend] = await window.Hearth.load(url, { backend, cache: false });
    window.generate = async (engine, prompt, options) => {
      const it = engine.generate(prompt, options)[Symbol.asyncIterator]();
      const out = { tokens: [], text: '' };
      for (;;) {
        const { value, done } = await it.next();
        if (done) return { ...out, ...value };
        out.tokens.push(value.token);
        out.text += value.text;
      }
    };
  }, { url, backends });
}

const references = new Map();

/**
 * The CLI backend whose greedy text the package's `backend` must give: the CPU's fast products
 * for its CPU engine (the same integer sums natively and in wasm), the reference products
 * (f32 activations, as the GPU's) for WebGPU.
 */
export const cliBackend = (backend) => (backend === 'cpu' ? 'cpu' : 'cpu-reference');

/**
 * `hearth generate --backend <cli>`'s greedy continuation of `prompt` by `model`, `steps`
 * tokens: { tokens, generated, text }, run once per question.
 */
function generateReference(model, prompt, steps, cli) {
  const key = JSON.stringify([model, prompt, steps, cli]);
  if (!references.has(key)) {
    references.set(key, JSON.parse(execFileSync(join(ROOT, 'target/release/hearth'), [
      'generate', '--model', model, '--prompt', prompt, '--max-tokens', String(steps), '--backend', cli, '--json',
    ], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()));
  }
  return references.get(key);
}

/**
 * Asserts that `got` (a `window.generate` result of the package's `backend`) is what
 * `hearth generate` gives for `prompt` (see cliBackend): the prompt's token count, the
 * generated ids and the text.
 */
export function assertLikeReference(model, got, prompt, steps, backend, label = backend) {
  const want = generateReference(model, prompt, steps, cliBackend(backend));
  assert.equal(got.usage.prompt_tokens, want.tokens.length);
  assert.deepEqual(got.tokens, want.generated, `${label}: ${JSON.stringify(prompt.slice(-40))}`);
  assert.equal(got.text, want.text);
}

/**
 * On `window.engines[backend]`, reset first, greedy generations of `steps` tokens: for `prompt`,
 * then for the prompt, its reply and each of `endings` in turn. Each run is { prompt, got (a
 * `window.generate` result), tokens (the prompt's ids) }; `info` is the engine's.
 */
export function runFollowUps(page, backend, prompt, endings, steps) {
  return page.evaluate(async ({ backend, prompt, endings, steps }) => {
    const engine = window.engines[backend];
    await engine.reset();
    const first = await window.generate(engine, prompt, { max_tokens: steps });
    const runs = [{ prompt, got: first }];
    for (const ending of endings) {
      const next = `${prompt}${first.text}${ending}`;
      runs.push({ prompt: next, got: await window.generate(engine, next, { max_tokens: steps }) });
    }
    for (const run of runs) run.tokens = await engine.tokenize(run.prompt);
    return { runs, info: engine.info };
  }, { backend, prompt, endings, steps });
}

/**
 * What an engine holds after `run` (a runFollowUps run): its prompt and its reply but for the
 * last token, which was chosen and never run.
 */
export function heldAfter(run) {
  return [...run.tokens, ...run.got.tokens.slice(0, run.got.usage.completion_tokens - 1)];
}

/** How many leading ids `a` and `b` share. */
export function commonPrefix(a, b) {
  let same = 0;
  while (same < a.length && same < b.length && a[same] === b[same]) same++;
  return same;
}
