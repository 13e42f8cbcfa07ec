#!/usr/bin/env node
// Hearth (WebGPU, CPU) against wllama (llama.cpp in wasm, 1 thread and multi-threaded) in one
// headless Chromium, on the same GGUF files, the same prompt text and the same number of
// greedy tokens; prints prefill and decode tokens/s per row as a Markdown table. See README.md.
//
//   node benches/browser/bench.mjs [options] [MODEL.gguf ...]

import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { serve } from '../../scripts/serve.mjs';
import { launch, testPage } from '../../tests/browser/chromium.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const DEFAULT_MODELS = ['/tmp/gpuk_models/qwen3-100m.q8_0.gguf', '/tmp/gpuk_models/qwen3-100m.q4_k_m.gguf'];
// 23 tokens in Qwen3's tokenizer.
const DEFAULT_PROMPT = 'The old lighthouse keeper climbed the spiral stairs every evening, lit the lamp, and wrote one line in his worn';

const USAGE = `usage: node benches/browser/bench.mjs [options] [MODEL.gguf ...]
  models default to ${DEFAULT_MODELS.join(' ')}
  --backends LIST      rows to run, of webgpu,cpu,wllama (default all three)
  --tokens N           greedy tokens to generate (default 32)
  --webgpu-tokens N    tokens for the WebGPU row only (default: --tokens)
  --prompt TEXT        the prompt (default: a 23-token sentence)
  --reps N             timed repetitions after one warm-up (default 3)
  --threads LIST       wllama threads, one row each (default 1,2; >1 needs cross-origin isolation)
  --workers LIST       Hearth CPU workers, one row each (default 1,2)
  --exchange LIST      how CPU workers pass activations, one row each for 2 or more workers, of
                       shared,messages (default shared: a SharedArrayBuffer on a cross-origin
                       isolated page; messages: the page is served without isolation)
  --wasm LIST          Hearth CPU rows for each wasm build, of auto,simd128 (default auto: the
                       relaxed-SIMD build where Chromium has it; simd128 keeps the other, on
                       1 worker only: the route that keeps it does not reach nested workers)
  --context N          KV cache positions for every engine (default 512)
  --timeout S          seconds one row may take, load and every run (default 1800)
  --json FILE          also write every measurement as JSON
  --table FILE         print the table of --json files written before, running nothing
                       (repeat it to join several runs in one table)`;

