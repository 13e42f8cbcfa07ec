// The side panel: picks a model, takes text (from the context menu, the active tab's selection or
// the text box) and streams a rewrite, summary or continuation. The model runs in the package's
// Worker on WebGPU when the panel has it, else on the CPU; the text never leaves this page.

import { Hearth } from './hearth/index.js';

/** The model shipped inside the extension: fetched from chrome-extension://, never the network. */
const BUNDLED = new URL('models/shakespeare.q8_0.gguf', location.href).href;
const SETTINGS = 'hearth-settings';

// Short: every prompt token costs a forward pass before the first word of the answer.
const INSTRUCTIONS = {
  rewrite: 'Rewrite this text clearly, keeping its meaning. Reply with the new text only:',
  summarise: 'Summarise this text in a few sentences. Reply with the summary only:',
  continue: 'Continue this text in the same style. Reply with the continuation only:',
};

/** Prompts for a base model (no chat template): text the model can simply go on writing. */
const BASE_PROMPTS = {
  rewrite: (text) => `Original:\n${text}\n\nThe same, rewritten more clearly:\n`,
  summarise: (text) => `${text}\n\nIn short:`,
  continue: (text) => text,
};
/** Where a base model's answer ends: it tends to start a new section of the same pattern. */
const BASE_STOPS = { rewrite: ['\n\nOriginal:'], summarise: ['\n\n'], continue: [] };

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'), modelInfo: $('model-info'), backend: $('backend'), runOn: $('run-on'), source: $('source'), load: $('load'), url: $('url'),
  cached: $('cached'), file: $('file'), progress: $('progress'), cacheList: $('cache-list'),
  input: $('input'), useSelection: $('use-selection'), task: $('task'), maxTokens: $('max-tokens'),
  temperature: $('temperature'),
  run: $('run'), stop: $('stop'), copy: $('copy'), output: $('output'),
};

let engine = null;
let loading = null; // AbortController of the load in progress
let running = null; // AbortController of the generation in progress
let queued = null; // a task that arrived while the model was loading

function settings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS)) ?? {};
  } catch {
    return {};
  }
}

function saveSettings(change) {
  localStorage.setItem(SETTINGS, JSON.stringify({ ...settings(), ...change }));
}

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'running';
  ui.run.disabled = !engine || busy;
  ui.stop.disabled = !busy;
  ui.load.disabled = state === 'loading';
}

function say(text, { error = false } = {}) {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
}

const mib = (n) => `${(n / 2 ** 20).toFixed(n < 10 * 2 ** 20 ? 1 : 0)} MiB`;

/** A message for the user, with what to do where there is something to do. */
function explain(e) {
  const hints = {
    cors: 'The server does not let extensions download from it. Download the file and choose "From a file…".',
    network: 'Check the connection, or choose "From a file…".',
    not_found: 'Check the URL.',
    not_gguf: 'Hearth needs a .gguf model file.',
    too_large: 'Choose a smaller (or more quantised) model.',
    out_of_memory: 'Choose a smaller (or more quantised) model.',
    quota_exceeded: 'Delete downloaded models below to free space.',
    context_full: 'Select less text or lower the length.',
  };
  // The error carries the list of what runs, from the engine: no copy to fall behind.
  const families = e?.supported?.map((a) => a.models);
  const template = e?.code === 'bad_request' && /^the chat template/.test(e.message ?? '');
  const hint = template
    ? 'This model\'s chat template is broken or hostile: choose another model.'
    : e?.code === 'unsupported_architecture' && families?.length
      ? `Hearth runs ${new Intl.ListFormat('en', { type: 'conjunction' }).format(families)} models.`
      : hints[e?.code];
  return `${e?.message ?? e}${hint ? ` ${hint}` : ''}`;
}

