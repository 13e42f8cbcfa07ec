// Types of the hearth-llm package.
//
// Options have one spelling each: OpenAI's request fields (and top_k, min_p and
// repetition_penalty, as OpenAI-compatible servers spell them) in snake_case, in generate() as
// in chat completions; Hearth's own (signal, onProgress, abortTimeout, addSpecial, ...) in
// camelCase. A field of any other name is a "bad_request" that names it.

export type ErrorCode =
  | 'not_found'
  | 'cors'
  | 'network'
  | 'http_error'
  | 'not_gguf'
  | 'invalid_model'
  | 'unsupported_architecture'
  | 'unsupported_quantization'
  | 'unsupported_tokenizer'
  | 'too_large'
  | 'out_of_memory'
  | 'quota_exceeded'
  | 'no_webgpu'
  | 'gpu_error'
  | 'device_lost'
  | 'context_full'
  | 'aborted'
  | 'bad_request'
  | 'busy'
  | 'disposed'
  | 'internal';

export declare const ERROR_CODES: readonly ErrorCode[];

/** One architecture the engine runs. */
export interface Architecture {
  /** The GGUF `general.architecture` name, such as "qwen35". */
  name: string;
  /** The model families that use it, for people, such as "Qwen3.5" or "Qwen2, Qwen2.5". */
  models: string;
}

/**
 * Every error the API throws. `name` is "AbortError" for code "aborted".
 *
 * "bad_request" also covers a model's chat template that fails: one that raises an error for
 * the conversation, does not parse, or runs past the budget every render has (fuel, an output
 * cap, a recursion limit: a template comes with the model file and is untrusted code). Its
 * message then starts with "the chat template"; `generate()` with plain text still works.
 */
export declare class HearthError extends Error {
  readonly code: ErrorCode;
  /** The HTTP status, for "not_found" and "http_error". */
  readonly status?: number;
  /** For "unsupported_architecture": the file's architecture, when it names one. */
  readonly architecture?: string;
  /** For "unsupported_architecture": what the engine runs (as `Hearth.architectures()`). */
  readonly supported?: Architecture[];
  constructor(code: ErrorCode, message: string, extra?: {
    status?: number;
    architecture?: string;
    supported?: Architecture[];
    cause?: unknown;
  });
  static from(e: unknown): HearthError;
}

export type Backend = 'auto' | 'webgpu' | 'cpu';

/** A model: its URL, a File or Blob, or the URLs of a split GGUF file's parts in order. */
export type ModelSource = string | URL | Blob | Array<string | URL>;

export interface LoadProgress {
  /** "download": tensor bytes fetched (or read from the cache); "load": weight bytes built into
   * the engine, `total` being the weights' size (`info.weightBytes`). */
  phase: 'download' | 'load';
  loaded: number;
  total: number;
}

export interface LoadOptions {
  /** Called as loading moves forward; never with less than before. */
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /** Positions the KV cache holds (default: the model's context length, at most 4096). */
  contextLength?: number;
  /**
   * "auto" (default) uses WebGPU when a hardware device passes the self-test and a probe of
   * the model's shapes finds it faster than the CPU engine, else the CPU: a software adapter
   * (SwiftShader, a fallback adapter) is taken for slower without a probe.
   */
  backend?: Backend;
  /** Keep downloaded bytes in the Origin Private File System (default true). */
  cache?: boolean;
  /**
   * Milliseconds the engine's worker may take to answer an abort (default 3000). A worker
   * that does not, being stuck in one long call, is terminated: the aborted call and any
   * other under way reject with "aborted", later calls with "disposed", and a new
   * `Hearth.load` starts afresh.
   */
  abortTimeout?: number;
  /**
   * Workers to split a CPU model's matrices across, each a WebAssembly instance with its own
   * memory holding its part of every matrix (default: one per core, `navigator.hardwareConcurrency`,
   * at most 8). The workers exchange activations through a SharedArrayBuffer where the page is
   * cross-origin isolated (COOP `same-origin` and COEP `require-corp` or `credentialless`), and
   * by message, more slowly, where it is not. WebGPU ignores it.
   */
  workers?: number;
}

