// The module Worker that holds one engine. The page talks to it with postMessage only (see
// index.js); everything slow — fetching, building the model, every forward pass — runs here.

import init, { Loader, GpuDevice, architectures } from './wasm/hearth_web.js';
import { HearthError } from './errors.js';
import { openSource } from './fetch.js';
import { OP, REPLY } from './protocol.js';

/** Tensors are fetched in pieces of this size, several at a time. */
const PIECE = 8 << 20;
const IN_FLIGHT = 4;

/** Errors of the device rather than of the model or the download: the CPU can take over. */
const GPU_FAILURES = ['out_of_memory', 'too_large', 'gpu_error', 'device_lost', 'unsupported_quantization'];

let engine = null;
let backendInfo = null;
/** Request id -> AbortController, for requests that can be aborted. */
const controllers = new Map();
/** Engine calls run one after another: a generation holds the engine between its tokens. */
let queue = Promise.resolve();

const post = (msg) => self.postMessage(msg);

/** Lets the worker handle messages (such as an abort) between two tokens. */
const yieldToEvents = () =>
  new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
    ch.port2.postMessage(null);
  });

function throwIfAborted(signal) {
  if (signal.aborted) throw new HearthError('aborted', 'aborted');
}

/** Reads each file's header, checks the model, then streams its tensors into the loader. */
async function fetchModel(files, { contextLength, signal, progress }) {
  const loader = new Loader(files.length);
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
        if (want === 0) break;
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

  const plan = loader.plan(contextLength ?? 0);
  const total = plan.fetch.reduce((n, [, a, b]) => n + (b - a), 0);
  /** The tensor bytes as { file, offset, bytes } pieces, in order, counted as they come. */
  async function* pieces() {
    let loaded = 0;
    progress('download', 0, total);
    for await (const piece of download(files, plan, sequential, signal)) {
      loaded += piece.bytes.length;
      progress('download', Math.min(loaded, total), total);
      yield piece;
    }
  }
  return { loader, plan, pieces };
}

function concat(chunks, n) {
  if (chunks.length === 1 && chunks[0].length === n) return chunks[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

async function* download(files, plan, sequential, signal) {
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
  const pieces = [];
  for (const [file, a, b] of plan.fetch) {
    if (sequential[file]) continue;
    for (let s = a; s < b; s += PIECE) pieces.push([file, s, Math.min(b, s + PIECE)]);
  }
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
    const bytes = await inFlight.shift();
    throwIfAborted(signal);
    yield piece(pieces[i][0], pieces[i][1], bytes);
  }
}

async function load(id, { source, options }) {
  const controller = new AbortController();
  controllers.set(id, controller);
  const { signal } = controller;
  let last = { phase: '', loaded: -1 };
  const progress = (phase, loaded, total) => {
    if (phase === last.phase && loaded <= last.loaded) return;
    last = { phase, loaded };
    post({ id, type: REPLY.progress, progress: { phase, loaded, total } });
  };
  const wanted = options.backend ?? 'auto';
  if (!['auto', 'webgpu', 'cpu'].includes(wanted)) {
    throw new HearthError('bad_request', `backend must be "auto", "webgpu" or "cpu", not ${JSON.stringify(wanted)}`);
  }
  await init();
  let backend = wanted;
  let fallbackReason = null;
  for (;;) {
    const files = await openSource(source, { signal, cache: options.cache !== false });
    try {
      const { loader, pieces } = await fetchModel(files, { contextLength: options.contextLength, signal, progress });
      let gpu = null;
      if (backend !== 'cpu') {
        try {
          if (!self.navigator.gpu) throw new HearthError('no_webgpu', 'this browser has no WebGPU (navigator.gpu)');
          gpu = await GpuDevice.open(loader.matrixType());
        } catch (e) {
          if (backend === 'webgpu') throw HearthError.from(e);
          fallbackReason = HearthError.from(e).message;
        }
      }
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
        loader.fitsCpu();
        for await (const { file, offset, bytes } of pieces()) loader.put(file, offset, bytes);
        engine = loader.loadCpu(report);
      }
      backendInfo = { fallbackReason };
      return info();
    } finally {
      await Promise.all(files.map((f) => f.close()));
      controllers.delete(id);
    }
  }
}

function info() {
  return { ...engine.info(), ...backendInfo };
}

/** Runs one generation, posting each token; returns the finish reason and usage. */
async function generate(id, { prompt, messages, options }) {
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const text = messages ? engine.applyChatTemplate(messages, options.tools) : prompt;
    const ids = messages ? engine.chatTokens(text) : engine.tokenize(text, options.addSpecial ?? true);
    const { addSpecial, ...rest } = options;
    const started = engine.begin(ids, rest);
    let completion = 0;
    let finishReason = null;
    let toolCalls = [];
    while (!finishReason) {
      await yieldToEvents();
      throwIfAborted(controller.signal);
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

const handlers = {
  [OP.load]: load,
  [OP.generate]: generate,
  [OP.tokenize]: (_, { text, addSpecial }) => Array.from(engine.tokenize(text, addSpecial ?? true)),
  [OP.detokenize]: (_, { tokens, skipSpecial }) => engine.detokenize(Uint32Array.from(tokens), skipSpecial ?? false),
  [OP.architectures]: async () => { await init(); return architectures(); },
  [OP.reset]: () => engine.reset(),
};

self.onmessage = ({ data }) => {
  const { id, op } = data;
  if (op === OP.abort) {
    controllers.get(data.target)?.abort();
    // The page's watchdog ends a worker that does not answer in time (index.js).
    post({ type: REPLY.abortAck, target: data.target });
    return;
  }
  const handler = handlers[op];
  const run = async () => {
    if (!handler) throw new HearthError('bad_request', `unknown operation ${op}`);
    if (op !== OP.load && op !== OP.architectures && !engine) throw new HearthError('bad_request', 'no model is loaded');
    return handler(id, data);
  };
  queue = queue.then(run).then(
    (value) => post({ id, type: REPLY.done, value, info: engine ? info() : null }),
    (e) => post({ id, type: REPLY.error, error: HearthError.from(e).toJSON() }),
  );
};
