// The module Worker that holds one engine. The page talks to it with postMessage only (see
// index.js); everything slow — fetching, building the model, every forward pass — runs here.

import { Loader, GpuDevice, architectures } from './wasm/hearth_web.js';
import { start, wasmBuild } from './runtime.js';
import { HearthError } from './errors.js';
import { openSource } from './fetch.js';
import { OP, REPLY } from './protocol.js';
import { Shards, cpuWorkers } from './shards.js';

/** Tensors are fetched in pieces of this size, several at a time. */
const PIECE = 8 << 20;
const IN_FLIGHT = 4;

/**
 * @typedef {import('./wasm/hearth_web.js').Engine} Engine
 * @typedef {import('./fetch.js').ModelFile} ModelFile
 * @typedef {import('./fetch.js').Chunk} Chunk
 * @typedef {import('./protocol.js').Ops} Ops
 * @typedef {import('./protocol.js').PageMessage} PageMessage
 * @typedef {import('./protocol.js').WorkerMessage} WorkerMessage
 * @typedef {import('./protocol.js').GenerationEnd} GenerationEnd
 * @typedef {import('./index.js').ErrorCode} ErrorCode
 * @typedef {import('./index.js').LoadProgress} LoadProgress
 * @typedef {(phase: LoadProgress['phase'], loaded: number, total: number) => void} Progress
 * @typedef {{ file: number, offset: number, bytes: Uint8Array }} Piece bytes of file `file`
 * @typedef {{ fetch: Array<[file: number, start: number, end: number]> }} Plan the byte ranges
 *   of the tensors, from Loader.plan
 * @typedef {{ it: AsyncIterator<Chunk>, buffered: Uint8Array[], have: number }} Sequential a
 *   file read as one response: its iterator, and what came with the header
 */

/**
 * Errors of the device rather than of the model or the download: the CPU can take over.
 * @type {ErrorCode[]}
 */
const GPU_FAILURES = ['out_of_memory', 'too_large', 'gpu_error', 'device_lost', 'unsupported_quantization'];

/** @type {Engine | null} */
let engine = null;
/** @type {{ fallbackReason: string | null, wasm: typeof wasmBuild } | null} */
let backendInfo = null;
/**
 * The workers holding the other shards of the CPU engine's matrices, if it is split.
 * @type {Shards | null}
 */
let shards = null;
/**
 * Request id -> AbortController, for requests that can be aborted.
 * @type {Map<number, AbortController>}
 */
const controllers = new Map();
/**
 * Engine calls run one after another: a generation holds the engine between its tokens.
 * @type {Promise<unknown>}
 */
let queue = Promise.resolve();

/** @param {WorkerMessage} msg */
const post = (msg) => self.postMessage(msg);

/**
 * Lets the worker handle messages (such as an abort) between two tokens.
 * @returns {Promise<void>}
 */
const yieldToEvents = () =>
  new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
    ch.port2.postMessage(null);
  });

/** @param {AbortSignal} signal */
function throwIfAborted(signal) {
  if (signal.aborted) throw new HearthError('aborted', 'aborted');
}

/**
 * Reads each file's header, checks the model, then streams its tensors into the loader.
 * @param {ModelFile[]} files
 * @param {{ contextLength: number | undefined, signal: AbortSignal, progress: Progress }} options
 */