function parse() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      backends: { type: 'string', default: 'webgpu,cpu,wllama' },
      tokens: { type: 'string', default: '32' },
      'webgpu-tokens': { type: 'string' },
      prompt: { type: 'string', default: DEFAULT_PROMPT },
      reps: { type: 'string', default: '3' },
      threads: { type: 'string', default: '1,2' },
      workers: { type: 'string', default: '1,2' },
      wasm: { type: 'string', default: 'auto' },
      exchange: { type: 'string', default: 'shared' },
      context: { type: 'string', default: '512' },
      timeout: { type: 'string', default: '1800' },
      json: { type: 'string' },
      table: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (values.table) {
    // Rows of one model from several files make one group, in the usual row order.
    const byModel = new Map();
    for (const f of values.table) {
      for (const { model, rows } of JSON.parse(readFileSync(f, 'utf8')).results) {
        byModel.set(model, [...(byModel.get(model) ?? []), ...rows]);
      }
    }
    const rank = (r) => (r.engine === 'wllama' ? 2 : r.backend === 'cpu' ? 1 : 0);
    console.log(table([...byModel].map(([model, rows]) => ({ model, rows: rows.sort((a, b) => rank(a) - rank(b)) }))));
    process.exit(0);
  }
  const int = (name, v, min = 1) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}, not ${JSON.stringify(v)}`);
    return n;
  };
  const list = (name, v) => v.split(',').filter(Boolean).map((x) => int(name, x));
  const backends = values.backends.split(',').filter(Boolean);
  for (const b of backends) if (!['webgpu', 'cpu', 'wllama'].includes(b)) fail(`--backends: no backend ${JSON.stringify(b)}`);
  const models = (positionals.length ? positionals : DEFAULT_MODELS).map((m) => resolve(m));
  for (const m of models) if (!existsSync(m)) fail(`${m} does not exist`);
  const tokens = int('tokens', values.tokens, 2);
  const wasm = values.wasm.split(',').filter(Boolean);
  for (const w of wasm) if (!['auto', 'simd128'].includes(w)) fail(`--wasm: no build ${JSON.stringify(w)}`);
  const exchange = values.exchange.split(',').filter(Boolean);
  for (const e of exchange) if (!['shared', 'messages'].includes(e)) fail(`--exchange: no way ${JSON.stringify(e)}`);
  return {
    exchange,
    models,
    backends,
    tokens,
    webgpuTokens: values['webgpu-tokens'] ? int('webgpu-tokens', values['webgpu-tokens'], 2) : tokens,
    prompt: values.prompt,
    reps: int('reps', values.reps),
    threads: list('threads', values.threads),
    workers: list('workers', values.workers),
    wasm,
    context: int('context', values.context),
    timeoutMs: int('timeout', values.timeout) * 1000,
    json: values.json,
  };
}

function fail(message) {
  console.error(`bench: ${message}\n${USAGE}`);
  process.exit(2);
}

/** The rows for one model, in order: Hearth WebGPU, Hearth CPU per worker count, wllama per thread count. */
function rowsFor(opts) {
  const rows = [];
  if (opts.backends.includes('webgpu')) {
    rows.push({ label: 'Hearth WebGPU', engine: 'hearth', backend: 'webgpu', tokens: opts.webgpuTokens });
  }
  if (opts.backends.includes('cpu')) {
    for (const n of opts.workers) {
      for (const wasm of opts.wasm.filter((w) => w === 'auto' || n === 1)) {
        for (const exchange of n > 1 ? opts.exchange : ['shared']) {
          const label = `Hearth CPU, ${n} worker${n > 1 ? 's' : ''}${wasm === 'auto' ? '' : `, ${wasm}`}${exchange === 'messages' ? ', by message' : ''}`;
          rows.push({ label, engine: 'hearth', backend: 'cpu', workers: n, wasm, messages: exchange === 'messages', tokens: opts.tokens });
        }
      }
    }
  }
  if (opts.backends.includes('wllama')) {
    for (const n of opts.threads) {
      rows.push({ label: `wllama ${n} thread${n > 1 ? 's' : ''}`, engine: 'wllama', threads: n, tokens: opts.tokens });
    }
  }
  return rows;
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));

/** Prefill and decode tokens/s of each run, and their mean and sd. */
function speeds(runs) {
  const prefill = runs.map((r) => r.promptTokens / (r.ttftMs / 1000));
  const decode = runs.map((r) => (r.generated - 1) / (r.decodeMs / 1000));
  return { prefill: { values: prefill, mean: mean(prefill), sd: sd(prefill) }, decode: { values: decode, mean: mean(decode), sd: sd(decode) } };
}

/** Serves pkg/runtime.js as if the browser had no relaxed SIMD: the simd128 build runs. */
async function forceSimd128(route) {
  const body = readFileSync(join(ROOT, 'pkg/runtime.js'), 'utf8').replace('WebAssembly.validate(RELAXED_PROBE)', 'false');
  await route.fulfill({ contentType: 'text/javascript', body });
}

/** Runs `row` in a new page, within the timeout: the page's result, or { error }. */
async function runRow(browser, appUrl, modelUrl, row, opts) {
  const page = await testPage(browser, appUrl, { path: 'benches/browser/page.html' });
  const outside = [];
  page.on('console', (m) => { if (m.type() === 'error') console.error(`  [page] ${m.text()}`); });
  // Nothing may come from elsewhere than the two local servers.
  await page.context().route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.protocol === 'blob:' || u.protocol === 'data:' || u.hostname === '127.0.0.1') return route.continue();
    outside.push(u.href);
    return route.abort();
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${opts.timeoutMs / 1000} s`)), opts.timeoutMs);
  });
  try {
    const { label, tokens, wasm, messages, ...spec } = row;
    if (wasm === 'simd128') await page.context().route('**/pkg/runtime.js', forceSimd128);
    const result = await Promise.race([
      page.evaluate(
        ({ spec, prompt, tokens, reps }) => window.benchRow(spec, prompt, tokens, reps),
        { spec: { ...spec, url: modelUrl, contextLength: opts.context }, prompt: opts.prompt, tokens, reps: opts.reps },
      ),
      timeout,
    ]);
    if (outside.length) throw new Error(`requests outside the local servers: ${outside.join(', ')}`);
    return result;
  } catch (e) {
    const message = String(e?.message ?? e).split('\n')[0];
    return { error: message };
  } finally {
    clearTimeout(timer);
    await page.context().close().catch(() => {});
  }
}

