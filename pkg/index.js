// Hearth: quantized GGUF language models in the browser. The engine lives in a dedicated module
// Worker (worker.js); this module is the page-side handle that talks to it, so nothing here
// blocks the thread it runs on. It works the same when imported inside a worker.

import { HearthError, ERROR_CODES } from './errors.js';
import { listCache, deleteCache } from './fetch.js';
import { OP, REPLY } from './protocol.js';

export { HearthError, ERROR_CODES };

/**
 * @typedef {import('./index.js').Hearth} Declared the class as index.d.ts declares it
 * @typedef {import('./index.js').ModelSource} ModelSource
 * @typedef {import('./index.js').Backend} Backend
 * @typedef {import('./index.js').LoadOptions} LoadOptions
 * @typedef {import('./index.js').EngineInfo} EngineInfo
 * @typedef {import('./index.js').Architecture} Architecture
 * @typedef {import('./index.js').ChatCompletionRequest} ChatCompletionRequest
 * @typedef {import('./index.js').ChatCompletion} ChatCompletion
 * @typedef {import('./index.js').ChatCompletionChunk} ChatCompletionChunk
 * @typedef {import('./index.js').SamplingParams} SamplingParams
 * @typedef {import('./index.js').GenerateOptions} GenerateOptions
 * @typedef {import('./index.js').TokenizeOptions} TokenizeOptions
 * @typedef {import('./index.js').DetokenizeOptions} DetokenizeOptions
 * @typedef {import('./index.js').FinishReason} FinishReason
 * @typedef {import('./index.js').ToolCall} ToolCall
 * @typedef {import('./protocol.js').Ops} Ops
 * @typedef {import('./protocol.js').WorkerMessage} WorkerMessage
 * @typedef {import('./protocol.js').EngineMessage} EngineMessage
 * @typedef {import('./protocol.js').EngineOptions} EngineOptions
 * @typedef {import('./protocol.js').GenerationEnd} GenerationEnd
 * @typedef {import('./protocol.js').Token} Token
 * @typedef {import('./protocol.js').PageMessage} PageMessage
 */

let nextId = 1;
/**
 * Hearth.architectures()'s answer, once asked.
 * @type {Promise<readonly Readonly<Architecture>[]> | null}
 */
let architectureList = null;

/** Milliseconds a worker may take to answer an abort before it is ended (`abortTimeout`). */
const ABORT_TIMEOUT = 3000;

/** @param {AbortSignal | undefined} signal */
function abortError(signal) {
  const reason = signal?.reason;
  return new HearthError('aborted', reason?.message || 'aborted');
}

/**
 * Runs `read`, which takes a caller's request apart: what it throws on data it cannot take (a
 * Symbol, a BigInt, a cycle, values nested too deep) becomes a bad_request naming `what`.
 * @template T
 * @param {string} what
 * @param {() => T} read
 * @returns {T}
 */
function reading(what, read) {
  try {
    return read();
  } catch (/** @type {any} */ e) {
    if (e instanceof HearthError) throw e;
    throw new HearthError('bad_request', `${what} cannot be read: ${e?.message ?? e}`, { cause: e });
  }
}

/**
 * `value` as JSON text, or a bad_request naming it.
 * @type {(name: string, value: unknown) => string}
 */
const json = (name, value) => reading(name, () => JSON.stringify(value));

/**
 * Flattens OpenAI message content (a string or an array of parts) to text.
 * @param {unknown} content
 * @returns {string}
 */
function messageText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((part) => {
      if (part?.type === 'text') return part.text;
      throw new HearthError('bad_request', `message parts of type ${JSON.stringify(part?.type)} are not supported`);
    }).join('');
  }
  if (content == null) return '';
  throw new HearthError('bad_request', 'message content must be a string or an array of text parts');
}

/**
 * An OpenAI message as the engine takes it: text content, tool-call arguments as JSON text.
 * @param {any} m a message as the caller gave it, checked here
 */
