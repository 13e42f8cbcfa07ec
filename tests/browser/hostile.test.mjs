// A model file from a stranger carries a chat template, which is a program: hostile ones fail
// the request quickly with code bad_request and leave the engine usable, and a worker busy in
// one long call is ended by the package's watchdog when a request is aborted, after which a new
// load works. Requests a page mangles, or whose options it misspells, are bad_requests too.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBench } from './chromium.mjs';
import { withChatTemplate, withMetadata } from './gguf.mjs';
import { withWorkerShim } from './shim.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const HOSTILE = {
  loops: '{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}',
  repetition: "{{ 'a' * 10**9 }}",
  recursion: '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
  // Nothing nested deeper than 128 is stored (minijinja drops a value by recursing once per
  // level, and 60,000 levels would overflow the JS engine's call stack: see
  // crates/hearth-core/src/chat/budget.rs).
  nesting: '{% set ns = namespace(x=[]) %}{% for i in range(60000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}',
  joins: "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = [ns.s, ns.s] | join %}{% endfor %}{{ ns.s }}",
  // Comparing two lists doubled 64 times would visit 2^64 items: the walk is paid for first.
  comparison: '{% set ns = namespace(a=[], b=[]) %}{% for i in range(64) %}{% set ns.a = [ns.a, ns.a] %}'
    + '{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}',
};
/** Holds an engine worker busy for 10 s in the request whose prompt is "stall", as a long
 * synchronous call would: it cannot answer an abort meanwhile. No chat template can do that
 * any more. */
const STALL_SHIM = `import { OP as STALL_OP } from './protocol.js';
self.addEventListener('message', ({ data }) => {
  if (data?.op === STALL_OP.generate && data.prompt === 'stall') { const end = Date.now() + 10000; while (Date.now() < end); }
});`;

let bench, models, browser, page;

before(async () => {
  bench = await openBench('hostile', (dir) => {
    const model = gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/llama-spm.q8_0.gguf.gz')));
    writeFileSync(join(dir, 'model.gguf'), withChatTemplate(model));
    for (const [name, template] of Object.entries(HOSTILE)) {
      writeFileSync(join(dir, `${name}.gguf`), withMetadata(model, { 'tokenizer.chat_template': template }));
    }
  });
  ({ models, browser, page } = bench);
});

after(() => bench?.close());