async function fetchModel(files, { contextLength, signal, progress }) {
  const loader = new Loader(files.length);
  /** @type {Array<[prefix: Uint8Array, size: number]>} each file's header, as the loader read it */
  const headers = [];
  /** @type {Sequential[]} */
  const sequential = [];
  for (let i = 0; i < files.length; i++) {
    const f = files[i];
    const it = f.stream(0, f.size)[Symbol.asyncIterator]();
    const chunks = [];
    let have = 0;
    let want = 1;
    while (want > 0) {
      if (have >= want || have === f.size) {
        const prefix = concat(chunks, have);
        chunks.length = 0;
        chunks.push(prefix);
        want = loader.header(i, prefix, f.size);
        if (want === 0) {
          headers.push([prefix, f.size]);
          break;
        }
      }
      const { done, value } = await it.next();
      throwIfAborted(signal);
      if (done) break;
      chunks.push(value.bytes);
      have += value.bytes.length;
    }
    if (f.ranged) {
      await it.return?.();
    } else {
      // No Range support: the rest of this one response carries the tensors.
      sequential[i] = { it, buffered: chunks, have };
    }
  }

  /** @type {Plan} */
  const plan = loader.plan(contextLength ?? 0);
  const total = plan.fetch.reduce((n, [, a, b]) => n + (b - a), 0);
  /**
   * The tensor bytes in pieces, in order, counted as they come.
   * @returns {AsyncGenerator<Piece, void>}
   */
  async function* pieces() {
    let loaded = 0;
    progress('download', 0, total);
    for await (const piece of download(files, plan, sequential, signal)) {
      loaded += piece.bytes.length;
      progress('download', Math.min(loaded, total), total);
      yield piece;
    }
  }
  return { loader, plan, pieces, headers };
}

/**
 * @param {Uint8Array[]} chunks
 * @param {number} n their length together
 */