function chatMessage(m) {
  /** @type {EngineMessage} */
  const out = { role: String(m?.role), content: messageText(m?.content) };
  if (m?.tool_calls != null) {
    if (!Array.isArray(m.tool_calls)) throw new HearthError('bad_request', 'tool_calls must be an array');
    out.tool_calls = m.tool_calls.map((/** @type {any} */ c) => {
      if (c?.type != null && c.type !== 'function') throw new HearthError('bad_request', `tool calls of type ${JSON.stringify(c.type)} are not supported`);
      const args = c?.function?.arguments;
      return {
        ...(c?.id != null && { id: String(c.id) }),
        type: 'function',
        function: { name: String(c?.function?.name), arguments: typeof args === 'string' ? args : json('tool call arguments', args ?? {}) },
      };
    });
  }
  if (m?.tool_call_id != null) out.tool_call_id = String(m.tool_call_id);
  if (m?.name != null) out.name = String(m.name);
  return out;
}

/**
 * The calls of a reply, as OpenAI's `tool_calls` (each with a new id).
 * @param {GenerationEnd['toolCalls']} calls
 * @returns {ToolCall[]}
 */
function toolCalls(calls) {
  return calls.map(({ name, arguments: args }) => ({
    id: `call_${crypto.randomUUID().replaceAll('-', '')}`,
    type: 'function',
    function: { name, arguments: args },
  }));
}

/**
 * The options each call takes, as index.d.ts declares them (its types keep these lists and the
 * declarations equal): OpenAI's request fields in snake_case, Hearth's own in camelCase.
 * @type {Record<keyof SamplingParams, true>}
 */
const SAMPLING_FIELDS = {
  max_tokens: true, max_completion_tokens: true, temperature: true, top_p: true, top_k: true, min_p: true,
  seed: true, stop: true, frequency_penalty: true, presence_penalty: true, repetition_penalty: true,
  logit_bias: true, response_format: true, signal: true,
};
/** @type {Record<keyof ChatCompletionRequest, true>} */
const CHAT_FIELDS = {
  ...SAMPLING_FIELDS, messages: true, tools: true, tool_choice: true, parallel_tool_calls: true, model: true,
  stream: true, stream_options: true,
};
/** @type {Record<keyof GenerateOptions, true>} */
const GENERATE_FIELDS = { ...SAMPLING_FIELDS, addSpecial: true };
/** @type {Record<keyof LoadOptions, true>} */
const LOAD_FIELDS = { onProgress: true, signal: true, contextLength: true, backend: true, cache: true, abortTimeout: true, workers: true };
/** @type {Record<keyof TokenizeOptions, true>} */
const TOKENIZE_FIELDS = { addSpecial: true };
/** @type {Record<keyof DetokenizeOptions, true>} */
const DETOKENIZE_FIELDS = { skipSpecial: true };

/**
 * Refuses a field of `options` that `fields` lacks, naming it, and the field it stands for
 * where only the case differs (`maxTokens` for `max_tokens`, `abort_timeout` for `abortTimeout`).
 * @param {string} call the entry point, for the message
 * @param {object} options
 * @param {Record<string, true>} fields
 */
function checkFields(call, options, fields) {
  for (const key of reading(`the options of ${call}`, () => Object.keys(options))) {
    if (Object.hasOwn(fields, key)) continue;
    const other = key.includes('_')
      ? key.replace(/_([a-z])/g, (_, c) => c.toUpperCase())
      : key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    const hint = Object.hasOwn(fields, other) ? ` (did you mean "${other}"?)` : '';
    throw new HearthError('bad_request', `${call} has no option "${key}"${hint}`);
  }
}

/**
 * OpenAI's request fields -> the engine's generation options.
 * @param {Partial<GenerateOptions & ChatCompletionRequest>} req
 * @param {{ maxTokens: number, temperature: number }} defaults
 */
