// Unit tests of fetch.js under Node: the download cache's bookkeeping (which byte ranges it
// holds; whether an entry is complete; a file that changed on the server; reading offline;
// deleting; bytes altered on disk; a quota reached midway) and Range and whole-file downloads from a local server. The Origin
// Private File System is replaced by an in-memory one with the same calls the worker makes.
// Not shipped (package.json lists the files the package holds).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../scripts/serve.mjs';

/** An in-memory directory with the OPFS calls fetch.js makes (sync handles included). */
function memoryDirectory() {
  const files = new Map();
  /** No file may grow past this many bytes. */
  const memory = { quota: Infinity };
  const notFound = () => new DOMException('no such entry', 'NotFoundError');
  const fileHandle = (name) => ({
    async getFile() {
      const data = files.get(name);
      return { text: async () => new TextDecoder().decode(data) };
    },
    async createSyncAccessHandle() {
      return {
        read(out, { at }) {
          const data = files.get(name);
          const n = Math.max(0, Math.min(out.length, data.length - at));
          out.set(data.subarray(at, at + n));
          return n;
        },
        write(bytes, { at }) {
          if (at + bytes.length > memory.quota) throw new DOMException('over quota', 'QuotaExceededError');
          let data = files.get(name);
          if (at + bytes.length > data.length) {
            const grown = new Uint8Array(at + bytes.length);
            grown.set(data);
            data = grown;
          }
          data.set(bytes, at);
          files.set(name, data);
          return bytes.length;
        },
        truncate(n) { files.set(name, files.get(name).slice(0, n)); },
        flush() {},
        close() {},
      };
    },
  });
  const dir = {
    async getFileHandle(name, { create } = {}) {
      if (!files.has(name)) {
        if (!create) throw notFound();
        files.set(name, new Uint8Array(0));
      }
      return fileHandle(name);
    },
    async removeEntry(name) {
      if (!files.delete(name)) throw notFound();
    },
    async *entries() {
      for (const name of [...files.keys()]) yield [name, fileHandle(name)];
    },
  };
  return Object.assign(memory, { files, root: { getDirectoryHandle: async () => dir } });
}

let dir, server, fs, fetchJs;
/** FIRST_BYTES of fetch.js: the opening request's length. */
const FIRST = 1 << 20;
const BYTES = Uint8Array.from({ length: 3_000_000 }, (_, i) => (i * 7919 + (i >> 9)) & 255);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hearth-fetch-'));
  writeFileSync(join(dir, 'model.bin'), BYTES);
  server = await serve(dir);
  fs = memoryDirectory();
  globalThis.self = globalThis;
  globalThis.location = new URL(`${server.url}/`);
  Object.defineProperty(globalThis, 'navigator', {
    value: { storage: { getDirectory: async () => fs.root } },
    configurable: true,
  });
  fetchJs = await import('./fetch.js');
});

