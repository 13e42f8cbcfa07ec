// Errors a page can act on. Every error the API throws is a HearthError with a stable `code`.

/** @type {readonly ErrorCode[]} */
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
 * @typedef {import('./index.js').ErrorCode} ErrorCode
 * @typedef {import('./index.js').HearthError} Declared
 * @typedef {{ status?: number, architecture?: string, supported?: import('./index.js').Architecture[] }} Details
 * @typedef {{ code: ErrorCode, message: string } & Details} ErrorFields an error as a plain
 *   object (`toJSON()`), as it crosses postMessage
 */

/** @implements {Declared} */
export class HearthError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} message
   * @param {Details & { cause?: unknown }} [extra]
   */
  constructor(code, message, { status, architecture, supported, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = code === 'aborted' ? 'AbortError' : 'HearthError';
    this.code = code;
    // Only the details an error has are fields of it.
    if (status !== undefined) this.status = status;
    if (architecture !== undefined) this.architecture = architecture;
    if (supported !== undefined) this.supported = supported;
  }

  /**
   * A plain object that survives postMessage.
   * @returns {ErrorFields}
   */
  toJSON() {
    const { code, message, status, architecture, supported } = this;
    return {
      code,
      message,
      ...(status !== undefined && { status }),
      ...(architecture !== undefined && { architecture }),
      ...(supported !== undefined && { supported }),
    };
  }

  /**
   * Turns anything thrown (a wasm error carrying `code`, a DOMException, an error's toJSON()
   * from the worker, ...) into a HearthError.
   * @param {any} e
   */
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