function generationOptions(req, defaults) {
  const stop = req.stop == null ? [] : Array.isArray(req.stop) ? req.stop : [req.stop];
  /** @type {EngineOptions} */
  const opts = {
    maxTokens: req.max_tokens ?? req.max_completion_tokens ?? defaults.maxTokens,
    stop,
    sampling: {
      temperature: req.temperature ?? defaults.temperature,
      topP: req.top_p ?? 1,
      topK: req.top_k ?? 0,
      minP: req.min_p ?? 0,
      frequencyPenalty: req.frequency_penalty ?? 0,
      presencePenalty: req.presence_penalty ?? 0,
      repeatPenalty: req.repetition_penalty ?? 1,
      seed: req.seed ?? Math.floor(Math.random() * 2 ** 32),
      logitBias: req.logit_bias ? Object.entries(req.logit_bias).map(([id, b]) => [Number(id), b]) : [],
    },
  };
  // As JSON text: the engine reads a schema's integers as integers.
  const format = req.response_format;
  if (format != null) {
    if (typeof format !== 'object') throw new HearthError('bad_request', 'response_format must be an object such as { type: "json_object" }');
    opts.responseFormat = json('response_format', format);
  }
  if (req.tools != null) {
    if (!Array.isArray(req.tools)) throw new HearthError('bad_request', 'tools must be an array of { type: "function", function }');
    opts.tools = json('tools', req.tools);
  }
  if (req.tool_choice != null) opts.toolChoice = json('tool_choice', req.tool_choice);
  if (req.parallel_tool_calls != null) opts.parallelToolCalls = Boolean(req.parallel_tool_calls);
  if (req.addSpecial !== undefined) opts.addSpecial = req.addSpecial;
  return opts;
}

/**
 * OpenAI's finish_reason for the engine's: a format that dead-ended is "stop", and the choice
 * says why in `stop_reason`.
 * @param {GenerationEnd['finishReason']} reason
 * @returns {{ finish_reason: FinishReason, stop_reason?: 'constraint' }}
 */
function finishFields(reason) {
  if (reason === 'length' || reason === 'tool_calls') return { finish_reason: reason };
  if (reason === 'constraint') return { finish_reason: 'stop', stop_reason: 'constraint' };
  return { finish_reason: 'stop' };
}

/**
 * The reply as OpenAI's assistant message: `content` is null when the reply is only calls.
 * @param {string} content
 * @param {GenerationEnd['toolCalls']} calls
 * @returns {ChatCompletion['choices'][number]['message']}
 */
function assistantMessage(content, calls) {
  if (!calls.length) return { role: 'assistant', content, refusal: null };
  return { role: 'assistant', content: content || null, refusal: null, tool_calls: toolCalls(calls) };
}

/**
 * A minimal async queue: the worker pushes, the consumer iterates.
 * @template T
 */
class Channel {
  constructor() {
    /** @type {T[]} */
    this.items = [];
    /** @type {{ resolve: (result: IteratorResult<T, undefined>) => void, reject: (error: unknown) => void } | null} */
    this.waiting = null;
    this.closed = false;
    /** @type {unknown} */
    this.error = null;
  }
  /** @param {T} item */
  push(item) {
    if (this.closed) return;
    if (this.waiting) { this.waiting.resolve({ value: item, done: false }); this.waiting = null; }
    else this.items.push(item);
  }
  /** @param {unknown} [error] */
  close(error = null) {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    if (this.waiting) {
      if (error) this.waiting.reject(error);
      else this.waiting.resolve({ value: undefined, done: true });
      this.waiting = null;
    }
  }
  /**
   * Ends the queue now with `error`, dropping what has not been taken yet.
   * @param {unknown} error
   */
  fail(error) {
    if (this.closed) return;
    this.items.length = 0;
    this.close(error);
  }
  /** @returns {Promise<IteratorResult<T, undefined>>} */
  next() {
    if (this.items.length) return Promise.resolve({ value: /** @type {T} */ (this.items.shift()), done: false });
    if (this.closed) return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => { this.waiting = { resolve, reject }; });
  }
}

/**
 * Ends `worker` unless it answers an abort within `ms`: a worker stuck in one long synchronous
 * call (a hostile chat template, say) cannot take its messages, and would otherwise hold the
 * CPU and memory until the tab dies. `onEnded` runs after the worker is terminated.
 * @param {Worker} worker
 * @param {number} ms
 * @param {() => void} onEnded
 * @returns {() => void} cancels it
 */
function watchdog(worker, ms, onEnded) {
  const timer = setTimeout(() => { worker.terminate(); onEnded(); }, ms);
  return () => clearTimeout(timer);
}

/**
 * Posts `message` to `worker`, typed as protocol.js describes it.
 * @param {Worker} worker
 * @param {PageMessage} message
 */
function send(worker, message) {
  worker.postMessage(message);
}

