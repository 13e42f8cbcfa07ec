// The models the demo offers. The bundled one ships with the page; the others are GGUF files on
// the Hugging Face Hub, fetched with Range requests and kept in the browser's download cache.
// Sizes are the files' approximate download sizes.

/** The default model, next to this page; `facts` is the JSON written when it was trained. */
export const BUNDLED = {
  id: 'bundled',
  label: 'Shakespeare · bundled',
  url: new URL('models/shakespeare.q8_0.gguf', import.meta.url).href,
  facts: new URL('models/shakespeare.json', import.meta.url).href,
  about: 'A tiny Llama trained on the works of Shakespeare, shipped with this page. It writes play dialogue; do not expect facts.',
};

const hub = (repo, file) => `https://huggingface.co/${repo}/resolve/main/${file}`;

export const CATALOGUE = [
  {
    id: 'gpt2-124m',
    label: 'GPT-2 124M · Q8_0',
    url: hub('QuantFactory/gpt2-GGUF', 'gpt2.Q8_0.gguf'),
    size: 178e6,
    about: 'OpenAI\'s 2019 GPT-2, the smallest: it continues text rather than chatting, with learned positions over a 1024-token context.',
  },
  {
    id: 'lfm2-350m',
    label: 'LFM2 350M · Q4_K_M',
    url: hub('LiquidAI/LFM2-350M-GGUF', 'LFM2-350M-Q4_K_M.gguf'),
    size: 229309376,
    about: 'Liquid AI\'s smallest LFM2: gated short convolutions in most layers, attention in a few.',
  },
  {
    id: 'smollm2-360m',
    label: 'SmolLM2 360M Instruct · Q4_K_M',
    url: hub('bartowski/SmolLM2-360M-Instruct-GGUF', 'SmolLM2-360M-Instruct-Q4_K_M.gguf'),
    size: 271e6,
    about: 'Hugging Face\'s small instruction model (Llama architecture).',
  },
  {
    id: 'gemma3-270m',
    label: 'Gemma 3 270M Instruct · Q8_0',
    url: hub('unsloth/gemma-3-270m-it-GGUF', 'gemma-3-270m-it-Q8_0.gguf'),
    size: 292e6,
    about: 'Google\'s smallest Gemma 3: most layers attend to a sliding window of 512 tokens, and its 262k-token vocabulary is half the download.',
  },
  {
    id: 'qwen3-0.6b',
    label: 'Qwen3 0.6B · Q4_K_M',
    url: hub('unsloth/Qwen3-0.6B-GGUF', 'Qwen3-0.6B-Q4_K_M.gguf'),
    size: 397e6,
    about: 'Alibaba\'s smallest Qwen3; it thinks aloud in <think> tags before answering.',
  },
  {
    id: 'qwen2.5-0.5b',
    label: 'Qwen2.5 0.5B Instruct · Q4_K_M',
    url: hub('Qwen/Qwen2.5-0.5B-Instruct-GGUF', 'qwen2.5-0.5b-instruct-q4_k_m.gguf'),
    size: 491e6,
    about: 'A small, capable multilingual chat model from Alibaba.',
  },
  {
    id: 'qwen3.5-0.8b',
    label: 'Qwen3.5 0.8B · Q4_K_M',
    url: hub('unsloth/Qwen3.5-0.8B-GGUF', 'Qwen3.5-0.8B-Q4_K_M.gguf'),
    size: 533e6,
    about: 'Alibaba\'s smallest Qwen3.5: Gated DeltaNet layers beside attention, and a 248k-token vocabulary.',
  },
  {
    id: 'gemma3-1b',
    label: 'Gemma 3 1B Instruct · Q4_K_M',
    url: hub('unsloth/gemma-3-1b-it-GGUF', 'gemma-3-1b-it-Q4_K_M.gguf'),
    size: 806e6,
    about: 'Google\'s 1B Gemma 3 for chat: five sliding-window layers to each global one, so its cache stays small at long contexts.',
  },
  {
    id: 'llama3.2-1b',
    label: 'Llama 3.2 1B Instruct · Q4_K_M',
    url: hub('bartowski/Llama-3.2-1B-Instruct-GGUF', 'Llama-3.2-1B-Instruct-Q4_K_M.gguf'),
    size: 808e6,
    about: 'Meta\'s 1B chat model: better answers, a longer download.',
  },
  {
    id: 'smollm3-3b',
    label: 'SmolLM3 3B · Q4_K_M',
    url: hub('unsloth/SmolLM3-3B-GGUF', 'SmolLM3-3B-Q4_K_M.gguf'),
    size: 1915306528,
    about: 'Hugging Face\'s 3B reasoning model (it thinks in <think> tags unless told /no_think); every fourth layer has no rope.',
  },
  {
    id: 'phi3.5-mini',
    label: 'Phi-3.5 mini Instruct · Q4_K_M',
    url: hub('bartowski/Phi-3.5-mini-instruct-GGUF', 'Phi-3.5-mini-instruct-Q4_K_M.gguf'),
    size: 2.39e9,
    about: 'Microsoft\'s 3.8B chat model (Phi-3 architecture, LongRoPE); the largest download here.',
  },
];
