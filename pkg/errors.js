// Errors a page can act on. Every error the API throws is a HearthError with a stable `code`.

/** @type {readonly string[]} */
export const ERROR_CODES = Object.freeze([
  'not_found', // the model URL answered 404/410
  'cors', // the server is reachable but does not allow this origin
  'network', // no connection (and nothing cached)
  'http_error', // any other HTTP failure
  'not_gguf', // the bytes are not a GGUF file
  'invalid_model', // a GGUF file that is damaged or inconsistent
  'unsupported_architecture',
  'unsupported_quantization',
  'unsupported_tokenizer',
  'too_large', // the model does not fit this device's limits (checked before download)
  'out_of_memory',
  'quota_exceeded', // the download cache is out of storage quota
  'no_webgpu', // backend "webgpu" was asked for and there is none
  'gpu_error', // the WebGPU device failed its self-test or a validation check
  'device_lost',
  'context_full',
  'aborted',
  'bad_request',
  'busy',
  'disposed',
  'internal',
]);

/**
 * An error as a plain object (`toJSON()`), as it crosses postMessage.
 * @typedef {{ code: import('./index.js').ErrorCode, message: string, status?: number,
 *   architecture?: string, supported?: import('./index.js').Architecture[] }} ErrorFields
 */

/** Fields an error may carry besides its code and message. */
const DETAILS = ['status', 'architecture', 'supported'];

export class HearthError extends Error {
  /**
   * @param {string} code one of ERROR_CODES
   * @param {string} message
   * @param {{ status?: number, architecture?: string,
   *   supported?: Array<{ name: string, models: string }>, cause?: unknown }} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = code === 'aborted' ? 'AbortError' : 'HearthError';
    this.code = code;
    for (const key of DETAILS) if (extra[key] !== undefined) this[key] = extra[key];
  }

  /** A plain object that survives postMessage. */
  toJSON() {
    const out = { code: this.code, message: this.message };
    for (const key of DETAILS) if (this[key] !== undefined) out[key] = this[key];
    return out;
  }

  /** Turns anything thrown (a wasm error carrying `code`, a DOMException, an error's toJSON()
   * from the worker, ...) into a HearthError. */
  static from(e) {
    if (e instanceof HearthError) return e;
    if (e && typeof e === 'object' && typeof e.code === 'string' && ERROR_CODES.includes(e.code)) {
      return new HearthError(e.code, e.message, e);
    }
    if (e && e.name === 'AbortError') return new HearthError('aborted', e.message || 'aborted');
    if (e && e.name === 'QuotaExceededError') {
      return new HearthError('quota_exceeded', `the download cache is out of storage quota (${e.message}); load with { cache: false } to skip caching`);
    }
    if (e instanceof WebAssembly.RuntimeError || (e instanceof RangeError && /memory/i.test(e.message))) {
      return new HearthError('out_of_memory', `WebAssembly ran out of memory: ${e.message}`);
    }
    return new HearthError('internal', e && e.message ? e.message : String(e));
  }
}