/**
 * What a Hearth was loaded with: LoadOptions with their defaults.
 * @typedef {{ contextLength?: number, backend: Backend, cache: boolean, abortTimeout: number, workers?: number }} Settings
 */

/**
 * Starts a worker and loads `source` in it: resolves to { worker, info } once the model is
 * ready; on failure or abort the worker is ended.
 * @param {ModelSource} source
 * @param {Settings & Pick<LoadOptions, 'onProgress' | 'signal'>} options
 * @returns {Promise<{ worker: Worker, info: EngineInfo }>}
 */
async function startEngine(source, { onProgress, signal, contextLength, backend, cache, abortTimeout, workers }) {
  if (signal?.aborted) throw abortError(signal);
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'hearth' });
  const id = nextId++;
  let furthest = { rank: -1, loaded: -1 };
  const phases = ['download', 'load'];
  let cancelWatchdog = () => {};
  /** @type {(() => void) | null} */
  let stalled = null;
  const onAbort = () => {
    send(worker, { op: OP.abort, target: id });
    cancelWatchdog = watchdog(worker, abortTimeout, () => stalled?.());
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    /** @type {EngineInfo} */
    const info = await new Promise((resolve, reject) => {
      stalled = () => reject(abortError(signal));
      worker.onerror = (e) => reject(new HearthError('internal', `the engine's worker failed to start: ${e.message || 'unknown error'}`));
      worker.onmessage = (/** @type {MessageEvent<WorkerMessage>} */ { data }) => {
        if (data.type === REPLY.abortAck) { cancelWatchdog(); return; }
        if (data.id !== id) return;
        if (data.type === REPLY.progress && onProgress) {
          const rank = phases.indexOf(data.progress.phase);
          // Only ever forward: a later phase, or more of the same one.
          if (rank > furthest.rank || (rank === furthest.rank && data.progress.loaded > furthest.loaded)) {
            furthest = { rank, loaded: data.progress.loaded };
            onProgress(data.progress);
          }
        } else if (data.type === REPLY.done) resolve(/** @type {EngineInfo} */ (data.value));
        else if (data.type === REPLY.error) reject(HearthError.from(data.error));
      };
      send(worker, { id, op: OP.load, source, options: { contextLength, backend, cache, workers } });
    });
    return { worker, info };
  } catch (e) {
    worker.terminate();
    throw signal?.aborted ? abortError(signal) : e;
  } finally {
    cancelWatchdog();
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * A call under way in the worker.
 * @typedef {{ onToken?: (token: Token) => void, resolve: (value: any) => void, reject: (error: unknown) => void }} Pending
 */

/**
 * The page's handle on one loaded model. It is an EventTarget: when the WebGPU device is lost
 * it fires "devicelost", rebuilds the engine in a new worker (on a new device where one can be
 * had, else on the CPU), then fires "restored" or, if that fails, "restorefailed".
 * @implements {Declared}
 */
export class Hearth extends EventTarget {
  /**
   * Use Hearth.load.
   * @private
   * @param {Worker} worker
   * @param {EngineInfo} info
   * @param {ModelSource} source
   * @param {Settings} options
   */
  constructor(worker, info, source, options) {
    super();
    /** @type {Map<number, Pending>} */
    this._pending = new Map();
    this._info = info;
    this._source = source;
    this._options = options;
    /**
     * Request id -> cancels the watchdog started by its abort.
     * @type {Map<number, () => void>}
     */
    this._watchdogs = new Map();
    /**
     * While the engine is being rebuilt: settles when it is ready again (or not).
     * @type {Promise<void> | null}
     */
    this._restoring = null;
    this._disposed = false;
    this._disposedBecause = 'the engine was disposed';
    this.model = info.name || `${info.architecture}-${info.quantization}`;
    this._worker = worker;
    this._listen();
    // The declared create() is overloaded on `stream`, which one body cannot be typed as.
    const create = /** @type {Declared['chat']['completions']['create']} */ ((req) => this._createCompletion(req));
    this.chat = { completions: { create } };
  }

  /** Facts about the model and where it runs (a snapshot, refreshed after each call). */
  get info() {
    return this._info;
  }

  /**
   * Loads a model. `source`: a URL, a File/Blob, or a list of URLs of a split GGUF file.
   * @param {ModelSource} source
   * @param {LoadOptions} [options]
   * @returns {Promise<Hearth>}
   */
  static async load(source, options = {}) {
    checkFields('Hearth.load()', options, LOAD_FIELDS);
    const { onProgress, signal, contextLength, backend = 'auto', cache = true, abortTimeout = ABORT_TIMEOUT, workers } = options;
    if (workers !== undefined && !(Number.isInteger(workers) && workers >= 1 && workers <= 64)) {
      throw new HearthError('bad_request', `workers must be an integer from 1 to 64, not ${JSON.stringify(workers)}`);
    }
    const settings = { contextLength, backend, cache, abortTimeout, workers };
    const { worker, info } = await startEngine(source, { ...settings, onProgress, signal });
    return new Hearth(worker, info, source, settings);
  }

  /**
   * The architectures this build runs, as `[{ name, models }]` (such as
   * `{ name: 'qwen35', models: 'Qwen3.5' }`), read from the wasm module in a short-lived
   * worker; no model is loaded. The list an `unsupported_architecture` error carries as
   * `supported` is the same.
   * @returns {Promise<readonly Readonly<Architecture>[]>}
   */
  static architectures() {
    if (!architectureList) {
      const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'hearth' });
      architectureList = new Promise((resolve, reject) => {
        worker.onerror = (e) => reject(new HearthError('internal', `the engine's worker failed to start: ${e.message || 'unknown error'}`));
        worker.onmessage = (/** @type {MessageEvent<WorkerMessage>} */ { data }) => {
          if (data.type === REPLY.done) resolve(Object.freeze(/** @type {Architecture[]} */ (data.value).map((a) => Object.freeze(a))));
          else if (data.type === REPLY.error) reject(HearthError.from(data.error));
        };
        send(worker, { id: nextId++, op: OP.architectures });
      }).finally(() => worker.terminate());
      // A failure is not remembered: the next call tries again.
      architectureList.catch(() => { architectureList = null; });
    }
    return architectureList;
  }

  /** Takes the messages of the engine's worker from now on. */
  _listen() {
    const worker = this._worker;
    worker.onmessage = (/** @type {MessageEvent<WorkerMessage>} */ { data }) => this._receive(data);
    worker.onerror = (e) => this._fail(new HearthError('internal', `the engine's worker failed: ${e.message || 'unknown error'}`));
  }

  /** @param {WorkerMessage} data */
  _receive(data) {
    if (data.type === REPLY.abortAck) {
      this._watchdogs.get(data.target)?.();
      this._watchdogs.delete(data.target);
      return;
    }
    const p = this._pending.get(data.id);
    if (!p) return;
    if (data.type === REPLY.token) p.onToken?.(data);
    else if (data.type === REPLY.done) {
      this._pending.delete(data.id);
      if (data.info) this._info = data.info;
      p.resolve(data.value);
    } else if (data.type === REPLY.error) {
      this._pending.delete(data.id);
      const error = HearthError.from(data.error);
      p.reject(error);
      if (error.code === 'device_lost') this._restore(error);
    }
  }

  /** @param {HearthError} error */
  _fail(error) {
    for (const p of this._pending.values()) p.reject(error);
    this._pending.clear();
  }

  /**
   * The device is gone: ends the worker (and what it held), and loads the model again in a new
   * one, on WebGPU where a device can be had and on the CPU otherwise (from the download cache
   * where it has the bytes). Calls made meanwhile wait for it; the conversation goes on, as
   * each request carries its messages: the new engine encodes them again.
   * @param {HearthError} cause
   */
  _restore(cause) {
    if (this._restoring || this._disposed) return;
    this._worker.terminate();
    this._fail(new HearthError('device_lost', cause.message));
    this.dispatchEvent(new CustomEvent('devicelost', { detail: { message: cause.message } }));
    const { backend = 'auto', ...rest } = this._options;
    /** @type {LoadOptions['onProgress']} */
    const onProgress = (progress) => this.dispatchEvent(new CustomEvent('progress', { detail: progress }));
    /** @param {Backend} on */
    const restart = (on) => startEngine(this._source, { ...rest, backend: on, onProgress });
    // WebGPU as asked where a device can be had again (even a software one, as at load), else
    // the CPU.
    const started = backend === 'webgpu' ? restart('webgpu').catch(() => restart('cpu')) : restart(backend);
    this._restoring = started.then(
      ({ worker, info }) => {
        if (this._disposed) { worker.terminate(); return; }
        this._worker = worker;
        this._listen();
        this._info = info;
        this.dispatchEvent(new CustomEvent('restored', { detail: { info } }));
      },
      (error) => {
        this._disposedBecause = `the device was lost and the engine could not be loaded again: ${error.message}`;
        this._disposed = true;
        this.dispatchEvent(new CustomEvent('restorefailed', { detail: { error } }));
      },
    ).finally(() => { this._restoring = null; });
  }

  /**
   * Sends request `op` to the worker: resolves to what it answers.
   * @template {keyof Ops} K
   * @param {K} op
   * @param {Ops[K]['args']} args
   * @param {{ onToken?: Pending['onToken'], signal?: AbortSignal }} [options]
   * @returns {Promise<Ops[K]['value']>}
   */
  async _call(op, args, { onToken, signal } = {}) {
    await this._restoring;
    if (this._disposed) throw new HearthError('disposed', this._disposedBecause);
    if (signal?.aborted) throw abortError(signal);
    const id = nextId++;
    const worker = this._worker;
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        worker.postMessage({ op: OP.abort, target: id });
        this._watchdogs.set(id, watchdog(worker, this._options.abortTimeout, () => this._stalled()));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        this._watchdogs.get(id)?.();
        this._watchdogs.delete(id);
      };
      this._pending.set(id, {
        onToken,
        resolve: (v) => { done(); resolve(v); },
        reject: (e) => { done(); reject(e); },
      });
      try {
        worker.postMessage({ id, op, ...args });
      } catch (/** @type {any} */ e) {
        // Functions, symbols or values nested too deep for the structured clone.
        this._pending.get(id)?.reject(new HearthError('bad_request', `the request cannot be sent to the engine: ${e.message}`, { cause: e }));
        this._pending.delete(id);
      }
    });
  }

  /**
   * The generation's items, { kind: 'token', text, token } then one { kind: 'end', ... };
   * leaving the iteration early (break, return, an error) stops the generation in the worker.
   * @param {Ops['generate']['args']} args
   * @param {AbortSignal | undefined} signal
   */
  async *_events(args, signal) {
    if (signal != null && !(signal instanceof AbortSignal)) throw new HearthError('bad_request', 'signal must be an AbortSignal');
    /** @type {Channel<{ kind: 'token', text: string, token: number | null } | ({ kind: 'end' } & GenerationEnd)>} */
    const channel = new Channel();
    const stop = new AbortController();
    // An abort ends the stream at once: tokens the worker sent before it saw the abort are
    // dropped, not delivered.
    const onAbort = () => { stop.abort(signal?.reason); channel.fail(abortError(signal)); };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    this._call(OP.generate, args, { signal: stop.signal, onToken: (t) => channel.push({ kind: 'token', text: t.text, token: t.token }) })
      .then((end) => { channel.push({ kind: 'end', ...end }); channel.close(); }, (e) => channel.close(e))
      .finally(() => signal?.removeEventListener('abort', onAbort));
    try {
      for (;;) {
        const { value, done } = await channel.next();
        if (done) return;
        yield value;
      }
    } finally {
      if (!channel.closed) stop.abort();
    }
  }

  /**
   * Continues `prompt` (raw text, no chat template): an async iterable of { text, token }.
   * Sampling options as in chat completions; greedy unless a temperature is given.
   * @param {string} prompt
   * @param {GenerateOptions} [options]
   */
  generate(prompt, options = {}) {
    const opts = reading('the options', () => {
      checkFields('generate()', options, GENERATE_FIELDS);
      return generationOptions(options, { maxTokens: 256, temperature: 0 });
    });
    const args = { prompt: reading('the prompt', () => String(prompt)), options: opts };
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        for await (const value of self._events(args, options.signal)) {
          if (value.kind === 'token') yield { text: value.text, token: value.token };
          else return { finishReason: value.finishReason, usage: value.usage };
        }
      },
    };
  }

  /**
   * @param {ChatCompletionRequest} req
   * @returns {Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>}
   */
  async _createCompletion(req) {
    if (!Array.isArray(req?.messages) || req.messages.length === 0) {
      throw new HearthError('bad_request', 'messages must be a non-empty array');
    }
    const messages = reading('the messages', () => req.messages.map(chatMessage));
    const options = reading('the request', () => {
      checkFields('chat.completions.create()', req, CHAT_FIELDS);
      return generationOptions(req, { maxTokens: 256, temperature: 1 });
    });
    const id = `chatcmpl-${crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = req.model ?? this.model;
    if (!req.stream) {
      let content = '';
      for await (const value of this._events({ messages, options }, req.signal)) {
        if (value.kind === 'token') content += value.text;
        else {
          return {
            id, object: 'chat.completion', created, model,
            choices: [{ index: 0, message: assistantMessage(content, value.toolCalls), logprobs: null, ...finishFields(value.finishReason) }],
            usage: value.usage,
          };
        }
      }
    }
    const self = this;
    /**
     * @param {ChatCompletionChunk['choices'][number]['delta']} delta
     * @param {{ finish_reason: FinishReason | null, stop_reason?: 'constraint' }} [finish]
     * @param {Pick<ChatCompletionChunk, 'usage'>} [extra]
     * @returns {ChatCompletionChunk}
     */
    const chunk = (delta, finish = { finish_reason: null }, extra = {}) => ({
      id, object: 'chat.completion.chunk', created, model,
      choices: [{ index: 0, delta, logprobs: null, ...finish }],
      ...extra,
    });
    const includeUsage = req.stream_options?.include_usage;
    return {
      async *[Symbol.asyncIterator]() {
        yield chunk({ role: 'assistant', content: '' });
        for await (const value of self._events({ messages, options }, req.signal)) {
          if (value.kind === 'token') {
            if (value.text) yield chunk({ content: value.text });
          } else {
            if (value.toolCalls?.length) {
              const calls = toolCalls(value.toolCalls).map((c, index) => ({ index, ...c }));
              yield chunk({ tool_calls: calls });
            }
            yield chunk({}, finishFields(value.finishReason), { usage: value.usage });
            if (includeUsage) yield { id, object: 'chat.completion.chunk', created, model, choices: [], usage: value.usage };
          }
        }
      },
    };
  }

  /**
   * Token ids of `text`; `addSpecial` (default true) adds the tokenizer's BOS/EOS.
   * @param {string} text
   * @param {TokenizeOptions} [options]
   */
  async tokenize(text, options = {}) {
    checkFields('tokenize()', options, TOKENIZE_FIELDS);
    const { addSpecial = true } = options;
    return this._call(OP.tokenize, { text: String(text), addSpecial });
  }

  /**
   * Text of token ids; `skipSpecial` leaves control tokens out.
   * @param {ArrayLike<number>} tokens
   * @param {DetokenizeOptions} [options]
   */
  async detokenize(tokens, options = {}) {
    checkFields('detokenize()', options, DETOKENIZE_FIELDS);
    const { skipSpecial = false } = options;
    return this._call(OP.detokenize, { tokens: Array.from(tokens), skipSpecial });
  }

  /** Forgets the conversation held in the KV cache. */
  async reset() {
    await this._call(OP.reset, {});
  }

  /** Stops the worker and frees the model's memory. */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    this._fail(new HearthError('disposed', this._disposedBecause));
    this._worker.terminate();
  }

  /** The watchdog ended the worker (already terminated): what was under way is aborted. */
  _stalled() {
    if (this._disposed) return;
    this._disposed = true;
    const ms = this._options.abortTimeout;
    this._disposedBecause = `the engine's worker did not answer an abort within ${ms} ms and was ended; load the model again`;
    for (const cancel of this._watchdogs.values()) cancel();
    this._watchdogs.clear();
    this._fail(new HearthError('aborted', this._disposedBecause));
  }
}

/** The download cache (Origin Private File System), shared by every engine of this origin. */
Hearth.cache = { list: listCache, delete: deleteCache };

// The static side as declared (the instance side is checked by @implements).
export default /** @satisfies {Pick<typeof import('./index.js').Hearth, 'load' | 'architectures' | 'cache'>} */ (Hearth);