export interface EngineInfo {
  /** The GGUF architecture: one of `Hearth.architectures()`' names ("llama", "qwen35", ...). */
  architecture: string;
  name: string | null;
  /** The type of most weight matrices, such as "Q4_K" or "F16". */
  quantization: string;
  parameters: number;
  weightBytes: number;
  layers: number;
  vocabSize: number;
  contextLength: number;
  cachePositions: number;
  memoryNeeded: number;
  chatTemplate: boolean;
  backend: 'webgpu' | 'cpu';
  /** The WebGPU adapter, or null on the CPU. */
  adapter: string | null;
  /** Optional WebGPU features in use ("shader-f16", "subgroups"). */
  features: string[];
  /** Bytes the model holds now: GPU memory, or on the CPU the wasm memory of every worker (weights, cache, tokenizer and all). */
  memoryHeld: number;
  /** Tokens whose keys and values the cache holds. */
  cachedTokens: number;
  /** Workers the CPU engine's matrices are split across (1 on WebGPU). */
  workers: number;
  /** Why WebGPU is not in use under backend "auto", if it is not. */
  fallbackReason: string | null;
  /** The WebAssembly build running: "relaxed-simd" (its 8-bit dot product speeds the CPU engine's K-quant products) where the browser has relaxed SIMD, else "simd128". */
  wasm: 'relaxed-simd' | 'simd128';
}

export interface SamplingParams {
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  repetition_penalty?: number | null;
  /** Token id -> bias added to its logit (-Infinity bans it). */
  logit_bias?: Record<string | number, number> | null;
  /**
   * Holds the output to a format: the model can only produce text the format accepts. Checked
   * before any token: a schema or grammar that cannot be used is a `bad_request` naming why.
   */
  response_format?: ResponseFormat | null;
  /** Aborting ends the stream at once with a HearthError of code "aborted". */
  signal?: AbortSignal;
}

/**
 * OpenAI's `response_format`, and Hearth's `grammar` and `regex`. With `strict: true` a JSON
 * schema keyword the engine cannot enforce is a `bad_request`; without it such keywords are
 * ignored and the output is held to the rest. JSON comes out compact (`", "` and `": "`
 * separators).
 */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | {
      type: 'json_schema';
      json_schema: { name: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null };
    }
  /** Hearth: a grammar in llguidance's Lark dialect (`start: ...`; GBNF-style `::=` rules too). */
  | { type: 'grammar'; grammar: string }
  /** Hearth: a regular expression (Rust syntax) the whole output matches. */
  | { type: 'regex'; regex: string };

/** Only text parts are read; a part of another type (image, audio, file) is a bad_request. */
export type ChatContentPart = { type: 'text'; text: string } | { type: 'image_url' | 'input_audio' | 'file' | 'refusal' };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'developer' | 'tool' | string;
  content?: string | ChatContentPart[] | null;
  /** An assistant message's calls, as a reply gave them (a custom tool's call is a bad_request). */
  tool_calls?: Array<ToolCall | { id: string; type: 'custom'; custom: { name: string; input: string } }>;
  /** A tool message: the call it answers. */
  tool_call_id?: string;
  name?: string;
}

export interface FunctionTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

/**
 * A call the model made. Its arguments are JSON text valid against the tool's `parameters`:
 * the reply is held to the model's own tool-call syntax (Qwen's `<tool_call>` blocks, Llama
 * 3.1's JSON) with each tool's schema.
 */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** "allowed_tools" and custom tool choices are a bad_request. */
export type ToolChoice =
  | 'auto'
  | 'none'
  | 'required'
  | { type: 'function'; function: { name: string } }
  | { type: 'allowed_tools' | 'custom' };

