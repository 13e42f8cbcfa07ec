// Qwen3.5 (`qwen35`: Gated DeltaNet layers, whose recurrent state cannot be cut back to a
// prefix, beside gated-attention layers) through the npm package in headless Chromium, on
// WebGPU (SwiftShader) and the CPU: greedy text equal to the CLI's; chat turns that go on, ask
// again or edit the last message, continuing from snapshots of the recurrent state exactly as
// a fresh engine computes; and an abort midway.
// Needs pkg/wasm (scripts/build-wasm.sh) and target/release/hearth (the reference). One engine
// per backend serves every test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertLikeReference, cliBackend, fixtureBench, heldAfter, runFollowUps } from './chromium.mjs';
import { withChatTemplate } from './gguf.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEARTH = join(ROOT, 'target/release/hearth');
const BACKENDS = ['webgpu', 'cpu'];
// Over 64 tokens: more than one chunk of the prompt path's delta rule.
const LONG = Array.from({ length: 8 }, (_, i) => `Line ${i + 1}: the quick brown fox jumps over the lazy dog.`).join(' ');
// Decode steps are slow on SwiftShader (the 248k-token head, about a second each): few of them,
// for generations and for chat replies.
const STEPS = 4;
const MAX = 3;

let bench, model, page;

before(async () => {
  // The tiny fixture has the real Qwen3.5 vocabulary and no chat template: the tests' own.
  bench = await fixtureBench('qwen35', 'qwen35-tiny.q8_0', BACKENDS, { edit: withChatTemplate });
  ({ model, page } = bench);
});

after(() => bench?.close());

/**
 * `hearth chat`'s greedy replies to `lines` (one user turn each), as it prints them, on the CLI
 * backend that the package's `backend` matches (cliBackend).
 */
function chatReference(lines, maxTokens, backend) {
  return execFileSync(HEARTH, ['chat', '--model', model, '--max-tokens', String(maxTokens), '--backend', cliBackend(backend)], {
    input: lines.map((l) => `${l}\n`).join(''),
    stdio: ['pipe', 'pipe', 'ignore'],
  }).toString();
}

for (const backend of BACKENDS) {
  test(`${backend}: greedy text equals \`hearth generate\`; prompts that go on from the last reply, or depart after it, run only their new tokens`, async () => {
    // The second prompt goes on from the first reply; the third departs after it.
    const { runs, info } = await runFollowUps(page, backend, LONG, [' And so on.', ' Or not.'], STEPS);
    assert.equal(info.backend, backend, `fell back: ${info.fallbackReason}`);
    assert.equal(info.architecture, 'qwen35');
    for (const run of runs) assertLikeReference(model, run.got, run.prompt, STEPS, backend);
    assert.ok(runs[0].got.usage.prompt_tokens > 64, `the prompt has ${runs[0].got.usage.prompt_tokens} tokens`);
    // This fixture's reply reads back as the same tokens, so the later prompts start with all
    // that the first run left: the second goes on from the state as it is, the third from the
    // snapshot the second took there.
    const held = heldAfter(runs[0]);
    for (const i of [1, 2]) {
      assert.deepEqual(runs[i].tokens.slice(0, held.length), held, 'the reply re-tokenizes to itself (if the fixture changed, pick a prompt whose reply does)');
      assert.equal(runs[i].got.usage.prompt_tokens_details.cached_tokens, held.length);
    }
  });
}


for (const backend of BACKENDS) {
  test(`${backend}: a chat goes on, asks again and edits its last message from snapshots, answering as \`hearth chat\` and a fresh engine do`, async () => {
    const r = await page.evaluate(async ({ backend, max }) => {
      const engine = window.engines[backend];
      await engine.reset();
      const ask = async (e, messages) => {
        const reply = await e.chat.completions.create({ messages, temperature: 0, max_tokens: max });
        return { content: reply.choices[0].message.content, usage: reply.usage };
      };
      const first = [{ role: 'user', content: 'Hello there' }];
      const one = await ask(engine, first);
      const next = [...first, { role: 'assistant', content: one.content }, { role: 'user', content: 'And then?' }];
      const two = await ask(engine, next);
      const again = await ask(engine, next);
      const edited = [...next.slice(0, -1), { role: 'user', content: 'Tell me more.' }];
      const changed = await ask(engine, edited);
      // The same requests on an engine that has seen nothing else (and is reset between them):
      // state computed from the start, not restored from snapshots.
      const other = await window.Hearth.load(window.url, { backend, cache: false });
      const fresh = [await ask(other, next)];
      await other.reset();
      fresh.push(await ask(other, edited));
      other.dispose();
      return { one, two, again, changed, fresh };
    }, { backend, max: MAX });
    const { one, two, again, changed, fresh } = r;
    assert.equal(`${one.content}\n${two.content}\n`, chatReference(['Hello there', 'And then?'], MAX, backend), 'both turns equal `hearth chat`');
    const cached = (x) => x.usage.prompt_tokens_details.cached_tokens;
    // The second turn continues where the first reply ended (its last token was chosen, never
    // run) when the reply re-tokenizes to the same tokens; else from the snapshot taken just
    // before the first prompt's last token.
    const goesOn = [one.usage.prompt_tokens + one.usage.completion_tokens - 1, one.usage.prompt_tokens - 1];
    assert.ok(goesOn.includes(cached(two)), `the second turn reused ${cached(two)} tokens; snapshots at ${goesOn}`);
    // Asked again, it reruns the prompt's last token only, and answers the same.
    assert.equal(cached(again), two.usage.prompt_tokens - 1);
    assert.equal(again.content, two.content);
    // An edited last message goes back to the snapshot the second turn went on from.
    assert.equal(cached(changed), cached(two));
    for (const [got, want, what] of [[two, fresh[0], 'the second turn'], [changed, fresh[1], 'the edited turn']]) {
      assert.equal(cached(want), 0);
      assert.equal(want.usage.prompt_tokens, got.usage.prompt_tokens);
      assert.equal(got.content, want.content, `${what}: the restored state answers as one computed from the start`);
    }
  });
}

for (const backend of BACKENDS) {
  test(`${backend}: an abort midway stops the stream; the engine then continues the prompt exactly`, async () => {
    const more = `${LONG} And then the dog woke up.`;
    const r = await page.evaluate(async ({ backend, prompt, more, steps }) => {
      const engine = window.engines[backend];
      await engine.reset();
      const controller = new AbortController();
      let got = 0;
      let code = null;
      try {
        for await (const t of engine.generate(prompt, { max_tokens: 100, signal: controller.signal })) {
          void t;
          if (++got < 3) continue;
          // Let more tokens come from the worker first: the abort must drop them too.
          await new Promise((resolve) => setTimeout(resolve, 300));
          controller.abort();
        }
      } catch (e) {
        code = e.code;
      }
      const after = await window.generate(engine, more, { max_tokens: steps });
      const tokens = [await engine.tokenize(prompt), await engine.tokenize(more)];
      return { code, got, after, tokens };
    }, { backend, prompt: LONG, more, steps: STEPS });
    assert.equal(r.code, 'aborted');
    assert.equal(r.got, 3, 'no token arrives after the abort');
    // The next prompt extends the aborted one, whose state was snapshotted before its last
    // token: that token and the new ones run.
    assert.deepEqual(r.tokens[1].slice(0, r.tokens[0].length), r.tokens[0]);
    assert.equal(r.after.usage.prompt_tokens_details.cached_tokens, r.tokens[0].length - 1);
    assertLikeReference(model, r.after, more, STEPS, backend);
  });
}