function showBackend(info) {
  const gpu = info.backend === 'webgpu';
  ui.backend.hidden = false;
  ui.backend.dataset.backend = info.backend;
  ui.backend.textContent = gpu ? 'WebGPU' : 'CPU';
  ui.backend.title = gpu
    ? `Runs on the GPU: ${info.adapter?.trim() || 'WebGPU adapter'}; features: ${info.features.join(', ') || 'none'}`
    : `Runs on the CPU (WebAssembly); WebGPU not used: ${info.fallbackReason ?? 'CPU chosen'}`;
}

/** Loads `source` (a URL or a File), replacing the model. */
async function load(source, label, { cache }) {
  loading?.abort();
  running?.abort();
  engine?.dispose();
  engine = null;
  const controller = new AbortController();
  loading = controller;
  setState('loading');
  say(`Loading ${label}…`);
  ui.backend.hidden = true;
  ui.modelInfo.textContent = '';
  ui.progress.hidden = false;
  ui.progress.value = 0;
  try {
    const loaded = await Hearth.load(source, {
      backend: ui.runOn.value,
      cache,
      signal: controller.signal,
      onProgress: ({ phase, loaded: done, total }) => {
        // Download fills the first half of the bar, building the model the second.
        ui.progress.value = (phase === 'download' ? 0 : 0.5) + (total ? done / total / 2 : 0);
        say(`${phase === 'download' ? 'Downloading' : 'Preparing'} ${label}: ${mib(done)} of ${mib(total)}`);
      },
    });
    if (loading !== controller) {
      loaded.dispose();
      return;
    }
    engine = loaded;
    const { info } = engine;
    const params = info.parameters >= 1e9 ? `${(info.parameters / 1e9).toFixed(1)}B` : `${(info.parameters / 1e6).toFixed(1)}M`;
    ui.modelInfo.textContent = `${label}: ${info.name ?? info.architecture}, ${params} parameters, ${info.quantization}, `
      + `${info.cachePositions} tokens of context${info.chatTemplate ? '' : ' (base model)'}`;
    say(`Ready on the ${info.backend === 'webgpu' ? 'GPU (WebGPU)' : 'CPU'}.`);
    showBackend(info);
    setState('ready');
  } catch (e) {
    if (loading !== controller) return;
    say(controller.signal.aborted ? 'Loading stopped.' : `Could not load ${label}. ${explain(e)}`, { error: !controller.signal.aborted });
    setState('error');
  } finally {
    if (loading === controller) loading = null;
    ui.progress.hidden = true;
    refreshCache();
  }
  if (engine && queued) {
    const next = queued;
    queued = null;
    run(next);
  }
}

function loadChosen() {
  const kind = ui.source.value;
  if (kind === 'bundled') {
    saveSettings({ source: 'bundled' });
    // Already inside the extension: an OPFS copy would only duplicate it.
    return load(BUNDLED, 'the bundled model', { cache: false });
  }
  if (kind === 'url') {
    let url;
    try {
      url = new URL(ui.url.value.trim());
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('not http');
    } catch {
      say('Type the http(s) URL of a .gguf file.', { error: true });
      ui.url.focus();
      return undefined;
    }
    saveSettings({ source: 'url', url: url.href });
    return load(url.href, new URL(url).pathname.split('/').pop() || url.host, { cache: true });
  }
  const file = ui.file.files[0];
  if (!file) {
    ui.file.click();
    return undefined;
  }
  return load(file, file.name, { cache: false });
}

/** Cuts `text` so that the prompt and the answer fit the model's cache; tells the user if so. */
async function fit(task, text, maxTokens) {
  const room = engine.info.cachePositions;
  // The instruction, the chat template's markers and the BOS token: an estimate from above.
  const overhead = engine.info.chatTemplate ? (await engine.tokenize(INSTRUCTIONS[task])).length + 48 : 24;
  const answer = Math.min(maxTokens, Math.floor(room / 2));
  const budget = room - answer - overhead;
  const ids = await engine.tokenize(text, { addSpecial: false });
  if (ids.length <= budget) return { text, maxTokens: answer, cut: false };
  // A continuation needs the end of the text; a rewrite or summary starts at its beginning.
  const kept = task === 'continue' ? ids.slice(ids.length - budget) : ids.slice(0, budget);
  return { text: await engine.detokenize(kept, { skipSpecial: true }), maxTokens: answer, cut: true };
}