after(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function read(file, a, b) {
  const out = new Uint8Array(b - a);
  for await (const { offset, bytes } of file.stream(a, b)) out.set(bytes, offset - a);
  return out;
}

async function entry(url) {
  return (await fetchJs.listCache()).find((e) => e.url === url);
}

test('spans read are cached as merged ranges; the whole file makes a complete entry', async () => {
  const url = `${server.url}/model.bin`;
  const spans = [[2_500_000, 2_600_000], [10, 20], [2_550_000, 2_700_000], [20, 4096], [1_000_000, 1_000_001]];
  const held = new Set();
  const [file] = await fetchJs.openSource(url);
  for (const [a, b] of spans) {
    assert.deepEqual(await read(file, a, b), BYTES.subarray(a, b));
    for (let i = a; i < b; i++) held.add(i);
  }
  await file.close();
  // Only bytes streamed are cached (the opening request's first megabyte is dropped unread).
  const e = await entry(url);
  assert.equal(e.size, BYTES.length);
  assert.equal(e.cachedBytes, held.size);
  assert.equal(e.complete, false);

  const [whole] = await fetchJs.openSource(url);
  assert.deepEqual(await read(whole, 0, BYTES.length), BYTES);
  await whole.close();
  assert.deepEqual(await entry(url), { url, size: BYTES.length, cachedBytes: BYTES.length, complete: true });
});

test('a complete entry is read from the cache, and with the server gone; deleting it forgets it', async () => {
  const url = `${server.url}/model.bin`;
  const requests = server.state.requests.length;
  let [file] = await fetchJs.openSource(url);
  // The first request goes out (to check the file is the same); the bytes come from the cache.
  assert.deepEqual(await read(file, 123, 2_999_999), BYTES.subarray(123, 2_999_999));
  await file.close();
  assert.equal(server.state.requests.length, requests + 1);

  await server.close();
  try {
    [file] = await fetchJs.openSource(url);
    assert.deepEqual(await read(file, 0, BYTES.length), BYTES);
    await file.close();
  } finally {
    server = await serve(dir);
  }
  assert.equal(await fetchJs.deleteCache(url), true);
  assert.equal(await entry(url), undefined);
  assert.equal(await fetchJs.deleteCache(url), false);
});

test('a file that changed size on the server drops its cached bytes', async () => {
  const url = `${server.url}/changing.bin`;
  writeFileSync(join(dir, 'changing.bin'), BYTES.subarray(0, 100_000));
  let [file] = await fetchJs.openSource(url);
  await read(file, 0, 100_000);
  await file.close();
  assert.equal((await entry(url)).cachedBytes, 100_000);
  writeFileSync(join(dir, 'changing.bin'), BYTES.subarray(0, 200_000));
  [file] = await fetchJs.openSource(url);
  assert.deepEqual(await read(file, 150_000, 160_000), BYTES.subarray(150_000, 160_000));
  await file.close();
  assert.deepEqual(await entry(url), { url, size: 200_000, cachedBytes: 10_000, complete: false });
});

test('a server without Range support is read whole, in order', async () => {
  const plain = await serve(dir, { range: false });
  try {
    const [file] = await fetchJs.openSource(`${plain.url}/model.bin`, { cache: false });
    assert.equal(file.ranged, false);
    assert.deepEqual(await read(file, 0, BYTES.length), BYTES);
    await file.close();
  } finally {
    await plain.close();
  }
});

test('a missing file is not_found and leaves no entry behind', async () => {
  const url = `${server.url}/missing.bin`;
  await assert.rejects(fetchJs.openSource(url), (e) => e.code === 'not_found');
  assert.equal(await entry(url), undefined);
  // Neither of its files is left either.
  assert.equal(fs.files.size, 2 * (await fetchJs.listCache()).length);
});

/** The cache's data file of `url`, in the in-memory directory. */
async function cachedData(url) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(url));
  const key = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
  return fs.files.get(`${key}.bin`);
}

test('bytes altered on disk are caught by their hash and fetched again, never used', async () => {
  const url = `${server.url}/altered.bin`;
  writeFileSync(join(dir, 'altered.bin'), BYTES);
  let [file] = await fetchJs.openSource(url);
  await read(file, 0, BYTES.length);
  await file.close();
  const data = await cachedData(url);
  data[1_500_000] ^= 0xff;
  data[2_999_999] ^= 1;
  const before = server.state.requests.length;
  [file] = await fetchJs.openSource(url);
  assert.deepEqual(await read(file, 0, BYTES.length), BYTES);
  await file.close();
  // The opening request, then the two damaged megabyte segments only.
  assert.deepEqual(server.state.requests.slice(before).map((r) => r.range),
    ['bytes=0-1048575', 'bytes=1048576-2097151', 'bytes=2097152-2999999']);
  assert.equal((await entry(url)).complete, true);
  assert.equal(await fetchJs.deleteCache(url), true);
});

test('a quota reached midway fails the load and leaves what was recorded whole; the next load goes on from it', async () => {
  const url = `${server.url}/quota.bin`;
  writeFileSync(join(dir, 'quota.bin'), BYTES);
  fs.quota = 1_600_000;
  let [file] = await fetchJs.openSource(url);
  try {
    await assert.rejects(read(file, 0, BYTES.length), (e) => e.name === 'QuotaExceededError');
    await file.close();
  } finally {
    fs.quota = Infinity;
  }
  const kept = await entry(url);
  assert.ok(kept.cachedBytes > FIRST && kept.cachedBytes <= 1_600_000, JSON.stringify(kept));
  assert.equal(kept.complete, false);
  const before = server.state.requests.length;
  [file] = await fetchJs.openSource(url);
  assert.deepEqual(await read(file, 0, BYTES.length), BYTES);
  await file.close();
  assert.deepEqual(server.state.requests.slice(before).map((r) => r.range),
    ['bytes=0-1048575', `bytes=${kept.cachedBytes}-2999999`]);
  assert.equal((await entry(url)).complete, true);
  assert.equal(await fetchJs.deleteCache(url), true);
});
