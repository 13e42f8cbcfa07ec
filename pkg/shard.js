// A worker that holds one shard of a CPU model's matrices (see shards.js): it takes in its
// part of each tensor as the engine's worker forwards the download, then answers the engine's
// products, through a SharedArrayBuffer or by message, until it is ended.

import { Loader } from './wasm/hearth_web.js';
import { start } from './runtime.js';
import { HearthError } from './errors.js';
import { SHARD, CONTROL, FAILED } from './shards.js';

/** @type {Loader | null} */
let loader = null;
/** @type {import('./wasm/hearth_web.js').CpuShard | null} the shard, answering by message */
let shard = null;
/** @type {WebAssembly.Memory | null} */
let memory = null;
/** Messages are handled one after another: `start` awaits the wasm module. */
let queue = Promise.resolve();

/** @param {import('./shards.js').ShardMessage} data */
async function handle(data) {
  switch (data.op) {
    case SHARD.start: {
      ({ memory } = await start());
      const l = Loader.forShard(data.headers.length);
      data.headers.forEach(([prefix, size], i) => l.header(i, prefix, size));
      l.planShard(data.contextLength);
      l.buildCpu(data.index, data.count);
      l.fitsCpu();
      loader = l;
      break;
    }
    case SHARD.put:
      if (!loader) throw new HearthError('internal', 'a piece came before the shard started');
      loader.put(data.file, data.offset, data.bytes);
      break;
    case SHARD.serve: {
      if (!loader) throw new HearthError('internal', 'the shard was never started');
      const serving = loader.intoShard();
      loader = null;
      self.postMessage({ type: SHARD.serving, memory: memory?.buffer.byteLength ?? 0 });
      if (!data.buffer) {
        shard = serving;
        break;
      }
      try {
        serving.serve(data.buffer);
      } catch (e) {
        // The engine waits on this shard's answers: tell it that none will come.
        const control = new Int32Array(data.buffer, 0, CONTROL.ints);
        Atomics.store(control, CONTROL.failed, FAILED.worker);
        Atomics.notify(control, CONTROL.answered);
        throw e;
      }
      break;
    }
    case SHARD.ask: {
      if (!shard) throw new HearthError('internal', 'a request came before the shard served');
      const [spans, values] = shard.answer(data.words, data.input);
      self.postMessage({ type: SHARD.answer, spans, values }, [spans.buffer, values.buffer]);
      break;
    }
  }
}

self.onmessage = (/** @type {MessageEvent<import('./shards.js').ShardMessage>} */ { data }) => {
  queue = queue
    .then(() => handle(data))
    .catch((e) => self.postMessage({ type: SHARD.error, error: HearthError.from(e).toJSON() }));
};
