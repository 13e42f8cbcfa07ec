// Model bytes for the worker: HTTP Range requests (or one streamed body where the server has no
// Range support), resumed where a broken connection stopped, and kept in a sparse cache in the
// Origin Private File System so a second load needs no network.

import { HearthError } from './errors.js';

const CACHE_DIR = 'hearth-cache';
/** The first request asks for this much, hoping it holds the whole GGUF header. */
export const FIRST_BYTES = 1 << 20;
const RETRIES = 6;
/** Cache metadata is written after at least this many new bytes (and at the end). */
const META_EVERY = 32 << 20;

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason); }, { once: true });
  });

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export async function cacheDirectory(create) {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(CACHE_DIR, { create });
}

/** Adds [a, b) to a sorted list of disjoint ranges, merging neighbours. */
function addRange(ranges, a, b) {
  const out = [];
  let placed = false;
  for (const [x, y] of ranges) {
    if (y < a) out.push([x, y]);
    else if (b < x) {
      if (!placed) { out.push([a, b]); placed = true; }
      out.push([x, y]);
    } else { a = Math.min(a, x); b = Math.max(b, y); }
  }
  if (!placed) out.push([a, b]);
  return out.sort((p, q) => p[0] - q[0]);
}

/** A sparse copy of one URL's bytes: `<key>.bin` holds the bytes at their offsets, `<key>.json`
 * which ranges of it are filled and the validators they came with. Worker-only (sync handles). */
class CacheEntry {
  static async open(url) {
    const dir = await cacheDirectory(true);
    const key = await sha256Hex(url);
    const metaHandle = await dir.getFileHandle(`${key}.json`, { create: true });
    const text = await (await metaHandle.getFile()).text();
    let meta = null;
    try { meta = text ? JSON.parse(text) : null; } catch { meta = null; }
    const binHandle = await dir.getFileHandle(`${key}.bin`, { create: true });
    const data = await binHandle.createSyncAccessHandle();
    const entry = new CacheEntry();
    entry.url = url;
    entry.metaHandle = metaHandle;
    entry.data = data;
    entry.meta = meta && meta.url === url ? meta : { url, size: null, etag: null, ranges: [] };
    entry.unsaved = 0;
    return entry;
  }

  /** Keeps the cached bytes only if they belong to the same version of the file. */
  validate(size, etag) {
    const m = this.meta;
    if (m.size !== size || (etag && m.etag && etag !== m.etag)) {
      this.data.truncate(0);
      this.meta = { url: this.url, size, etag: etag || null, ranges: [] };
    } else if (etag) {
      m.etag = etag;
    }
    this.meta.size = size;
  }

  /** The end of the cached run starting at `pos`, at most `end` (pos itself when not cached). */
  coveredUntil(pos, end) {
    for (const [a, b] of this.meta.ranges) if (a <= pos && pos < b) return Math.min(b, end);
    return pos;
  }

  /** The start of the next cached run after `pos`, or `end`. */
  nextCovered(pos, end) {
    let next = end;
    for (const [a] of this.meta.ranges) if (a > pos && a < next) next = a;
    return next;
  }

  read(a, b) {
    const out = new Uint8Array(b - a);
    const n = this.data.read(out, { at: a });
    if (n !== out.length) throw new HearthError('internal', `the cache returned ${n} of ${out.length} bytes`);
    return out;
  }

  write(at, bytes) {
    // A quota error propagates: the load fails with code "quota_exceeded".
    const n = this.data.write(bytes, { at });
    if (n !== bytes.length) throw new DOMException('the cache took only part of a write', 'QuotaExceededError');
    this.meta.ranges = addRange(this.meta.ranges, at, at + bytes.length);
    this.unsaved += bytes.length;
    if (this.unsaved >= META_EVERY) this.save();
  }

  save() {
    this.data.flush();
    this.unsaved = 0;
    return this.metaHandle.createSyncAccessHandle().then((h) => {
      try {
        const bytes = new TextEncoder().encode(JSON.stringify(this.meta));
        h.truncate(0);
        h.write(bytes, { at: 0 });
        h.flush();
      } finally {
        h.close();
      }
    });
  }

  async close() {
    await this.save();
    this.data.close();
  }
}

