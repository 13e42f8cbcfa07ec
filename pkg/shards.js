// A CPU model split by rows across workers (tensor parallel): the engine's worker holds the
// first shard of every matrix and runs the model; each other shard lives in a worker of its
// own (shard.js), a wasm instance with its own memory, so the model may exceed what one
// instance addresses. They share one SharedArrayBuffer, hence the page must be cross-origin
// isolated; elsewhere the engine keeps every matrix itself.

import { HearthError } from './errors.js';

/** The most workers `auto` takes: more shards than this only add waiting. */
const MAX_WORKERS = 8;

export const SHARD = /** @type {const} */ ({
  start: 'start',
  put: 'put',
  serve: 'serve',
  serving: 'serving',
  error: 'error',
});

/**
 * @typedef {{ op: 'start', headers: Array<[prefix: Uint8Array, size: number]>, contextLength: number, index: number, count: number }
 *   | { op: 'put', file: number, offset: number, bytes: Uint8Array }
 *   | { op: 'serve', buffer: SharedArrayBuffer }} ShardMessage
 * @typedef {{ type: 'serving', memory: number } | { type: 'error', error: ReturnType<HearthError['toJSON']> }} ShardReply
 */

/**
 * The workers to split a CPU model across: `requested`, else one per core (at most
 * MAX_WORKERS); one where the page is not cross-origin isolated (no SharedArrayBuffer).
 * @param {number | undefined} requested
 */
export function cpuWorkers(requested) {
  if (!self.crossOriginIsolated) return 1;
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
    for (let index = 1; index < count; index++) {
      const w = new Worker(new URL('./shard.js', import.meta.url), { type: 'module', name: `hearth shard ${index}` });
      w.onmessage = (/** @type {MessageEvent<ShardReply>} */ { data }) => {
        if (data.type === SHARD.error) this.fail(HearthError.from(data.error));
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
    const buffer = new SharedArrayBuffer(engine.peerBufferBytes());
    this.control = new Int32Array(buffer, 0, 16);
    if (this.failure) throw this.failure;
    /** @type {Promise<number>[]} each worker's wasm memory, once it serves */
    const serving = this.workers.map(() => new Promise((resolve) => this.waiting.push(resolve)));
    /** @type {ShardMessage} */
    const serve = { op: SHARD.serve, buffer };
    for (const w of this.workers) w.postMessage(serve);
    const memory = await Promise.all(serving);
    if (this.failure) throw this.failure;
    engine.setPeers(buffer, memory.reduce((a, b) => a + b, 0));
  }

  /**
   * Where the engine stopped because the workers cannot answer (it traps: see FAILED in
   * hearth-web's shards.rs), the error that says so, as a lost device: the page's engine loads
   * the model again.
   * @returns {HearthError | null}
   */
  lost() {
    const why = this.control ? Atomics.load(this.control, 5) : 0;
    if (why === 0) return null;
    const what = why === 2 ? 'stopped answering for 30 s' : `failed${this.failure ? ` (${this.failure.message})` : ''}`;
    return new HearthError('device_lost', `a CPU worker ${what}; the model must be loaded again`);
  }

  terminate() {
    for (const w of this.workers) w.terminate();
  }
}
