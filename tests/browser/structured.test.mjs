// Structured output and tool calls through the npm package in headless Chromium: a JSON
// schema holds the output on WebGPU and on the CPU alike (the same tokens as
// `hearth generate --json-schema`), bad formats are refused before any token, and tool calls
// come back as OpenAI's `tool_calls` through the Qwen3 template, streamed or not, with the
// conversation going on from a tool's answer over the cached prefix.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliBackend, openBench } from './chromium.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEARTH = join(ROOT, 'target/release/hearth');
const PROMPT = 'A listing as JSON:';
const SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 10 },
    rooms: { type: 'integer', minimum: 1, maximum: 9 },
    kind: { enum: ['flat', 'house'] },
  },
  required: ['city', 'rooms', 'kind'],
  additionalProperties: false,
};
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};

let bench, dir, page, url;

before(async () => {
  bench = await openBench('structured', (dir) => {
    // Qwen3's real template (which takes tools) and 151,936-token vocabulary.
    writeFileSync(join(dir, 'qwen3.gguf'), gunzipSync(readFileSync(join(ROOT, 'tests/fixtures/models/qwen3-tiny.q8_0.gguf.gz'))));
    writeFileSync(join(dir, 'schema.json'), JSON.stringify(SCHEMA));
  }, { logErrors: true });
  ({ dir, page } = bench);
  url = `${bench.models.url}/qwen3.gguf`;
});

after(() => bench?.close());

function checkListing(text) {
  const v = JSON.parse(text);
  assert.deepEqual(Object.keys(v), ['city', 'rooms', 'kind']);
  assert.ok(typeof v.city === 'string' && v.city.length <= 10, text);
  assert.ok(Number.isInteger(v.rooms) && v.rooms >= 1 && v.rooms <= 9, text);
  assert.ok(['flat', 'house'].includes(v.kind), text);
}

test('a JSON schema holds the output on WebGPU and on the CPU: the tokens of `hearth generate --json-schema`', async () => {
  for (const backend of ['webgpu', 'cpu']) {
    const want = JSON.parse(execFileSync(HEARTH, [
      'generate', '--model', join(dir, 'qwen3.gguf'), '--prompt', PROMPT, '--max-tokens', '60',
      '--temperature', '0.9', '--top-k', '40', '--seed', '3', '--json-schema', join(dir, 'schema.json'),
      '--backend', cliBackend(backend), '--json',
    ]).toString());
    checkListing(want.text);
    const r = await page.evaluate(async ({ url, backend, prompt, schema }) => {
      const engine = await window.Hearth.load(url, { backend });
      const tokens = [];
      let text = '';
      const it = engine.generate(prompt, {
        max_tokens: 60, temperature: 0.9, top_k: 40, seed: 3,
        response_format: { type: 'json_schema', json_schema: { name: 'listing', schema, strict: true } },
      })[Symbol.asyncIterator]();
      let r;
      while (!(r = await it.next()).done) { tokens.push(r.value.token); text += r.value.text; }
      const out = { tokens, text, finish: r.value.finishReason, backend: engine.info.backend };
      engine.dispose();
      return out;
    }, { url, backend, prompt: PROMPT, schema: SCHEMA });
    assert.equal(r.backend, backend);
    checkListing(r.text);
    assert.equal(r.text, want.text);
    // The CLI lists the final token too; the package reports every token it streamed.
    assert.deepEqual(r.tokens, want.generated.slice(0, r.tokens.length));
    assert.equal(r.finish, 'stop');
  }
});