/** Streams `task` over `text` into the result box. */
async function run({ task, text }) {
  if (!text.trim()) {
    say('There is no text: select some on the page or type it in the box.', { error: true });
    return;
  }
  if (!engine) {
    queued = { task, text };
    if (!loading) loadChosen();
    return;
  }
  running?.abort();
  const controller = new AbortController();
  running = controller;
  setState('running');
  ui.output.textContent = '';
  ui.copy.disabled = true;
  const label = { rewrite: 'Rewriting', summarise: 'Summarising', continue: 'Continuing' }[task];
  let finish = null;
  let note = '';
  try {
    const fitted = await fit(task, text, Number(ui.maxTokens.value) || 200);
    const temperature = Math.max(0, Number(ui.temperature.value) || 0);
    if (fitted.cut) note = ` Only part of the text fits this model (${engine.info.cachePositions} tokens); the rest was left out.`;
    say(`${label}…${note}`);
    const append = (piece) => {
      if (!piece || running !== controller) return;
      ui.output.append(piece);
      ui.copy.disabled = false;
    };
    if (engine.info.chatTemplate) {
      const stream = await engine.chat.completions.create({
        messages: [{ role: 'user', content: `${INSTRUCTIONS[task]}\n\n${fitted.text}` }],
        stream: true, max_tokens: fitted.maxTokens, temperature, top_p: 0.95, signal: controller.signal,
      });
      for await (const chunk of stream) {
        append(chunk.choices[0]?.delta?.content);
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
    } else {
      const tokens = engine.generate(BASE_PROMPTS[task](fitted.text), {
        max_tokens: fitted.maxTokens, temperature, top_p: 0.95, repetition_penalty: 1.1,
        stop: BASE_STOPS[task], signal: controller.signal,
      });
      const it = tokens[Symbol.asyncIterator]();
      for (;;) {
        const { value, done } = await it.next();
        if (done) {
          finish = value?.finishReason ?? null;
          break;
        }
        append(value.text);
      }
    }
    if (running === controller) say(`${finish === 'length' ? 'Stopped at the length limit.' : 'Done.'}${note}`);
  } catch (e) {
    if (running !== controller) return;
    if (e?.code === 'aborted') say('Stopped.');
    else say(`Generation failed. ${explain(e)}`, { error: true });
  } finally {
    if (running === controller) {
      running = null;
      setState(engine ? 'ready' : 'error');
    }
  }
}

/** Text selected in the active tab. Runs in the page, through scripting + activeTab. */
function readSelection() {
  const el = document.activeElement;
  if (el && (el instanceof HTMLTextAreaElement || el instanceof HTMLInputElement) && el.selectionEnd > el.selectionStart) {
    return el.value.slice(el.selectionStart, el.selectionEnd);
  }
  return String(window.getSelection() ?? '');
}

async function usePageSelection() {
  try {
    const [tab] = await chrome.tabs.query({ active: true, lastFocusedWindow: true });
    if (!tab) throw new Error('there is no active tab');
    const [result] = await chrome.scripting.executeScript({ target: { tabId: tab.id }, func: readSelection });
    const text = result?.result ?? '';
    if (!text.trim()) {
      say('Nothing is selected on the page.', { error: true });
      return;
    }
    ui.input.value = text;
    say('Took the page selection.');
  } catch (e) {
    // Without a grant (activeTab) Chrome refuses; the grant comes from the user's own gesture.
    say(`Hearth cannot read this tab (${e.message}). Click the Hearth toolbar button or right-click the selection first, then try again, or paste the text.`, { error: true });
  }
}

async function refreshCache() {
  let entries = [];
  try {
    entries = await Hearth.cache.list();
  } catch {
    // No OPFS here: nothing is cached.
  }
  ui.cached.replaceChildren(...entries.filter((e) => e.complete).map((e) => new Option(e.url)));
  ui.cacheList.replaceChildren(...entries.map((entry) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = `${entry.url} (${mib(entry.cachedBytes)}${entry.complete ? '' : ', partial'})`;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = 'Delete';
    remove.addEventListener('click', async () => {
      await Hearth.cache.delete(entry.url);
      refreshCache();
    });
    li.append(name, remove);
    return li;
  }));
  if (!entries.length) {
    const li = document.createElement('li');
    li.textContent = 'None.';
    ui.cacheList.replaceChildren(li);
  }
}

