// A small static file server for the browser tests, on 127.0.0.1. It answers Range requests
// (206) unless told not to, can drop a connection midway through a body once (`state.dropAfter`
// bytes into the first body longer than that which starts at or past `state.dropFrom`), can
// leave out CORS headers, and counts requests per path.

import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
};

/**
 * @param {string} root directory to serve
 * @param {{ range?: boolean, cors?: boolean }} options
 */
export async function serve(root, options = {}) {
  const state = { range: options.range ?? true, cors: options.cors ?? true, dropAfter: null, dropFrom: 0, requests: [] };
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    state.requests.push({ path, range: req.headers.range ?? null });
    if (state.cors) {
      res.setHeader('Access-Control-Allow-Origin', '*');
      res.setHeader('Access-Control-Allow-Headers', 'Range');
      res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, ETag, Accept-Ranges');
    }
    if (req.method === 'OPTIONS') return res.writeHead(204).end();
    const file = join(root, normalize(path).replace(/^(\.\.[/\\])+/, ''));
    let stat;
    try {
      stat = statSync(file);
      if (!stat.isFile()) throw new Error('not a file');
    } catch {
      return res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    }
    const headers = {
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      ETag: `"${stat.size}-${stat.mtimeMs}"`,
      'Cache-Control': 'no-store',
    };
    let start = 0;
    let end = stat.size; // exclusive
    const m = state.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (state.range) headers['Accept-Ranges'] = 'bytes';
    if (m) {
      start = Number(m[1]);
      end = m[2] ? Math.min(stat.size, Number(m[2]) + 1) : stat.size;
      if (start >= stat.size || start >= end) {
        return res.writeHead(416, { 'Content-Range': `bytes */${stat.size}` }).end();
      }
      headers['Content-Range'] = `bytes ${start}-${end - 1}/${stat.size}`;
    }
    headers['Content-Length'] = end - start;
    res.writeHead(m ? 206 : 200, headers);
    if (req.method === 'HEAD') return res.end();
    const body = createReadStream(file, { start, end: end - 1 });
    if (state.dropAfter !== null && end - start > state.dropAfter && start >= state.dropFrom) {
      // Send part of the body, then cut the connection (once).
      const limit = state.dropAfter;
      state.dropAfter = null;
      let sent = 0;
      body.on('data', (chunk) => {
        if (sent + chunk.length >= limit) {
          body.destroy();
          // Cut the connection a while after the bytes before the cut: a browser drops body
          // bytes it has not handed to the reader yet when the stream fails.
          res.write(chunk.subarray(0, limit - sent));
          setTimeout(() => res.socket.destroy(), 500);
          return;
        }
        sent += chunk.length;
        res.write(chunk);
      });
      body.on('end', () => res.end());
      return;
    }
    body.pipe(res);
  });
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    state,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(resolve);
      }),
  };
}
