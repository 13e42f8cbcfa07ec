// A CPU model split by rows across workers (tensor parallel): the engine's worker holds the
// first shard of every matrix and runs the model; each other shard lives in a worker of its
// own (shard.js), a wasm instance with its own memory, so the model may exceed what one
// instance addresses. Where the page is cross-origin isolated they share one
// SharedArrayBuffer, on which the shards block; elsewhere each request and each answer is a
// message, which the engine awaits (hearth-web's shards.rs).

import { HearthError } from './errors.js';

/** The most workers `auto` takes: more shards than this only add waiting. */
const MAX_WORKERS = 8;
/** How long the engine waits for the answers to a request by message (as PATIENCE in shards.rs). */
const PATIENCE_MS = 30_000;

export const SHARD = /** @type {const} */ ({
  start: 'start',
  put: 'put',
  serve: 'serve',
  ask: 'ask',
  serving: 'serving',
  answer: 'answer',
  error: 'error',
});

/**
 * The shared buffer's control block, as hearth-web's shards.rs lays it out: its length in
 * i32s, the index of the answers' count and of why the shards cannot answer (`FAILED`).
 */
export const CONTROL = /** @type {const} */ ({ ints: 16, answered: 1, failed: 2 });
/** Why the shards cannot answer: one failed, or none answered in time. */
export const FAILED = /** @type {const} */ ({ worker: 1, silent: 2 });

/**
 * @typedef {{ op: 'start', headers: Array<[prefix: Uint8Array, size: number]>, contextLength: number, index: number, count: number }
 *   | { op: 'put', file: number, offset: number, bytes: Uint8Array }
 *   | { op: 'serve', buffer: SharedArrayBuffer | null }
 *   | { op: 'ask', words: Uint32Array, input: Float32Array }} ShardMessage
 * @typedef {{ type: 'serving', memory: number }
 *   | { type: 'answer', spans: Uint32Array, values: Float32Array }
 *   | { type: 'error', error: ReturnType<HearthError['toJSON']> }} ShardReply
 */

/**
 * The workers to split a CPU model across: `requested`, else one per core (at most
 * MAX_WORKERS).
 * @param {number | undefined} requested
 */
export function cpuWorkers(requested) {
  return requested ?? Math.max(1, Math.min(self.navigator.hardwareConcurrency || 1, MAX_WORKERS));
}

/** The workers holding shards 1..count-1 of a CPU model. */
export class Shards {
  /**
   * Starts `count - 1` workers, each reading the model's headers as the engine's did.
   * @param {number} count
   * @param {Array<[prefix: Uint8Array, size: number]>} headers
   * @param {number} contextLength
   */
  constructor(count, headers, contextLength) {
    /** @type {Worker[]} */
    this.workers = [];
    /** @type {HearthError | null} the first failure of any worker */
    this.failure = null;
    /** @type {Array<(memory: number) => void>} */
    this.waiting = [];
    /** @type {Int32Array | null} the control block of the buffer they answer through */
    this.control = null;
    /** @type {import('./wasm/hearth_web.js').Mailbox | null} where their answers go, by message */
    this.mailbox = null;
    /** @type {number} why they cannot answer by message (FAILED), 0 while they can */
    this.why = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.deadline = undefined;
    for (let index = 1; index < count; index++) {
      const w = new Worker(new URL('./shard.js', import.meta.url), { type: 'module', name: `hearth shard ${index}` });
      w.onmessage = (/** @type {MessageEvent<ShardReply>} */ { data }) => {
        if (data.type === SHARD.error) this.fail(HearthError.from(data.error));
        else if (data.type === SHARD.answer) this.answered(data.spans, data.values);
        else this.waiting.shift()?.(data.memory);
      };
      w.onerror = (e) => { e.preventDefault(); this.fail(new HearthError('internal', `a CPU worker failed: ${e.message}`)); };
      /** @type {ShardMessage} */
      const start = { op: SHARD.start, headers, contextLength, index, count };
      w.postMessage(start);
      this.workers.push(w);
    }
  }

  /** @param {HearthError} e */
  fail(e) {
    this.failure ??= e;
    for (const resume of this.waiting.splice(0)) resume(0);
    this.lose(FAILED.worker);
  }

  /**
   * Ends the service by message: the engine awaiting an answer traps (see worker.js).
   * @param {number} why
   */
  lose(why) {
    if (!this.mailbox || this.why) return;
    this.why = why;
    clearTimeout(this.deadline);
    this.mailbox.fail();
  }

  /**
   * Forwards a piece of the download to every worker (each keeps its rows of it).
   * @param {number} file
   * @param {number} offset
   * @param {Uint8Array} bytes
   */
  put(file, offset, bytes) {
    if (this.failure) throw this.failure;
    /** @type {ShardMessage} */
    const piece = { op: SHARD.put, file, offset, bytes };
    for (const w of this.workers) w.postMessage(piece);
  }

  /**
   * Once every worker has its shard, has them answer `engine` through a buffer they share.
   * @param {import('./wasm/hearth_web.js').Engine} engine
   */
  async serve(engine) {
    const buffer = self.crossOriginIsolated ? new SharedArrayBuffer(engine.peerBufferBytes()) : null;
    if (buffer) this.control = new Int32Array(buffer, 0, CONTROL.ints);
    if (this.failure) throw this.failure;
    /** @type {Promise<number>[]} each worker's wasm memory, once it serves */
    const serving = this.workers.map(() => new Promise((resolve) => this.waiting.push(resolve)));
    /** @type {ShardMessage} */
    const serve = { op: SHARD.serve, buffer };
    for (const w of this.workers) w.postMessage(serve);
    const memory = (await Promise.all(serving)).reduce((a, b) => a + b, 0);
    if (this.failure) throw this.failure;
    if (buffer) engine.setPeers(buffer, memory);
    else this.mailbox = engine.setMessagePeers((/** @type {Uint32Array} */ words, /** @type {Float32Array} */ input) => this.ask(words, input), memory);
  }

  /**
   * Hands a request to every worker, by message.
   * @param {Uint32Array} words
   * @param {Float32Array} input
   */
  ask(words, input) {
    /** @type {ShardMessage} */
    const ask = { op: SHARD.ask, words, input };
    for (const w of this.workers) w.postMessage(ask);
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => this.lose(FAILED.silent), PATIENCE_MS);
  }

  /**
   * A worker's rows of the current request.
   * @param {Uint32Array} spans
   * @param {Float32Array} values
   */
  answered(spans, values) {
    if (this.why || !this.mailbox) return;
    if (this.mailbox.answer(spans, values)) clearTimeout(this.deadline);
  }

  /**
   * Where the engine stopped because the workers cannot answer (it traps: see FAILED in
   * hearth-web's shards.rs), the error that says so, as a lost device: the page's engine loads
   * the model again.
   * @returns {HearthError | null}
   */
  lost() {
    const why = this.control ? Atomics.load(this.control, CONTROL.failed) : this.why;
    if (why === 0) return null;
    const what = why === FAILED.silent ? 'stopped answering for 30 s' : `failed${this.failure ? ` (${this.failure.message})` : ''}`;
    return new HearthError('device_lost', `a CPU worker ${what}; the model must be loaded again`);
  }

  terminate() {
    clearTimeout(this.deadline);
    for (const w of this.workers) w.terminate();
  }
}