/** A selection sent by the context menu: fill in the text and task, and start. */
function takeSelection(selection) {
  if (!selection || typeof selection.text !== 'string' || !INSTRUCTIONS[selection.task]) return false;
  ui.input.value = selection.text;
  ui.task.value = selection.task;
  saveSettings({ task: selection.task });
  run({ task: selection.task, text: selection.text });
  return true;
}

function showSourceFields() {
  ui.url.hidden = ui.source.value !== 'url';
  ui.file.hidden = ui.source.value !== 'file';
}

function start() {
  const saved = settings();
  if (saved.url) ui.url.value = saved.url;
  if (INSTRUCTIONS[saved.task]) ui.task.value = saved.task;
  if (Number(saved.maxTokens) > 0) ui.maxTokens.value = saved.maxTokens;
  if ([...ui.runOn.options].some((o) => o.value === saved.backend)) ui.runOn.value = saved.backend;
  if (Number.isFinite(saved.temperature) && saved.temperature >= 0) ui.temperature.value = saved.temperature;
  ui.source.value = saved.source === 'url' && saved.url ? 'url' : 'bundled';
  showSourceFields();

  ui.source.addEventListener('change', () => {
    showSourceFields();
    if (ui.source.value === 'bundled') loadChosen();
    else if (ui.source.value === 'url') ui.url.focus();
    else ui.file.click();
  });
  ui.url.addEventListener('keydown', (e) => { if (e.key === 'Enter') loadChosen(); });
  ui.file.addEventListener('change', () => { if (ui.file.files[0]) loadChosen(); });
  ui.load.addEventListener('click', () => loadChosen());
  ui.task.addEventListener('change', () => saveSettings({ task: ui.task.value }));
  ui.runOn.addEventListener('change', () => saveSettings({ backend: ui.runOn.value }));
  ui.maxTokens.addEventListener('input', () => saveSettings({ maxTokens: Number(ui.maxTokens.value) }));
  ui.temperature.addEventListener('input', () => saveSettings({ temperature: Number(ui.temperature.value) }));
  ui.run.addEventListener('click', () => run({ task: ui.task.value, text: ui.input.value }));
  ui.stop.addEventListener('click', () => { running?.abort(); loading?.abort(); });
  ui.copy.addEventListener('click', () => navigator.clipboard.writeText(ui.output.textContent));
  ui.useSelection.addEventListener('click', usePageSelection);

  chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
    if (message?.type !== 'hearth:selection' || sender.id !== chrome.runtime.id) return false;
    sendResponse({ taken: takeSelection(message) });
    return false;
  });

  setState('idle');
  refreshCache().then(async () => {
    if (engine || loading) return undefined; // a menu selection started a load already
    // Reopen the last model without asking only when that needs no download: the bundled one,
    // or a URL whose bytes are all cached.
    const cached = [...ui.cached.options].some((o) => o.value === ui.url.value);
    if (ui.source.value === 'url' && !cached) {
      say('Press Load to download the model from the URL.');
      return undefined;
    }
    return loadChosen();
  });
  // A selection the context menu sent while this panel was opening.
  chrome.runtime.sendMessage({ type: 'hearth:take-selection' }).then(takeSelection, () => {});
}

start();