/** What fetch() threw, as a HearthError: a reachable server that refuses this origin is CORS. */
async function networkError(url, e, signal) {
  if (signal?.aborted || e?.name === 'AbortError') return new HearthError('aborted', 'the load was aborted');
  const target = new URL(url, self.location.href);
  if (target.origin !== self.location.origin) {
    try {
      await fetch(target, { mode: 'no-cors', cache: 'no-store', signal });
      return new HearthError('cors', `${url} does not allow requests from ${self.location.origin} (CORS)`, { cause: e });
    } catch {
      // Not reachable at all: a network error.
    }
  }
  return new HearthError('network', `cannot reach ${url}: ${e?.message || e}`, { cause: e });
}

async function httpGet(url, range, signal) {
  const headers = range ? { Range: `bytes=${range[0]}-${range[1] - 1}` } : {};
  let res;
  try {
    res = await fetch(url, { headers, signal, cache: 'no-store' });
  } catch (e) {
    throw await networkError(url, e, signal);
  }
  if (res.status === 404 || res.status === 410) {
    throw new HearthError('not_found', `${url} was not found (HTTP ${res.status})`, { status: res.status });
  }
  if (!res.ok) throw new HearthError('http_error', `${url} answered HTTP ${res.status}`, { status: res.status });
  return res;
}

function contentRange(res) {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('Content-Range') || '');
  return m ? { start: Number(m[1]), size: m[3] === '*' ? null : Number(m[3]) } : null;
}

/** One model file read over HTTP. `stream(start, end)` yields its bytes in order. */
class UrlFile {
  static async open(url, { signal, cache }) {
    const f = new UrlFile();
    f.url = url;
    f.signal = signal;
    f.entry = null;
    if (cache) {
      try {
        f.entry = await CacheEntry.open(url);
      } catch (e) {
        // Without OPFS (or with the entry locked by another tab) the load goes on uncached.
        if (e?.name === 'QuotaExceededError') throw e;
        f.entry = null;
      }
    }
    try {
      const res = await httpGet(url, [0, FIRST_BYTES], signal);
      const cr = res.status === 206 ? contentRange(res) : null;
      f.ranged = !!cr && cr.start === 0 && cr.size !== null;
      f.size = f.ranged ? cr.size : Number(res.headers.get('Content-Length'));
      if (!f.ranged && !(f.size > 0) && res.headers.get('Content-Length') === null) {
        throw new HearthError('http_error', `${url} has neither Range support nor a Content-Length`);
      }
      f.first = res;
      f.entry?.validate(f.size, res.headers.get('ETag'));
      f.offline = false;
    } catch (e) {
      const complete = f.entry?.meta.size && f.entry.coveredUntil(0, 1) > 0;
      if (e.code !== 'network' || !complete) {
        await f.entry?.close();
        // An entry that never got a byte is not left behind.
        if (f.entry && f.entry.meta.ranges.length === 0) await deleteCache(url).catch(() => {});
        throw e;
      }
      // Offline: what the cache holds is all there is.
      f.size = f.entry.meta.size;
      f.ranged = true;
      f.first = null;
      f.offline = true;
    }
    return f;
  }

  async *stream(start, end) {
    let pos = start;
    while (pos < end) {
      const cached = this.entry ? this.entry.coveredUntil(pos, end) : pos;
      if (cached > pos) {
        for (let a = pos; a < cached; a += FIRST_BYTES) {
          const b = Math.min(cached, a + FIRST_BYTES);
          yield { offset: a, bytes: this.entry.read(a, b) };
        }
        pos = cached;
        continue;
      }
      if (this.offline) {
        throw new HearthError('network', `${this.url} is unreachable and bytes ${pos}-${end} are not cached`);
      }
      const stop = this.entry ? this.entry.nextCovered(pos, end) : end;
      for await (const chunk of this.fetchSpan(pos, stop)) {
        yield chunk;
        pos = chunk.offset + chunk.bytes.length;
      }
    }
  }

