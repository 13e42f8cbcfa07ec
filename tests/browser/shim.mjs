// A page whose engine workers run some code of the test's before the package's worker.js: a
// way to give WebGPU the limits or the memory of a weaker device, or to hold a worker busy.

import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, copyFileSync, cpSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../../scripts/serve.mjs';
import { testPage } from './chromium.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The adapter reads as a hardware one (its `isFallbackAdapter` false), so that `auto` takes
 * WebGPU on SwiftShader, as it does on a real GPU.
 */
export const hardwareShim = `{
  const d = Object.getOwnPropertyDescriptor(GPUAdapterInfo.prototype, 'isFallbackAdapter');
  Object.defineProperty(GPUAdapterInfo.prototype, 'isFallbackAdapter', { ...d, get() { return false; } });
}`;

/**
 * Runs `body(page)` on a new page of `browser` whose engine workers run `shim` first (a copy of
 * the package, served on its own); resolves to what `body` does.
 */
export async function withWorkerShim(browser, shim, body) {
  const root = mkdtempSync(join(tmpdir(), 'hearth-shim-'));
  cpSync(join(ROOT, 'pkg'), join(root, 'pkg'), { recursive: true, filter: (f) => !f.includes('node_modules') });
  writeFileSync(join(root, 'pkg/worker.js'), `${shim}\n${readFileSync(join(ROOT, 'pkg/worker.js'), 'utf8')}`);
  mkdirSync(join(root, 'tests/browser'), { recursive: true });
  copyFileSync(join(ROOT, 'tests/browser/page.html'), join(root, 'tests/browser/page.html'));
  const server = await serve(root);
  try {
    const page = await testPage(browser, server.url);
    try {
      return await body(page);
    } finally {
      await page.close();
    }
  } finally {
    await server.close();
    rmSync(root, { recursive: true, force: true });
  }
}
