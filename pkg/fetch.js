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
/** The layout of an entry's metadata; an entry of another is dropped. */
const FORMAT = 2;
/** A cached segment, checked as a whole when read, never crosses a multiple of this. */
const SEGMENT = 1 << 20;

/**
 * @typedef {[start: number, end: number, sha256: string]} Segment
 * @typedef {{ format: number, url: string, size: number | null, etag: string | null, segments: Segment[] }} Meta
 * @typedef {{ offset: number, bytes: Uint8Array }} Chunk bytes of a file, from `offset`
 * @typedef {UrlFile | BlobFile} ModelFile
 */

/** @type {(ms: number, signal: AbortSignal | undefined) => Promise<void>} */
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason); }, { once: true });
  });

/** @param {ArrayBuffer} digest */
const hex = (digest) => [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
/** @param {Uint8Array<ArrayBuffer>} bytes */
const sha256 = async (bytes) => hex(await crypto.subtle.digest('SHA-256', bytes));
/** @param {string} text */
const sha256Hex = (text) => sha256(new TextEncoder().encode(text));

/** @param {boolean} create */
export async function cacheDirectory(create) {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(CACHE_DIR, { create });
}

/**
 * Holds the Web Lock `name` (waiting while another tab or worker holds it); resolves to the
 * function that releases it. Without Web Locks there is nothing to wait for.
 * @param {string} name
 * @param {AbortSignal | undefined} signal
 * @returns {Promise<() => void>}
 */
function holdLock(name, signal) {
  if (!globalThis.navigator?.locks) return Promise.resolve(() => {});
  return new Promise((resolve, reject) => {
    navigator.locks.request(name, { signal }, () => /** @type {Promise<void>} */ (new Promise((release) => resolve(release)))).catch(reject);
  });
}

/**
 * The index of the last of `segments` (sorted, disjoint) starting at or before `pos`, or -1.
 * @param {Segment[]} segments
 * @param {number} pos
 */
function lastAtOrBefore(segments, pos) {
  let lo = 0;
  let hi = segments.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (segments[mid][0] <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/**
 * A sparse copy of one URL's bytes: `<key>.bin` holds the bytes at their offsets, `<key>.json`
 * the validators they came with and the cached segments, each `[start, end, sha256]` within
 * one SEGMENT-aligned block. A segment is recorded only once its bytes are written, and is
 * checked against its hash whenever it is read: bytes altered on disk are fetched again,
 * never used. Only one tab or worker at a time holds an entry (a Web Lock): another load of
 * the same URL waits, then reads what the first one cached. Worker-only (sync handles).
 */
class CacheEntry {
  /**
   * @param {string} url
   * @param {AbortSignal | undefined} signal
   */
  static async open(url, signal) {
    const dir = await cacheDirectory(true);
    const key = await sha256Hex(url);
    const release = await holdLock(`${CACHE_DIR}/${key}`, signal);
    try {
      const metaHandle = await dir.getFileHandle(`${key}.json`, { create: true });
      const text = await (await metaHandle.getFile()).text();
      /** @type {Meta | null} */
      let meta = null;
      try { meta = text ? JSON.parse(text) : null; } catch { meta = null; }
      const binHandle = await dir.getFileHandle(`${key}.bin`, { create: true });
      return new CacheEntry(url, metaHandle, await binHandle.createSyncAccessHandle(), release, meta);
    } catch (e) {
      release();
      throw e;
    }
  }

  /**
   * @param {string} url
   * @param {FileSystemFileHandle} metaHandle where the metadata is kept
   * @param {FileSystemSyncAccessHandle} data the cached bytes
   * @param {() => void} release lets go of the entry's lock
   * @param {Meta | null} meta the metadata as last written
   */
  constructor(url, metaHandle, data, release, meta) {
    this.url = url;
    this.metaHandle = metaHandle;
    this.data = data;
    this.release = release;
    /** Bytes cached since the metadata was last written. */
    this.unsaved = 0;
    if (meta && meta.url === url && meta.format === FORMAT) {
      /** @type {Meta} */
      this.meta = meta;
    } else this.reset(null, null);
  }

  /**
   * Forgets every cached byte; the file is now `size` bytes with validator `etag`.
   * @param {number | null} size
   * @param {string | null} etag
   */
  reset(size, etag) {
    this.data.truncate(0);
    this.meta = { format: FORMAT, url: this.url, size, etag: etag || null, segments: [] };
  }

  /**
   * Keeps the cached bytes only if they belong to the same version of the file.
   * @param {number} size
   * @param {string | null} etag
   */
  validate(size, etag) {
    const m = this.meta;
    if (m.size !== size || (etag && m.etag && etag !== m.etag)) this.reset(size, etag);
    else if (etag) m.etag = etag;
    this.meta.size = size;
  }

  /**
   * The cached segment holding byte `pos`, or null.
   * @param {number} pos
   */
  segmentAt(pos) {
    const s = this.meta.segments[lastAtOrBefore(this.meta.segments, pos)];
    return s && pos < s[1] ? s : null;
  }

  /**
   * The start of the first cached segment after `pos`, or `end`.
   * @param {number} pos
   * @param {number} end
   */
  nextCovered(pos, end) {
    const next = this.meta.segments[lastAtOrBefore(this.meta.segments, pos) + 1];
    return next ? Math.min(next[0], end) : end;
  }

  /**
   * @param {number} a
   * @param {number} b
   */
  readRaw(a, b) {
    const out = new Uint8Array(b - a);
    const n = this.data.read(out, { at: a });
    if (n !== out.length) throw new HearthError('internal', `the cache returned ${n} of ${out.length} bytes`);
    return out;
  }

  /**
   * The bytes of `segment`, or null (and the segment dropped) where they do not match its hash.
   * @param {Segment} segment
   */
  async read(segment) {
    const [a, b, hash] = segment;
    let bytes = null;
    try { bytes = this.readRaw(a, b); } catch { bytes = null; }
    if (bytes && (await sha256(bytes)) === hash) return bytes;
    const segments = this.meta.segments;
    segments.splice(segments.indexOf(segment), 1);
    return null;
  }

  /** A writer for one stream of bytes; streams fetched side by side each need their own. */
  writer() {
    return new SegmentWriter(this);
  }

  /**
   * Records [a, b), just written, as a segment, hashed as its bytes are on disk.
   * @param {number} a
   * @param {number} b
   */
  async record(a, b) {
    const hash = await sha256(this.readRaw(a, b));
    const segments = this.meta.segments;
    segments.splice(lastAtOrBefore(segments, a) + 1, 0, [a, b, hash]);
  }

  /**
   * Writes the metadata, padded to the room it is given for a file of this size: that room is
   * taken before the first byte is cached (see UrlFile.open), so a quota reached while the
   * bytes come in still leaves space to record what was cached.
   */
  async save() {
    this.data.flush();
    this.unsaved = 0;
    const room = this.meta.size ? 4096 + 256 * Math.ceil(this.meta.size / SEGMENT) : 0;
    const h = await this.metaHandle.createSyncAccessHandle();
    try {
      // Trailing spaces are JSON whitespace.
      const bytes = new TextEncoder().encode(JSON.stringify(this.meta).padEnd(room));
      h.write(bytes, { at: 0 });
      h.truncate(bytes.length);
      h.flush();
    } finally {
      h.close();
    }
  }

  async close() {
    try {
      await this.save();
    } catch (/** @type {any} */ e) {
      // Metadata that could not be written leaves the last written: whatever it lists that
      // was since dropped fails its hash when read, and is fetched again.
      if (e?.name !== 'QuotaExceededError') throw e;
    } finally {
      this.data.close();
      this.release();
    }
  }
}

/** Writes one stream's bytes into a cache entry, recording them as segments as they complete. */
class SegmentWriter {
  /** @param {CacheEntry} entry */
  constructor(entry) {
    this.entry = entry;
    /**
     * [start, end) of the bytes written since the last segment was recorded.
     * @type {[number, number] | null}
     */
    this.run = null;
  }

  /**
   * @param {number} at
   * @param {Uint8Array} bytes
   */
  async write(at, bytes) {
    const entry = this.entry;
    for (let off = 0; off < bytes.length;) {
      const pos = at + off;
      const blockEnd = (Math.floor(pos / SEGMENT) + 1) * SEGMENT;
      const n = Math.min(bytes.length - off, blockEnd - pos);
      if (this.run && this.run[1] !== pos) await this.commit();
      // A quota error propagates: the load fails with code "quota_exceeded", and what was
      // recorded before stays whole.
      const written = entry.data.write(bytes.subarray(off, off + n), { at: pos });
      if (written !== n) throw new DOMException('the cache took only part of a write', 'QuotaExceededError');
      this.run = [this.run ? this.run[0] : pos, pos + n];
      entry.unsaved += n;
      if (pos + n === blockEnd) await this.commit();
      off += n;
    }
    if (entry.unsaved >= META_EVERY) await entry.save();
  }

  /** Records what was written since the last segment. */
  async commit() {
    const run = this.run;
    this.run = null;
    if (run) await this.entry.record(...run);
  }
}

/**
 * What fetch() threw, as a HearthError: a reachable server that refuses this origin is CORS.
 * @param {string} url
 * @param {any} e
 * @param {AbortSignal | undefined} signal
 */
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

/**
 * @param {string} url
 * @param {[number, number] | null} range [start, end), or null for the whole file
 * @param {AbortSignal | undefined} signal
 */
async function httpGet(url, range, signal) {
  /** @type {Record<string, string>} */
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

/** @param {Response} res */
function contentRange(res) {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('Content-Range') || '');
  return m ? { start: Number(m[1]), size: m[3] === '*' ? null : Number(m[3]) } : null;
}

/** One model file read over HTTP. `stream(start, end)` yields its bytes in order. */
class UrlFile {
  /**
   * @param {string} url
   * @param {{ signal: AbortSignal | undefined, cache: boolean }} options
   */
  static async open(url, { signal, cache }) {
    let entry = null;
    if (cache) {
      try {
        entry = await CacheEntry.open(url, signal);
      } catch (/** @type {any} */ e) {
        // Without OPFS the load goes on uncached.
        if (e?.name === 'QuotaExceededError' || e?.name === 'AbortError') throw e;
      }
    }
    const f = new UrlFile(url, signal, entry);
    try {
      const res = await httpGet(url, [0, FIRST_BYTES], signal);
      const cr = res.status === 206 ? contentRange(res) : null;
      /** The file's size where the server answers with ranges of it, else null. */
      const rangedSize = cr?.start === 0 ? cr.size : null;
      f.ranged = rangedSize !== null;
      f.size = rangedSize ?? Number(res.headers.get('Content-Length'));
      if (!f.ranged && !(f.size > 0) && res.headers.get('Content-Length') === null) {
        throw new HearthError('http_error', `${url} has neither Range support nor a Content-Length`);
      }
      f.first = res;
      f.entry?.validate(f.size, res.headers.get('ETag'));
      await f.entry?.save();
      f.offline = false;
    } catch (e) {
      const cachedSize = f.entry?.meta.size;
      if (!(e instanceof HearthError && e.code === 'network') || !cachedSize || !f.entry?.segmentAt(0)) {
        await f.entry?.close();
        // An entry that never got a byte is not left behind.
        if (f.entry && f.entry.meta.segments.length === 0) await deleteCache(url).catch(() => {});
        throw e;
      }
      // Offline: what the cache holds is all there is.
      f.size = cachedSize;
      f.ranged = true;
      f.first = null;
      f.offline = true;
    }
    return f;
  }

  /**
   * @param {string} url
   * @param {AbortSignal | undefined} signal
   * @param {CacheEntry | null} entry where its bytes are cached, if they are
   */
  constructor(url, signal, entry) {
    this.url = url;
    this.signal = signal;
    this.entry = entry;
    /** Bytes in the file. */
    this.size = 0;
    /** Whether the server answers Range requests. */
    this.ranged = false;
    /**
     * The opening request's response, until its bytes are read.
     * @type {Response | null}
     */
    this.first = null;
    /** Unreachable: only the cached bytes can be read. */
    this.offline = false;
  }

  /**
   * @param {number} start
   * @param {number} end
   * @returns {AsyncGenerator<Chunk, void>}
   */
  async *stream(start, end) {
    let pos = start;
    while (pos < end) {
      const segment = this.entry?.segmentAt(pos);
      // A segment whose bytes were altered on disk is dropped, and fetched again below.
      const bytes = segment && (await this.entry?.read(segment));
      if (bytes) {
        const to = Math.min(end, segment[1]);
        yield { offset: pos, bytes: bytes.subarray(pos - segment[0], to - segment[0]) };
        pos = to;
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

  /**
   * Bytes [start, end) from the network, resuming after a broken connection.
   * @param {number} start
   * @param {number} end
   */
  async *fetchSpan(start, end) {
    const writer = this.entry?.writer();
    try {
      yield* this.download(writer, start, end);
    } finally {
      // Also when the reader stops early: what was written is recorded.
      await writer?.commit();
    }
  }

  /**
   * fetchSpan's requests, each chunk written through `writer` before it is handed on.
   * @param {SegmentWriter | undefined} writer
   * @param {number} start
   * @param {number} end
   * @returns {AsyncGenerator<Chunk, void>}
   */
  async *download(writer, start, end) {
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
        if (!res.body) throw new HearthError('network', `${this.url} answered with no body`);
        reader = res.body.getReader();
        const before = pos;
        while (pos < end) {
          const { done, value } = await reader.read();
          if (done) break;
          const from = Math.max(pos, at);
          const to = Math.min(end, at + value.length);
          if (to > from) {
            const bytes = value.subarray(from - at, to - at);
            await writer?.write(from, bytes);
            yield { offset: from, bytes };
            pos = to;
          }
          at += value.length;
        }
        if (pos > before) failures = 0;
        else if (++failures > RETRIES) throw new HearthError('network', `${this.url} sends no data past byte ${pos}`);
      } catch (/** @type {any} */ e) {
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
  /** @param {Blob} blob */
  constructor(blob) {
    this.blob = blob;
    this.size = blob.size;
    this.ranged = true;
  }

  /**
   * @param {number} start
   * @param {number} end
   * @returns {AsyncGenerator<Chunk, void>}
   */
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

/**
 * Opens each part of a model source: a URL, a File/Blob, or a list of URLs (split GGUF).
 * @param {import('./index.js').ModelSource} source
 * @param {{ signal?: AbortSignal, cache?: boolean }} [options]
 * @returns {Promise<ModelFile[]>}
 */
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

/**
 * The cache's entries.
 * @returns {Promise<import('./index.js').CacheEntry[]>}
 */
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
      // A handle that is not a file's throws here, and is not listed.
      /** @type {Meta} */
      const meta = JSON.parse(await (await /** @type {FileSystemFileHandle} */ (handle).getFile()).text());
      // An entry of an older layout holds nothing usable: the next load of its URL drops it.
      const segments = meta.format === FORMAT ? meta.segments : [];
      const cachedBytes = segments.reduce((n, [a, b]) => n + (b - a), 0);
      out.push({ url: meta.url, size: meta.size, cachedBytes, complete: meta.size !== null && cachedBytes === meta.size });
    } catch {
      // An entry being written right now, or damaged: not listed.
    }
  }
  return out;
}

/**
 * Removes a URL's cached bytes; true if there were any.
 * @param {string | URL} url
 */
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
    } catch (/** @type {any} */ e) {
      if (e?.name !== 'NotFoundError') throw HearthError.from(e);
    }
  }
  return found;
}
