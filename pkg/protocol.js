// The messages between the page-side handle (index.js) and the engine's worker (worker.js).
// The page sends requests `{ id, op, ... }`; the worker answers each with `{ id, type, ... }`:
// progress or tokens as they come, then one "done" or "error".

/** What the page asks of the worker. */
export const OP = Object.freeze({
  load: 'load',
  generate: 'generate',
  tokenize: 'tokenize',
  detokenize: 'detokenize',
  architectures: 'architectures',
  reset: 'reset',
  /** Aborts request `target`; the worker acknowledges it at once, whatever it was doing. */
  abort: 'abort',
});

/** What the worker posts. */
export const REPLY = Object.freeze({
  progress: 'progress',
  token: 'token',
  done: 'done',
  error: 'error',
  abortAck: 'abort-ack',
});

/**
 * @typedef {import('./index.js').ModelSource} ModelSource
 * @typedef {import('./index.js').Backend} Backend
 * @typedef {import('./index.js').EngineInfo} EngineInfo
 * @typedef {import('./index.js').LoadProgress} LoadProgress
 * @typedef {import('./index.js').Architecture} Architecture
 * @typedef {import('./index.js').CompletionUsage} CompletionUsage
 * @typedef {import('./errors.js').ErrorFields} ErrorFields
 */

/**
 * A message of the chat as the engine takes it: text content, tool-call arguments as JSON text.
 * @typedef {{
 *   role: string, content: string,
 *   tool_calls?: Array<{ id?: string, type: 'function', function: { name: string, arguments: string } }>,
 *   tool_call_id?: string, name?: string,
 * }} EngineMessage
 */

/**
 * A generation's options as the engine takes them (crates/hearth-web/src/request.rs), plus
 * `addSpecial` for a raw prompt's tokens. Formats and tools are JSON text.
 * @typedef {{
 *   maxTokens: number,
 *   stop: string[],
 *   sampling: {
 *     temperature: number, topP: number, topK: number, minP: number, frequencyPenalty: number,
 *     presencePenalty: number, repeatPenalty: number, seed: number, logitBias: Array<[number, number]>,
 *   },
 *   responseFormat?: string, tools?: string, toolChoice?: string, parallelToolCalls?: boolean,
 *   addSpecial?: boolean,
 * }} EngineOptions
 */

/**
 * How a generation ended; `toolCalls` are the calls read back from the reply.
 * @typedef {{
 *   finishReason: 'stop' | 'length' | 'tool_calls' | 'constraint',
 *   toolCalls: Array<{ name: string, arguments: string }>,
 *   usage: CompletionUsage,
 * }} GenerationEnd
 */

/**
 * What a generation continues: raw text, or a chat its template renders.
 * @typedef {{ prompt: string, messages?: undefined } | { messages: EngineMessage[], prompt?: undefined }} Input
 */

/**
 * The requests, by op, with what "done" carries as `value` for each.
 * @typedef {{
 *   load: { args: { source: ModelSource, options: { contextLength?: number, backend: Backend, cache: boolean, workers?: number } }, value: EngineInfo },
 *   generate: { args: Input & { options: EngineOptions }, value: GenerationEnd },
 *   tokenize: { args: { text: string, addSpecial: boolean }, value: number[] },
 *   detokenize: { args: { tokens: number[], skipSpecial: boolean }, value: string },
 *   architectures: { args: {}, value: Architecture[] },
 *   reset: { args: {}, value: void },
 * }} Ops
 */

/**
 * @typedef {{ [K in keyof Ops]: { id: number, op: K } & Ops[K]['args'] }[keyof Ops]} Request
 * @typedef {{ op: typeof OP.abort, target: number }} Abort
 * @typedef {Request | Abort} PageMessage
 */

/**
 * @typedef {{ id: number, type: typeof REPLY.progress, progress: LoadProgress }} Progress
 * @typedef {{ id: number, type: typeof REPLY.token, text: string, token: number | null }} Token
 * @typedef {{ id: number, type: typeof REPLY.done, value: unknown, info: EngineInfo | null }} Done
 * @typedef {{ id: number, type: typeof REPLY.error, error: ErrorFields }} Failure
 * @typedef {{ type: typeof REPLY.abortAck, target: number }} AbortAck
 * @typedef {Progress | Token | Done | Failure | AbortAck} WorkerMessage
 */
