// What the page tells a person for each HearthError code (pkg/errors.js). The error's own
// message, which is technical, is shown beneath as a detail. "aborted" says nothing: the
// person asked for it.

export const ERROR_TEXT = Object.freeze({
  not_found: 'That model file was not found (HTTP 404). Check the address: on the Hugging Face Hub a file\'s link looks like https://huggingface.co/OWNER/REPO/resolve/main/FILE.gguf.',
  cors: 'The server holding that file does not let other websites download it (CORS). Download the file and open it from your disk instead, or use a host that allows it, such as the Hugging Face Hub.',
  network: 'The model could not be downloaded: the network is unreachable. Check your connection and try again. A model downloaded before loads from the cache, even offline.',
  http_error: 'The server refused the download. Try again later, or use another copy of the model.',
  not_gguf: 'That file is not a GGUF model. Hearth reads .gguf files, such as those in the "-GGUF" repositories on the Hugging Face Hub.',
  invalid_model: 'The GGUF file is damaged or inconsistent. If it was downloaded, delete it from the download cache and load it again.',
  unsupported_architecture: 'This model\'s architecture is not supported yet.',
  unsupported_quantization: 'This model is stored in a quantization type Hearth cannot read. Try the Q4_K_M or Q8_0 file of the same model.',
  unsupported_tokenizer: 'This model\'s tokenizer is not supported. Hearth reads SentencePiece (Llama 2 style) and byte-level BPE (GPT-2 style) vocabularies.',
  too_large: 'This model is too large for this device. Pick a smaller model, or a smaller quantization of it (such as Q4_K_M).',
  out_of_memory: 'The device ran out of memory for this model. Close other tabs, or pick a smaller model.',
  quota_exceeded: 'There is not enough storage to cache the download. Delete cached models under "Download cache", or load a smaller model.',
  no_webgpu: 'WebGPU is not available in this browser, so the WebGPU backend cannot run. Choose the "Auto" or "CPU" backend, or use a browser with WebGPU (a recent Chrome, Edge or Safari).',
  gpu_error: 'The GPU failed a check while running the model. Choose the CPU backend and load the model again.',
  device_lost: 'The GPU stopped responding. Hearth is loading the model again, on the CPU if the GPU is gone; the conversation is kept, so send your message again when it is ready.',
  context_full: 'The conversation no longer fits in the model\'s context. Start a New chat to go on.',
  aborted: '',
  bad_request: 'Hearth could not do that with these settings.',
  busy: 'The model is busy with another request. Wait for it to finish, or press Stop.',
  disposed: 'That model was unloaded. Load it again to go on.',
  internal: 'Something went wrong inside Hearth. Reload the page and try again.',
});

/**
 * The model families of `supported` (`[{ name, models }]`, as `Hearth.architectures()` and an
 * unsupported_architecture error give it) as one phrase: "Llama, …, Qwen3, and Qwen3.5".
 */
export function modelFamilies(supported) {
  return new Intl.ListFormat('en', { type: 'conjunction' }).format(supported.map((a) => a.models));
}

/** Shown for a bad_request whose message says the model's chat template failed. */
export const TEMPLATE_TEXT = 'This model\'s chat template failed, so it cannot chat: the template is broken, or made to stall the page and was stopped. Pick another model.';

/** The friendly text for an error `{ code, status, message, architecture, supported }`. */
export function errorText({ code, status, message, architecture, supported }) {
  if (code === 'bad_request' && /^the chat template/.test(message ?? '')) return TEMPLATE_TEXT;
  const text = ERROR_TEXT[code] ?? ERROR_TEXT.internal;
  if (code === 'unsupported_architecture') {
    // The list comes with the error, from the engine itself: no copy here to fall behind.
    const what = architecture ? text.replace('architecture', `architecture (${architecture})`) : text;
    return supported?.length ? `${what} Hearth runs ${modelFamilies(supported)} models.` : what;
  }
  if (code === 'http_error' && status) return text.replace('refused the download', `refused the download (HTTP ${status})`);
  if (code === 'not_found' && status === 410) return text.replace('(HTTP 404)', '(HTTP 410)');
  return text;
}