test('a format that cannot be used is a bad_request naming why, before any token; abort works mid-format', async () => {
  const r = await page.evaluate(async ({ url }) => {
    const engine = await window.Hearth.load(url, { backend: 'webgpu' });
    const out = [];
    const bad = [
      { type: 'json_schema', json_schema: { name: 'broken', schema: { type: 'strin' }, strict: true } },
      { type: 'grammar', grammar: 'start: missing_rule' },
      { type: 'json_schema', json_schema: { schema: {} } },
      { type: 'yaml' },
    ];
    for (const response_format of bad) {
      let tokens = 0;
      try {
        for await (const _ of engine.generate('x', { response_format })) tokens++;
        out.push('accepted');
      } catch (e) { out.push([e.code, e.message, tokens]); }
    }
    const controller = new AbortController();
    let seen = 0;
    try {
      const format = { type: 'json_schema', json_schema: { name: 'long', schema: { type: 'array', items: { type: 'integer' }, minItems: 200 } } };
      for await (const _ of engine.generate('x', { max_tokens: 400, response_format: format, signal: controller.signal })) {
        if (++seen === 3) controller.abort();
      }
      out.push('not aborted');
    } catch (e) { out.push([e.code, seen]); }
    // The engine goes on.
    let text = '';
    for await (const t of engine.generate('x', { max_tokens: 8, response_format: { type: 'regex', regex: '[0-9]{4}' } })) text += t.text;
    out.push(text);
    engine.dispose();
    return out;
  }, { url });
  assert.deepEqual(r[0].slice(0, 1).concat(r[0][2]), ['bad_request', 0]);
  assert.match(r[0][1], /broken.*strin/s);
  assert.deepEqual([r[1][0], r[1][2]], ['bad_request', 0]);
  assert.match(r[1][1], /grammar/);
  assert.match(r[2][1], /name/);
  assert.match(r[3][1], /yaml/);
  assert.deepEqual(r[4], ['aborted', 3]);
  assert.match(r[5], /^[0-9]{4}$/);
});

test('tool calls come back as tool_calls through the Qwen3 template, streamed or not, and a tool answer reuses the cache', async () => {
  const r = await page.evaluate(async ({ url, tool }) => {
    const engine = await window.Hearth.load(url, { backend: 'webgpu' });
    const messages = [{ role: 'user', content: 'Weather in Oslo?' }];
    const first = await engine.chat.completions.create({
      messages, tools: [tool], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 60, temperature: 0,
    });
    const chunks = [];
    const stream = await engine.chat.completions.create({
      messages, tools: [tool], tool_choice: { type: 'function', function: { name: 'get_weather' } },
      parallel_tool_calls: false, max_tokens: 60, temperature: 0, stream: true,
    });
    for await (const c of stream) chunks.push(c);
    const call = first.choices[0].message.tool_calls?.[0];
    const next = await engine.chat.completions.create({
      messages: [...messages, first.choices[0].message, { role: 'tool', tool_call_id: call?.id, content: '{"temp": 3}' }],
      tools: [tool], tool_choice: 'none', max_tokens: 4, temperature: 0,
    });
    let unknown = null;
    try {
      await engine.chat.completions.create({ messages, tools: [tool], tool_choice: { type: 'function', function: { name: 'nope' } } });
    } catch (e) { unknown = [e.code, e.message]; }
    engine.dispose();
    return { first, chunks, next, unknown };
  }, { url, tool: WEATHER });
  const choice = r.first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(r.first));
  assert.equal(choice.message.content, null);
  assert.equal(choice.message.tool_calls.length, 1);
  for (const call of choice.message.tool_calls) {
    assert.match(call.id, /^call_[0-9a-f]{32}$/);
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    const args = JSON.parse(call.function.arguments);
    assert.deepEqual(Object.keys(args), ['city', 'unit']);
    assert.ok(args.city.length <= 8 && ['c', 'f'].includes(args.unit), call.function.arguments);
  }
  // Streamed: no call text as content, the calls in one delta, then the finish reason.
  const content = r.chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(content, '');
  const deltas = r.chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
  assert.deepEqual(deltas.map((d) => [d.index, d.function.name]), choice.message.tool_calls.map((c, i) => [i, c.function.name]));
  assert.deepEqual(deltas.map((d) => d.function.arguments), choice.message.tool_calls.map((c) => c.function.arguments));
  assert.equal(r.chunks.at(-1).choices[0].finish_reason, 'tool_calls');
  // The tool's answer continues the conversation over the prompt and call already cached.
  assert.ok(r.next.usage.prompt_tokens_details.cached_tokens > r.first.usage.prompt_tokens, JSON.stringify(r.next.usage));
  assert.equal(r.next.choices[0].message.tool_calls, undefined);
  assert.deepEqual([r.unknown[0]], ['bad_request']);
  assert.match(r.unknown[1], /nope/);
});