function concat(chunks, n) {
  if (chunks.length === 1 && chunks[0].length === n) return chunks[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/**
 * @param {ModelFile[]} files
 * @param {Plan} plan
 * @param {Sequential[]} sequential
 * @param {AbortSignal} signal
 * @returns {AsyncGenerator<Piece, void>}
 */
async function* download(files, plan, sequential, signal) {
  /** @type {(file: number, offset: number, bytes: Uint8Array) => Piece} */
  const piece = (file, offset, bytes) => ({ file, offset, bytes });
  // Files read as one stream: what came with the header, then the rest in order.
  for (const [i, seq] of sequential.entries()) {
    if (!seq) continue;
    const end = Math.max(0, ...plan.fetch.filter(([f]) => f === i).map(([, , b]) => b));
    let at = 0;
    for (const c of seq.buffered) { yield piece(i, at, c); at += c.length; }
    while (at < end) {
      const { done, value } = await seq.it.next();
      throwIfAborted(signal);
      if (done) throw new HearthError('network', `the response for file ${i} ended at byte ${at}`);
      yield piece(i, value.offset, value.bytes);
      at = value.offset + value.bytes.length;
    }
    await seq.it.return?.();
  }
  // Ranged files: pieces fetched several at a time, handed over in order (a tensor's bytes
  // must arrive from its start).
  /** @type {Array<[file: number, start: number, end: number]>} */
  const pieces = [];
  for (const [file, a, b] of plan.fetch) {
    if (sequential[file]) continue;
    for (let s = a; s < b; s += PIECE) pieces.push([file, s, Math.min(b, s + PIECE)]);
  }
  /** @param {[file: number, start: number, end: number]} range */
  const fetchPiece = async ([file, a, b]) => {
    const out = new Uint8Array(b - a);
    for await (const { offset, bytes } of files[file].stream(a, b)) out.set(bytes, offset - a);
    return out;
  };
  const inFlight = [];
  let next = 0;
  for (let i = 0; i < pieces.length; i++) {
    while (next < pieces.length && next < i + IN_FLIGHT) {
      const p = fetchPiece(pieces[next++]);
      // Failures surface when awaited in order; this only keeps them from being "unhandled".
      p.catch(() => {});
      inFlight.push(p);
    }
    const bytes = await /** @type {Promise<Uint8Array>} (fetched ahead, above) */ (inFlight.shift());
    throwIfAborted(signal);
    yield piece(pieces[i][0], pieces[i][1], bytes);
  }
}

/**
 * @param {number} id
 * @param {Ops['load']['args']} request
 */
async function load(id, { source, options }) {
  const controller = new AbortController();
  controllers.set(id, controller);
  const { signal } = controller;
  let last = { phase: '', loaded: -1 };
  /** @type {Progress} */
  const progress = (phase, loaded, total) => {
    if (phase === last.phase && loaded <= last.loaded) return;
    last = { phase, loaded };
    post({ id, type: REPLY.progress, progress: { phase, loaded, total } });
  };
  const wanted = options.backend ?? 'auto';
  if (!['auto', 'webgpu', 'cpu'].includes(wanted)) {
    throw new HearthError('bad_request', `backend must be "auto", "webgpu" or "cpu", not ${JSON.stringify(wanted)}`);
  }
  await start();
  let backend = wanted;
  let fallbackReason = null;
  for (;;) {
    const files = await openSource(source, { signal, cache: options.cache !== false });
    try {
      const { loader, pieces, headers } = await fetchModel(files, { contextLength: options.contextLength, signal, progress });
      let gpu = null;
      if (backend !== 'cpu') {
        try {
          // The WebWorker lib has no WebGPU types.
          if (!(/** @type {{ gpu?: unknown }} */ (self.navigator).gpu)) throw new HearthError('no_webgpu', 'this browser has no WebGPU (navigator.gpu)');
          // Under auto a software adapter is refused (the CPU engine is faster than WebGPU
          // computed on the CPU), and so is one that a probe of the model's shapes finds
          // slower than the CPU engine.
          const probe = backend === 'auto' ? loader.probeWidths() : undefined;
          gpu = await GpuDevice.open(loader.matrixType(), backend === 'webgpu', probe);
        } catch (e) {
          if (backend === 'webgpu') throw HearthError.from(e);
          fallbackReason = HearthError.from(e).message;
        }
      }
      /** @type {(loaded: number, total: number) => void} */
      const report = (loaded, total) => progress('load', loaded, total);
      if (gpu) {
        // The engine pulls the pieces itself and writes each tensor to the GPU as it completes.
        const it = pieces();
        const nextPiece = async () => {
          const { value, done } = await it.next();
          return done ? undefined : value;
        };
        try {
          engine = await loader.loadGpu(gpu, report, nextPiece);
        } catch (e) {
          await it.return();
          // A device that cannot take the model (out of memory, a type it lacks): the CPU
          // takes over; bytes already fetched come again, from the cache where there is one.
          const error = HearthError.from(e);
          if (wanted === 'webgpu' || !GPU_FAILURES.includes(error.code)) throw error;
          fallbackReason = error.message;
          backend = 'cpu';
          continue;
        }
      } else {
        engine = await loadCpu(loader, pieces, headers, options, report);
      }
      backendInfo = { fallbackReason, wasm: wasmBuild };
      return info();
    } finally {
      await Promise.all(files.map((f) => f.close()));
      controllers.delete(id);
    }
  }
}

/**
 * Builds the CPU engine, its matrices split across `cpuWorkers(options.workers)` workers.
 * @param {Loader} loader
 * @param {() => AsyncGenerator<Piece, void>} pieces
 * @param {Array<[prefix: Uint8Array, size: number]>} headers
 * @param {Ops['load']['args']['options']} options
 * @param {(loaded: number, total: number) => void} report
 */
async function loadCpu(loader, pieces, headers, options, report) {
  shards?.terminate();
  shards = null;
  const count = cpuWorkers(options.workers);
  loader.buildCpu(0, count);
  loader.fitsCpu();
  const others = count > 1 ? new Shards(count, headers, options.contextLength ?? 0) : null;
  try {
    for await (const { file, offset, bytes } of pieces()) {
      others?.put(file, offset, bytes);
      loader.put(file, offset, bytes);
    }
    const cpu = loader.loadCpu(report);
    await others?.serve(cpu);
    shards = others;
    return cpu;
  } catch (e) {
    others?.terminate();
    throw e;
  }
}

/** The engine, for the requests that need one. */
function loaded() {
  if (!engine) throw new HearthError('bad_request', 'no model is loaded');
  return engine;
}

/** @returns {import('./index.js').EngineInfo} */
function info() {
  return { ...loaded().info(), ...backendInfo };
}

/**
 * Runs one generation, posting each token; returns the finish reason and usage.
 * @param {number} id
 * @param {Ops['generate']['args']} request
 * @returns {Promise<GenerationEnd>}
 */
async function generate(id, request) {
  const engine = loaded();
  const { options } = request;
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const ids = request.messages
      ? engine.chatTokens(engine.applyChatTemplate(request.messages, options.tools))
      : engine.tokenize(request.prompt, options.addSpecial ?? true);
    const { addSpecial, ...rest } = options;
    /** @type {{ promptTokens: number, cachedTokens: number }} */
    const started = engine.begin(ids, rest);
    let completion = 0;
    /** @type {GenerationEnd['finishReason'] | null} */
    let finishReason = null;
    /** @type {GenerationEnd['toolCalls']} */
    let toolCalls = [];
    while (!finishReason) {
      await yieldToEvents();
      throwIfAborted(controller.signal);
      /** @type {{ text: string, token: number | null, finishReason: GenerationEnd['finishReason'] | null, completionTokens: number, toolCalls?: GenerationEnd['toolCalls'] }} */
      const step = await engine.step();
      completion = step.completionTokens;
      finishReason = step.finishReason;
      toolCalls = step.toolCalls ?? [];
      if (step.text || step.token !== null) post({ id, type: REPLY.token, text: step.text, token: step.token });
    }
    return {
      finishReason,
      toolCalls,
      usage: {
        prompt_tokens: started.promptTokens,
        completion_tokens: completion,
        total_tokens: started.promptTokens + completion,
        prompt_tokens_details: { cached_tokens: started.cachedTokens },
      },
    };
  } finally {
    controllers.delete(id);
  }
}

/** @type {{ [K in keyof Ops]: (id: number, request: Ops[K]['args']) => Ops[K]['value'] | Promise<Ops[K]['value']> }} */
const handlers = {
  [OP.load]: load,
  [OP.generate]: generate,
  [OP.tokenize]: (_, { text, addSpecial }) => Array.from(loaded().tokenize(text, addSpecial ?? true)),
  [OP.detokenize]: (_, { tokens, skipSpecial }) => loaded().detokenize(Uint32Array.from(tokens), skipSpecial ?? false),
  [OP.architectures]: async () => { await start(); return architectures(); },
  [OP.reset]: () => loaded().reset(),
};

// A product the other shards cannot answer traps the engine, in a task of its own (a step is a
// future run outside the request's promise): every call under way ends as a lost device, and
// the page loads the model again.
self.addEventListener('error', (e) => {
  const lost = shards?.lost();
  if (!lost) return;
  e.preventDefault();
  for (const id of controllers.keys()) post({ id, type: REPLY.error, error: lost.toJSON() });
});

self.onmessage = (/** @type {MessageEvent<PageMessage>} */ { data }) => {
  if (data.op === OP.abort) {
    controllers.get(data.target)?.abort();
    // The page's watchdog ends a worker that does not answer in time (index.js).
    post({ type: REPLY.abortAck, target: data.target });
    return;
  }
  const { id, op } = data;
  // The type of `handlers[op]` is every handler's at once: each takes its own op's request.
  const handler = /** @type {(id: number, request: typeof data) => unknown} */ (handlers[op]);
  const run = async () => {
    if (!handler) throw new HearthError('bad_request', `unknown operation ${op}`);
    return handler(id, data);
  };
  queue = queue.then(run).then(
    (value) => post({ id, type: REPLY.done, value, info: engine ? info() : null }),
    (e) => post({ id, type: REPLY.error, error: (shards?.lost() ?? HearthError.from(e)).toJSON() }),
  );
};
