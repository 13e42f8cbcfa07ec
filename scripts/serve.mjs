#!/usr/bin/env node
// A dependency-free static file server on 127.0.0.1, used two ways:
//   node scripts/serve.mjs [--not-isolated] [PORT]
//                                   serves the repository root for the demo page (www/), on
//                                   PORT (argv, else $PORT, else 8080; a free port if taken),
//                                   cross-origin isolated unless told not to;
//   import { serve } from it        the browser tests' servers (any root, port chosen freely).
// It answers Range requests (206) unless told not to, serves index.html for directories, can
// drop a connection midway through a body once (`state.dropAfter` bytes into the first body
// longer than that which starts at or past `state.dropFrom`), can leave out CORS headers, can
// make its pages cross-origin isolated (`isolated`, off by default for tests, on for the demo:
// the COOP and COEP headers that SharedArrayBuffer, hence the CPU engine's workers, needs), and counts requests per path.

import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

/** The file behind a request path, or null: directories give their index.html. */
function fileFor(root, path) {
  const file = join(root, normalize(path).replace(/^(\.\.[/\\])+/, ''));
  try {
    const stat = statSync(file);
    if (stat.isFile()) return { file, stat };
    if (stat.isDirectory()) {
      const index = join(file, 'index.html');
      const s = statSync(index);
      if (s.isFile()) return { file: index, stat: s, directory: true };
    }
  } catch {
    // Missing: 404 below.
  }
  return null;
}

/**
 * @param {string} root directory to serve
 * @param {{ range?: boolean, cors?: boolean, isolated?: boolean, port?: number, home?: string }} options
 *   port: 0 (default) picks a free one; a taken port falls back to a free one.
 *   home: where "/" redirects to (when the root has no index.html).
 *   isolated: every response carries `Cross-Origin-Opener-Policy: same-origin` and
 *     `Cross-Origin-Embedder-Policy: require-corp`, so that its pages are cross-origin isolated
 *     (they can then load other origins' resources only through CORS).
 */
export async function serve(root, options = {}) {
  const state = { range: options.range ?? true, cors: options.cors ?? true, dropAfter: null, dropFrom: 0, requests: [] };
  const server = createServer((req, res) => {
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      return res.writeHead(400, { 'Content-Type': 'text/plain' }).end('bad path');
    }
    state.requests.push({ path, range: req.headers.range ?? null });
    if (state.cors) {
      res.setHeader('Access-Control-Allow-Origin', '*');
      res.setHeader('Access-Control-Allow-Headers', 'Range');
      res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, ETag, Accept-Ranges');
    }
    if (options.isolated) {
      res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
      res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    }
    if (req.method === 'OPTIONS') return res.writeHead(204).end();
    const found = fileFor(root, path);
    if (!found && path === '/' && options.home) return res.writeHead(302, { Location: options.home }).end();
    if (!found) return res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    // A directory's page needs the trailing slash for its relative links to resolve.
    if (found.directory && !path.endsWith('/')) return res.writeHead(301, { Location: `${path}/` }).end();
    const { file, stat } = found;
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
    if (req.method === 'HEAD' || end === start) return res.end();
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
    body.on('error', () => res.destroy());
    body.pipe(res);
  });
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  const listen = (port) =>
    new Promise((ok, fail) => {
      server.once('error', fail);
      server.listen(port, '127.0.0.1', () => { server.off('error', fail); ok(); });
    });
  try {
    await listen(options.port ?? 0);
  } catch (e) {
    if (e.code !== 'EADDRINUSE' || !options.port) throw e;
    await listen(0);
  }
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    state,
    close: () =>
      new Promise((done) => {
        for (const s of sockets) s.destroy();
        server.close(done);
      }),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
  const args = process.argv.slice(2);
  // Isolated unless told not to: the CPU engine splits a model across workers only there.
  const isolated = !args.includes('--not-isolated');
  const arg = args.find((a) => !a.startsWith('--')) ?? process.env.PORT ?? '8080';
  const port = Number(arg);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve.mjs: the port must be a number from 0 to 65535, not ${JSON.stringify(arg)}`);
    process.exit(2);
  }
  const { url } = await serve(root, { port, home: '/www/', isolated });
  if (port && !url.endsWith(`:${port}`)) console.error(`port ${port} is taken; using another`);
  console.log(`Hearth demo: ${url}/www/${isolated ? ' (cross-origin isolated)' : ''}`);
}