export interface ChatCompletionRequest extends SamplingParams {
  messages: ChatMessage[];
  /** Shown to the model through its chat template, which must take tools (custom tools are a bad_request). */
  tools?: Array<FunctionTool | { type: 'custom'; custom: { name: string } }> | null;
  /** "auto" (the default): text or calls; "required": calls; a function: calls of it only. */
  tool_choice?: ToolChoice | null;
  /** Whether a reply may make several calls (default true). */
  parallel_tool_calls?: boolean | null;
  model?: string | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** In chat completions, a format that allowed no further token is "stop" with `stop_reason`. */
export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: 'assistant'; content: string | null; refusal: null; tool_calls?: ToolCall[] };
    logprobs: null;
    finish_reason: FinishReason;
    /** "constraint": the response format allowed no further token (a grammar that dead-ends). */
    stop_reason?: 'constraint';
  }>;
  usage: CompletionUsage;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: { role?: 'assistant'; content?: string; tool_calls?: Array<ToolCall & { index: number }> };
    logprobs: null;
    finish_reason: FinishReason | null;
    stop_reason?: 'constraint';
  }>;
  /** On the chunk that carries the finish reason (and on a usage-only chunk with include_usage). */
  usage?: CompletionUsage;
}

export interface GenerateOptions extends SamplingParams {
  /** Add the tokenizer's BOS/EOS around the prompt (default true). */
  addSpecial?: boolean;
}

export interface TokenizeOptions {
  /** Add the tokenizer's BOS/EOS (default true). */
  addSpecial?: boolean;
}

export interface DetokenizeOptions {
  /** Leave control tokens out (default false). */
  skipSpecial?: boolean;
}

export interface GeneratedToken {
  text: string;
  /** Null for text that comes with the end rather than with a token of its own. */
  token: number | null;
}

export interface GenerateResult {
  /** "constraint": the response format allowed no further token. */
  finishReason: FinishReason | 'constraint';
  usage: CompletionUsage;
}

export interface CacheEntry {
  url: string;
  size: number | null;
  cachedBytes: number;
  complete: boolean;
}

/** The events a `Hearth` fires (it is an EventTarget). */
export interface HearthEventMap {
  /** The WebGPU device was lost, or a worker of the CPU engine failed or stopped answering;
   * the engine is being loaded again in a new worker, on a new device where one can be had,
   * else on the CPU. Calls made meanwhile wait for it. */
  devicelost: CustomEvent<{ message: string }>;
  /** Loading progress of that rebuild. */
  progress: CustomEvent<LoadProgress>;
  /** The engine is ready again; `info.backend` and `info.fallbackReason` say where it runs. */
  restored: CustomEvent<{ info: EngineInfo }>;
  /** The engine could not be loaded again; later calls reject with "disposed". */
  restorefailed: CustomEvent<{ error: HearthError }>;
}

export declare class Hearth extends EventTarget {
  private constructor();
  addEventListener<K extends keyof HearthEventMap>(
    type: K,
    listener: (this: Hearth, event: HearthEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof HearthEventMap>(
    type: K,
    listener: (this: Hearth, event: HearthEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
  static load(source: ModelSource, options?: LoadOptions): Promise<Hearth>;
  /**
   * The architectures this build runs, such as `{ name: 'qwen35', models: 'Qwen3.5' }`, read
   * from the engine (a short-lived worker) without loading a model; asked once per page.
   */
  static architectures(): Promise<readonly Readonly<Architecture>[]>;
  static cache: {
    list(): Promise<CacheEntry[]>;
    /** Removes a URL's cached bytes; resolves true if there were any. */
    delete(url: string | URL): Promise<boolean>;
  };
  readonly model: string;
  readonly info: EngineInfo;
  readonly chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
    };
  };
  /** Continues raw text (no chat template); greedy unless a temperature is given. */
  generate(prompt: string, options?: GenerateOptions): AsyncIterable<GeneratedToken> & {
    [Symbol.asyncIterator](): AsyncIterator<GeneratedToken, GenerateResult | undefined>;
  };
  tokenize(text: string, options?: TokenizeOptions): Promise<number[]>;
  detokenize(tokens: ArrayLike<number>, options?: DetokenizeOptions): Promise<string>;
  /** Forgets the conversation held in the KV cache. */
  reset(): Promise<void>;
  /** Stops the engine's worker and frees its memory. */
  dispose(): void;
}

export default Hearth;