  /** Bytes [start, end) from the network, resuming after a broken connection. */
  async *fetchSpan(start, end) {
    let pos = start;
    let failures = 0;
    while (pos < end) {
      let reader = null;
      try {
        let res;
        if (this.first && (pos === 0 || !this.ranged)) {
          res = this.first;
          this.first = null;
        } else {
          this.first?.body?.cancel();
          this.first = null;
          res = await httpGet(this.url, this.ranged ? [pos, end] : null, this.signal);
        }
        // A 200 answer carries the whole file from byte 0.
        let at = res.status === 206 ? contentRange(res)?.start : 0;
        if (at === undefined || at > pos) throw new HearthError('http_error', `${this.url} answered a range that starts at ${at}, not ${pos}`);
        reader = res.body.getReader();
        const before = pos;
        while (pos < end) {
          const { done, value } = await reader.read();
          if (done) break;
          const from = Math.max(pos, at);
          const to = Math.min(end, at + value.length);
          if (to > from) {
            const bytes = value.subarray(from - at, to - at);
            this.entry?.write(from, bytes);
            yield { offset: from, bytes };
            pos = to;
          }
          at += value.length;
        }
        if (pos > before) failures = 0;
        else if (++failures > RETRIES) throw new HearthError('network', `${this.url} sends no data past byte ${pos}`);
      } catch (e) {
        if (this.signal?.aborted) throw new HearthError('aborted', 'the load was aborted');
        if (e instanceof HearthError && e.code !== 'network') throw e;
        if (e?.name === 'QuotaExceededError') throw e;
        if (++failures > RETRIES) throw e instanceof HearthError ? e : await networkError(this.url, e, this.signal);
        await sleep(200 * 2 ** failures, this.signal);
      } finally {
        reader?.cancel().catch(() => {});
      }
    }
  }

  async close() {
    this.first?.body?.cancel();
    this.first = null;
    await this.entry?.close();
    this.entry = null;
  }
}

/** A model file given as a File or Blob. */
class BlobFile {
  constructor(blob) {
    this.blob = blob;
    this.size = blob.size;
    this.ranged = true;
  }

  async *stream(start, end) {
    const reader = this.blob.slice(start, end).stream().getReader();
    let pos = start;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield { offset: pos, bytes: value };
        pos += value.length;
      }
    } finally {
      reader.releaseLock();
    }
  }

  async close() {}
}

/** URL schemes whose server answers a Range request with the slice, but with status 200 and
 * neither Content-Range nor Content-Length (Chromium's extension resources): a file there is
 * read whole, as a Blob, and not cached (it is local already). */
const WHOLE_FILE_SCHEMES = ['chrome-extension:', 'moz-extension:'];

/** Opens each part of a model source: a URL, a File/Blob, or a list of URLs (split GGUF). */
export async function openSource(source, { signal, cache = true } = {}) {
  const parts = Array.isArray(source) ? source : [source];
  if (parts.length === 0) throw new HearthError('bad_request', 'the model source is an empty list');
  const files = [];
  try {
    for (const part of parts) {
      if (typeof Blob !== 'undefined' && part instanceof Blob) files.push(new BlobFile(part));
      else if (typeof part === 'string' || part instanceof URL) {
        const url = new URL(String(part), self.location.href);
        if (WHOLE_FILE_SCHEMES.includes(url.protocol)) files.push(new BlobFile(await (await httpGet(url.href, null, signal)).blob()));
        else files.push(await UrlFile.open(String(part), { signal, cache }));
      }
      else throw new HearthError('bad_request', 'a model source is a URL, a File or Blob, or a list of URLs');
    }
  } catch (e) {
    await Promise.all(files.map((f) => f.close()));
    throw e;
  }
  return files;
}

/** The cache's entries: `{ url, size, cachedBytes, complete }`. */
export async function listCache() {
  let dir;
  try {
    dir = await cacheDirectory(false);
  } catch {
    return [];
  }
  const out = [];
  for await (const [name, handle] of dir.entries()) {
    if (!name.endsWith('.json')) continue;
    try {
      const meta = JSON.parse(await (await handle.getFile()).text());
      const cachedBytes = meta.ranges.reduce((n, [a, b]) => n + (b - a), 0);
      out.push({ url: meta.url, size: meta.size, cachedBytes, complete: meta.size !== null && cachedBytes === meta.size });
    } catch {
      // An entry being written right now, or damaged: not listed.
    }
  }
  return out;
}

/** Removes a URL's cached bytes; true if there were any. */
export async function deleteCache(url) {
  let dir;
  try {
    dir = await cacheDirectory(false);
  } catch {
    return false;
  }
  const key = await sha256Hex(String(url));
  let found = false;
  for (const name of [`${key}.json`, `${key}.bin`]) {
    try {
      await dir.removeEntry(name);
      found = true;
    } catch (e) {
      if (e?.name !== 'NotFoundError') throw HearthError.from(e);
    }
  }
  return found;
}
