// A page whose engine workers run some code of the test's before the package's worker.js: a
// way to give WebGPU the limits or the memory of a weaker device, or to hold a worker busy; or
// whose package is edited otherwise.

import assert from 'node:assert/strict';
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
 * `auto` skips its speed probe, so that it takes the adapter as the self-test leaves it (a
 * software one, made to read as hardware, would lose the probe to the CPU engine).
 */
export const noSpeedProbeShim = `import { Loader as ShimLoader } from './wasm/hearth_web.js';
ShimLoader.prototype.probeWidths = () => undefined;`;

/**
 * Runs `body(page)` on a new page of `browser` whose engine workers run `shim` first; resolves
 * to what `body` does.
 */
export function withWorkerShim(browser, shim, body) {
  return withEditedPackage(browser, { 'worker.js': (text) => `${shim}\n${text}` }, body);
}

/** An edit for withEditedPackage: `from` (which the file must hold) replaced by `to`. */
export function replacing(from, to) {
  return (text, file) => {
    assert.ok(text.includes(from), `pkg/${file} has ${JSON.stringify(from)}`);
    return text.replace(from, to);
  };
}

/**
 * Runs `body(page)` on a new page of `browser` served from a copy of the package (cross-origin
 * isolated with `isolated`) in which each pkg/`file` of `edits` is `edits[file](its text,
 * file)`; resolves to what `body` does. (A copy, as routes do not reach the workers that
 * workers start.)
 */
export async function withEditedPackage(browser, edits, body, { isolated = false } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'hearth-shim-'));
  cpSync(join(ROOT, 'pkg'), join(root, 'pkg'), { recursive: true, filter: (f) => !f.includes('node_modules') });
  for (const [file, edit] of Object.entries(edits)) {
    writeFileSync(join(root, 'pkg', file), edit(readFileSync(join(ROOT, 'pkg', file), 'utf8'), file));
  }
  mkdirSync(join(root, 'tests/browser'), { recursive: true });
  copyFileSync(join(ROOT, 'tests/browser/page.html'), join(root, 'tests/browser/page.html'));
  const server = await serve(root, { isolated });
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
