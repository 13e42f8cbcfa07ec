// The wasm runtime, in one of two builds of the same code: the second also uses relaxed SIMD
// (its 8-bit dot product doubles the CPU kernels' byte products), where the browser has it.
// Both builds export the same functions, so one glue module serves either.

import init from './wasm/hearth_web.js';

/**
 * A module whose one function is `i16x8.relaxed_dot_i8x16_i7x16_s`: it validates only where
 * the engine has relaxed SIMD.
 */
const RELAXED_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x07, 0x01, 0x60, 0x02, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128, v128) -> v128
  0x03, 0x02, 0x01, 0x00, // one function of that type
  0x0a, 0x0b, 0x01, 0x09, 0x00, 0x20, 0x00, 0x20, 0x01, 0xfd, 0x92, 0x02, 0x0b, // its code
]);

/** The build in use. @type {'relaxed-simd' | 'simd128'} */
export const wasmBuild = WebAssembly.validate(RELAXED_PROBE) ? 'relaxed-simd' : 'simd128';

/** Instantiates the runtime once (later calls return the same); resolves to its exports. */
export function start() {
  // Literal URLs, so that bundlers see both files.
  const url = wasmBuild === 'relaxed-simd'
    ? new URL('./wasm/hearth_web_relaxed_bg.wasm', import.meta.url)
    : new URL('./wasm/hearth_web_bg.wasm', import.meta.url);
  return init({ module_or_path: url });
}