test('hostile chat templates fail fast with bad_request, and the engine goes on', async () => {
  const failures = [];
  for (const name of Object.keys(HOSTILE)) {
    const r = await page.evaluate(async (url) => {
      const engine = await window.Hearth.load(url, { backend: 'cpu', cache: false });
      const start = performance.now();
      let error = null;
      try {
        await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
      } catch (e) {
        error = { code: e.code, message: e.message };
      }
      const ms = performance.now() - start;
      const tokens = [];
      let after = null;
      try { for await (const t of engine.generate('The', { max_tokens: 2 })) tokens.push(t.token); }
      catch (e) { after = e.message; }
      engine.dispose();
      return { error, ms, tokens: tokens.length, after };
    }, `${models.url}/${name}.gguf`);
    const ok = r.error?.code === 'bad_request' && /^the chat template was stopped: /.test(r.error.message)
      && r.ms < 2000 && r.tokens === 2;
    if (!ok) failures.push(`${name}: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(failures, []);
});

test('an abort the worker cannot answer ends the worker; a new load works', async () => {
  const r = await withWorkerShim(browser, STALL_SHIM, (p) => p.evaluate(async (model) => {
    const engine = await window.Hearth.load(model, { backend: 'cpu', cache: false, abortTimeout: 1000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const start = performance.now();
    let code = null;
    try {
      for await (const t of engine.generate('stall', { max_tokens: 2, signal: controller.signal })) void t;
    } catch (e) {
      code = e.code;
    }
    const ms = performance.now() - start;
    // The stream ends at the abort itself; the watchdog then ends the stuck worker.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    let after = null;
    try { await engine.tokenize('hi'); } catch (e) { after = { code: e.code, message: e.message }; }
    const fresh = await window.Hearth.load(model, { backend: 'cpu', cache: false });
    const tokens = [];
    for await (const t of fresh.generate('The', { max_tokens: 3 })) tokens.push(t.token);
    fresh.dispose();
    return { code, ms, after, tokens: tokens.length };
  }, `${models.url}/model.gguf`));
  assert.equal(r.code, 'aborted');
  assert.ok(r.ms < 1000, `the abort took ${r.ms} ms`);
  assert.equal(r.after?.code, 'disposed', JSON.stringify(r.after));
  assert.match(r.after.message, /did not answer an abort within 1000 ms/);
  assert.equal(r.tokens, 3);
});

test('mangled requests from JS are refused with bad_request (or context_full), never another error, and the engine goes on', async (t) => {
  const r = await page.evaluate(async ({ url, runs, seed }) => {
    // mulberry32: a small seeded generator, so a failure can be replayed.
    let state = seed >>> 0;
    const random = () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let x = state;
      x = Math.imul(x ^ (x >>> 15), x | 1);
      x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
      return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
    };
    const pick = (list) => list[Math.floor(random() * list.length)];
    const cyclic = {};
    cyclic.self = cyclic;
    let deep = [];
    for (let i = 0; i < 20000; i++) deep = [deep];
    const odd = [null, undefined, 0, -1, 1.5, 2 ** 53, -(2 ** 31), NaN, Infinity, -Infinity, '', 'x', '\u0000',
      'a'.repeat(5000), true, false, [], {}, [1, 'a', null], { type: 'nope' }, 10n, () => 1, Symbol('s'),
      cyclic, deep, new Date(0), /re/, new Uint8Array(3), { role: 'user' }, [{}], { '': 1 }];
    const base = () => ({
      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Hi' }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }] },
        { role: 'tool', tool_call_id: 'c1', content: '2' }],
      max_tokens: 2, temperature: 0.5, top_p: 0.9, top_k: 5, min_p: 0.05, seed: 7, stop: ['\n'],
      frequency_penalty: 0.1, presence_penalty: 0.1, repetition_penalty: 1.1, logit_bias: { 5: -1 },
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'integer' } } } } },
      stream: false, signal: new AbortController().signal,
    });
    /** Every [parent, key] of `value`, depth first, not inside the odd values put there. */
    const slots = (value, out = []) => {
      if (value && typeof value === 'object' && !odd.includes(value)) {
        for (const key of Object.keys(value)) {
          out.push([value, key]);
          slots(value[key], out);
        }
      }
      return out;
    };
    const engine = await window.Hearth.load(url, { backend: 'cpu', cache: false });
    // Unmangled, the request is served.
    let valid;
    try { valid = (await engine.chat.completions.create(base())).choices.length; } catch (e) { valid = `${e.code}: ${e.message}`; }
    const wrong = [];
    const codes = {};
    for (let run = 0; run < runs; run++) {
      const request = base();
      const generate = random() < 0.25;
      for (let n = 1 + Math.floor(random() * 3); n > 0; n--) {
        const [parent, key] = pick(slots(request));
        const what = random();
        if (what < 0.15) delete parent[key];
        else if (what < 0.25) parent[`${key}_`] = pick(odd);
        else parent[key] = pick(odd);
      }
      if (request.max_tokens === undefined || typeof request.max_tokens !== 'number' || request.max_tokens > 8) request.max_tokens = 2;
      let outcome;
      try {
        if (generate) {
          const { messages, stream, ...options } = request;
          for await (const _ of engine.generate(messages?.[1]?.content?.[0]?.text, options)) void _;
        } else {
          const reply = await engine.chat.completions.create(request);
          if (request.stream === true) for await (const _ of reply) void _;
        }
        outcome = 'ok';
      } catch (e) {
        outcome = e instanceof window.HearthError ? e.code : `not a HearthError: ${e}`;
        // A mangled prompt may also be longer than the context.
        if (!['bad_request', 'context_full'].includes(outcome)) wrong.push({ run, outcome, message: e.message });
      }
      codes[outcome] = (codes[outcome] ?? 0) + 1;
    }
    const tokens = [];
    for await (const tok of engine.generate('The', { max_tokens: 3 })) tokens.push(tok.token);
    engine.dispose();
    return { valid, wrong, codes, tokens: tokens.length };
  }, { url: `${models.url}/model.gguf`, runs: Number(process.env.HEARTH_FUZZ_RUNS ?? 300), seed: Number(process.env.HEARTH_FUZZ_SEED ?? 1) });
  t.diagnostic(`outcomes: ${JSON.stringify(r.codes)}`);
  assert.equal(r.valid, 1);
  assert.deepEqual(r.wrong, []);
  assert.equal(r.tokens, 3);
});

test('an option not spelt as index.d.ts declares it is a bad_request naming it, at every entry point', async () => {
  const r = await page.evaluate(async (url) => {
    const engine = await window.Hearth.load(url, { backend: 'cpu', cache: false });
    const messages = [{ role: 'user', content: 'hi' }];
    const load = (o) => window.Hearth.load(url, { backend: 'cpu', cache: false, ...o }).then((e) => e.dispose());
    const chat = (o) => engine.chat.completions.create({ messages, max_tokens: 2, ...o });
    const stream = async (o) => { for await (const _ of await chat({ stream: true, ...o })) void _; };
    const generate = async (o) => { for await (const _ of engine.generate('The', { max_tokens: 2, ...o })) void _; };
    const tokenize = (o) => engine.tokenize('hi', o);
    const detokenize = (o) => engine.detokenize([1, 2], o);
    const outcome = (call, options) => call(options).then(() => 'ok', (e) => `${e.code}: ${e.message}`);
    // Each call with an option spelt wrong, then right.
    const cases = [
      [load, { abort_timeout: 1000 }, { abortTimeout: 1000 }],
      [chat, { maxTokens: 2 }, { max_tokens: 2 }],
      [stream, { topP: 0.9 }, { top_p: 0.9 }],
      [generate, { logitBias: {} }, { logit_bias: {} }],
      [generate, { repeatPenalty: 1.1 }, { repetition_penalty: 1.1 }],
      [tokenize, { add_special: false }, { addSpecial: false }],
      [detokenize, { skip_special: true }, { skipSpecial: true }],
      // Fields the call does not take at all.
      [chat, { n: 2 }, {}],
      [generate, { tools: [] }, {}],
    ];
    const out = [];
    for (const [call, wrong, right] of cases) out.push([await outcome(call, wrong), await outcome(call, right)]);
    engine.dispose();
    return out;
  }, `${models.url}/model.gguf`);
  assert.deepEqual(r, [
    ['bad_request: Hearth.load() has no option "abort_timeout" (did you mean "abortTimeout"?)', 'ok'],
    ['bad_request: chat.completions.create() has no option "maxTokens" (did you mean "max_tokens"?)', 'ok'],
    ['bad_request: chat.completions.create() has no option "topP" (did you mean "top_p"?)', 'ok'],
    ['bad_request: generate() has no option "logitBias" (did you mean "logit_bias"?)', 'ok'],
    ['bad_request: generate() has no option "repeatPenalty"', 'ok'],
    ['bad_request: tokenize() has no option "add_special" (did you mean "addSpecial"?)', 'ok'],
    ['bad_request: detokenize() has no option "skip_special" (did you mean "skipSpecial"?)', 'ok'],
    ['bad_request: chat.completions.create() has no option "n"', 'ok'],
    ['bad_request: generate() has no option "tools"', 'ok'],
  ]);
});