/** Mean ± sd (the mean alone for one run), to 0, 1 or 2 decimals as the mean is at least 100, at least 10 or less. */
const fmt = (s) => {
  const d = s.mean >= 100 ? 0 : s.mean >= 10 ? 1 : 2;
  return s.values.length > 1 ? `${s.mean.toFixed(d)} ± ${s.sd.toFixed(d)}` : s.mean.toFixed(d);
};
const ratio = (a, b) => (a && b ? `${a / b >= 0.1 ? (a / b).toFixed(2) : (a / b).toPrecision(2)}×` : '–');

/** The Markdown table of every model's rows. */
function table(results) {
  const lines = [
    '| model | engine | prompt tok | gen tok | runs | prefill tok/s | decode tok/s | prefill / wllama 1t | decode / wllama 1t | prefill / best wllama | decode / best wllama |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const { model, rows } of results) {
    const wl = rows.filter((r) => r.engine === 'wllama' && r.speeds);
    const one = wl.find((r) => r.threads === 1)?.speeds;
    const best = wl.length
      ? { prefill: Math.max(...wl.map((r) => r.speeds.prefill.mean)), decode: Math.max(...wl.map((r) => r.speeds.decode.mean)) }
      : null;
    for (const r of rows) {
      const cells = [basename(model), r.label];
      if (!r.speeds) {
        cells.push('–', '–', '–', r.skipped ? `skipped: ${r.skipped}` : `failed: ${r.error}`, '–', '–', '–', '–', '–');
      } else {
        const s = r.speeds;
        const promptTok = [...new Set(r.result.runs.map((x) => x.promptTokens))].join('/');
        const gen = [...new Set(r.result.runs.map((x) => x.generated))].join('/');
        cells.push(promptTok, gen, r.result.runs.length, fmt(s.prefill), fmt(s.decode));
        if (r.engine === 'hearth') {
          cells.push(
            ratio(s.prefill.mean, one?.prefill.mean), ratio(s.decode.mean, one?.decode.mean),
            ratio(s.prefill.mean, best?.prefill), ratio(s.decode.mean, best?.decode),
          );
        } else {
          cells.push('', '', '', '');
        }
      }
      lines.push(`| ${cells.join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

async function main() {
  const opts = parse();
  const rows = rowsFor(opts);
  if (!rows.length) fail('no rows to run');
  if (!existsSync(join(ROOT, 'pkg/wasm/hearth_web_bg.wasm'))) fail('pkg/wasm is missing: build it first (scripts/build-wasm.sh)');
  if (opts.backends.includes('wllama') && !existsSync(join(ROOT, 'benches/browser/node_modules/@wllama/wllama/esm/wasm/wllama.wasm'))) {
    fail('wllama is missing: run npm ci in benches/browser');
  }
  // Cross-origin isolated, for wllama's threads (SharedArrayBuffer); every row runs on it.
  const app = await serve(ROOT, { isolated: true });
  const servers = [app];
  // Not isolated, for the rows whose workers pass messages.
  const plain = rows.some((r) => r.messages) ? await serve(ROOT) : null;
  if (plain) servers.push(plain);
  let browser;
  const results = [];
  try {
    browser = await launch();
    console.log(`Chromium ${browser.version()}; prompt ${JSON.stringify(opts.prompt)}; ${opts.tokens} tokens` +
      `${opts.webgpuTokens !== opts.tokens ? ` (WebGPU ${opts.webgpuTokens})` : ''}; 1 warm-up + ${opts.reps} reps; context ${opts.context}`);
    for (const model of opts.models) {
      const models = await serve(dirname(model), { isolated: true });
      servers.push(models);
      const url = `${models.url}/${encodeURIComponent(basename(model))}`;
      const done = [];
      console.log(`\n${basename(model)} (${(statSync(model).size / 1e6).toFixed(1)} MB)`);
      for (const row of rows) {
        const started = Date.now();
        const result = await runRow(browser, (row.messages ? plain : app).url, url, row, opts);
        const out = { ...row, result };
        if (result.error) out.error = result.error;
        else if (result.skipped) out.skipped = result.skipped;
        else {
          out.speeds = speeds(result.runs);
          const cached = result.runs.filter((r) => r.cachedTokens > 0).length;
          if (cached) out.note = `${cached} runs reused cached prompt tokens`;
        }
        done.push(out);
        const secs = ((Date.now() - started) / 1000).toFixed(0);
        if (out.speeds) {
          const r0 = result.runs[0];
          console.log(`  ${row.label} (${JSON.stringify(result.info)}):`);
          console.log(`    prefill ${fmt(out.speeds.prefill)} tok/s, decode ${fmt(out.speeds.decode)} tok/s` +
            ` (prompt ${r0.promptTokens} tok, ${r0.generated} generated, load ${(result.loadMs / 1000).toFixed(1)} s, ${secs} s in all)` +
            `${out.note ? ` [${out.note}]` : ''}`);
          for (const [i, r] of result.runs.entries()) {
            const own = r.own ? `; llama.cpp's own timing: prefill ${(r.own.promptN / (r.own.promptMs / 1000)).toFixed(1)}, decode ${(r.own.predictedN / (r.own.predictedMs / 1000)).toFixed(1)} tok/s` : '';
            console.log(`    rep ${i + 1}: ttft ${r.ttftMs.toFixed(0)} ms, decode ${r.decodeMs.toFixed(0)} ms for ${r.generated - 1} tok, finish ${r.finish}${own}`);
          }
        } else {
          console.log(`  ${row.label}: ${out.skipped ? `skipped (${out.skipped})` : `FAILED: ${out.error}`} (${secs} s)`);
        }
      }
      // Same greedy text, as far as the shorter goes? (Each engine rounds its own way: a
      // difference is not an error.)
      const texts = done.filter((r) => r.speeds).map((r) => [r.label, r.result.runs[0].text]);
      if (texts.length > 1) {
        const agree = (a, b) => (a.length <= b.length ? b.startsWith(a) : a.startsWith(b));
        const same = texts.every(([, t]) => agree(t, texts[0][1]));
        console.log(`  greedy text ${same ? 'the same in every row (as far as the shorter goes)' : 'differs between rows:'}`);
        if (!same) for (const [label, t] of texts) console.log(`    ${label}: ${JSON.stringify(t.slice(0, 80))}`);
      }
      results.push({ model, rows: done });
    }
  } finally {
    await browser?.close();
    await Promise.all(servers.map((s) => s.close()));
  }
  console.log(`\n${table(results)}`);
  if (opts.json) {
    writeFileSync(opts.json, JSON.stringify({ options: opts, results }, null, 2));
  }
  if (results.some((m) => m.rows.some((r) => r.error))) process.exitCode = 1;
}

await main();
