// A worker that holds one shard of a CPU model's matrices (see shards.js): it takes in its
// part of each tensor as the engine's worker forwards the download, then answers the engine's
// products through a SharedArrayBuffer until it is ended.

import { Loader } from './wasm/hearth_web.js';
import { start } from './runtime.js';
import { HearthError } from './errors.js';
import { SHARD } from './shards.js';

/** @type {Loader | null} */
let loader = null;
/** @type {WebAssembly.Memory | null} */
let memory = null;
/** Messages are handled one after another: `start` awaits the wasm module. */
let queue = Promise.resolve();

/** @param {import('./shards.js').ShardMessage} data */
async function handle(data) {
  switch (data.op) {
    case SHARD.start: {
      ({ memory } = await start());
      const l = new Loader(data.headers.length);
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
      const shard = loader.intoShard();
      loader = null;
      self.postMessage({ type: SHARD.serving, memory: memory?.buffer.byteLength ?? 0 });
      try {
        shard.serve(data.buffer);
      } catch (e) {
        // The engine waits on this shard's answers: tell it that none will come.
        const control = new Int32Array(data.buffer, 0, 16);
        Atomics.store(control, 5, 1);
        Atomics.notify(control, 1);
        throw e;
      }
      break;
    }
  }
}

self.onmessage = (/** @type {MessageEvent<import('./shards.js').ShardMessage>} */ { data }) => {
  queue = queue
    .then(() => handle(data))
    .catch((e) => self.postMessage({ type: SHARD.error, error: HearthError.from(e).toJSON() }));
};
