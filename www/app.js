// The Hearth demo: load a GGUF model (bundled, from the Hub, any URL, or a local file), chat with
// it, and show how fast it runs. Plain ES modules, no build step: the page imports the
// hearth-llm package from ../pkg, so it works from any static host serving the repository root.
//
// The page's state is on <body data-state="idle|loading|ready|generating|error">.

import Hearth, { HearthError } from '../pkg/index.js';
import { BUNDLED, CATALOGUE } from './models.js';
import { errorText, modelFamilies } from './error-text.js';
import { ChatLog } from './chat-log.js';
import * as fmt from './format.js';

const $ = (id) => document.getElementById(id);
const ui = {
  pickForm: $('pick-form'), select: $('model-select'), about: $('model-about'),
  urlForm: $('url-form'), url: $('model-url'), file: $('model-file'), backend: $('backend'),
  architectures: $('architectures'),
  progress: $('progress'), progressBar: $('progress-bar'), progressText: $('progress-text'),
  cancelLoad: $('cancel-load'), modelStatus: $('model-status'), backendHint: $('backend-hint'),
  system: $('system'), temperature: $('temperature'), topP: $('top-p'), topK: $('top-k'),
  maxTokens: $('max-tokens'), seed: $('seed'), replyFormat: $('reply-format'),
  schemaField: $('schema-field'), schema: $('schema'),
  cache: $('cache'), cacheList: $('cache-list'),
  figBackend: $('fig-backend'), figPrompt: $('fig-prompt'), figGen: $('fig-gen'),
  figMemory: $('fig-memory'), figContext: $('fig-context'),
  modeNote: $('mode-note'), error: $('error'), errorText: $('error-text'), errorDetail: $('error-detail'),
  composer: $('composer'), prompt: $('prompt'), send: $('send'), stop: $('stop'), newChat: $('new-chat'),
};
const log = new ChatLog($('log'));

/** @type {Hearth | null} */
let engine = null;
/** Whether the engine is loading itself again after losing its GPU. */
let restoring = false;
let loadController = null;
let genController = null;
/** The conversation sent to the model (chat mode). */
let messages = [];

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating';
  ui.send.disabled = state !== 'ready';
  ui.stop.hidden = state !== 'generating';
  ui.newChat.disabled = busy || !engine;
  ui.progress.hidden = state !== 'loading';
}

// ---- Errors -------------------------------------------------------------------------------

function showError(err) {
  const e = HearthError.from(err);
  if (e.code === 'aborted') return;
  ui.error.dataset.code = e.code;
  ui.errorText.textContent = errorText(e);
  ui.errorDetail.textContent = e.message ? `Details: ${e.message}` : '';
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  delete ui.error.dataset.code;
  ui.errorText.textContent = '';
  ui.errorDetail.textContent = '';
}

// ---- Model choice --------------------------------------------------------------------------

function fillModelList() {
  const bundled = new Option(BUNDLED.label, BUNDLED.id);
  const hub = document.createElement('optgroup');
  hub.label = 'Download from the Hugging Face Hub';
  for (const m of CATALOGUE) hub.append(new Option(`${m.label} · ≈${fmt.bytes(m.size)}`, m.id));
  ui.select.replaceChildren(bundled, hub);
  describeChoice();
}

function chosenModel() {
  return ui.select.value === BUNDLED.id ? BUNDLED : CATALOGUE.find((m) => m.id === ui.select.value);
}

let bundledFacts = '';

function describeChoice() {
  const m = chosenModel();
  ui.about.textContent = m === BUNDLED
    ? `${m.about}${bundledFacts ? ` ${bundledFacts}` : ''}`
    : `${m.about} About ${fmt.bytes(m.size)} to download once; then it is cached.`;
}

/** The bundled model's training record, if it ships one, as a sentence. */
async function readBundledFacts() {
  try {
    const res = await fetch(BUNDLED.facts);
    if (!res.ok) return;
    const f = await res.json();
    const parts = [];
    if (Number.isFinite(f.params)) parts.push(`${fmt.count(f.params)} parameters`);
    if (Number.isFinite(f.steps)) {
      const time = Number.isFinite(f.seconds) ? ` in ${Math.max(1, Math.round(f.seconds / 60))} min` : '';
      parts.push(`trained for ${f.steps.toLocaleString('en')} steps${time}`);
    }
    if (Number.isFinite(f.val_loss)) parts.push(`validation loss ${f.val_loss.toFixed(2)}`);
    if (parts.length) {
      bundledFacts = `${parts.join(', ')}.`.replace(/^./, (c) => c.toUpperCase());
      describeChoice();
    }
  } catch {
    // No record: the description stands alone.
  }
}

// ---- Loading -------------------------------------------------------------------------------

async function cachedEntry(url) {
  try {
    return (await Hearth.cache.list()).find((e) => e.url === url) ?? null;
  } catch {
    return null;
  }
}

/** Loads `source` ({ label, url } or { label, file }) with the chosen backend. */
async function load(source) {
  genController?.abort();
  loadController?.abort();
  const controller = new AbortController();
  loadController = controller;
  engine?.dispose();
  engine = null;
  restoring = false;
  messages = [];
  log.clear();
  clearError();
  clearFigures();
  ui.modeNote.hidden = true;
  ui.modelStatus.textContent = '';
  delete ui.modelStatus.dataset.from;
  ui.backendHint.textContent = 'Applies when a model is (re)loaded.';
  setState('loading');

  const before = source.url ? await cachedEntry(source.url) : null;
  const fromCache = !!before?.complete;
  const reading = source.file ? 'Reading the file' : fromCache ? 'Reading from the download cache' : 'Downloading';
  showProgress({ phase: 'download', loaded: 0, total: 0 }, reading, source);
  const backend = ui.backend.value;
  const started = performance.now();
  let loaded;
  try {
    loaded = await Hearth.load(source.url ?? source.file, {
      backend,
      signal: controller.signal,
      onProgress: (p) => { if (controller === loadController) showProgress(p, reading, source); },
    });
  } catch (err) {
    if (controller !== loadController) return; // a newer load took over
    loadController = null;
    const e = HearthError.from(err);
    if (e.code === 'aborted') {
      ui.modelStatus.textContent = 'Loading cancelled. Choose a model to load.';
      setState('idle');
    } else {
      showError(e);
      ui.modelStatus.textContent = `${source.label} did not load.`;
      setState('error');
    }
    refreshCache();
    return;
  }
  if (controller !== loadController) {
    loaded.dispose();
    return;
  }
  loadController = null;
  engine = loaded;
  watchDevice(loaded, source);
  const ms = performance.now() - started;

  // Where the weights came from: a complete cache entry before, or no new bytes cached since
  // (the cache only grows by what the network brought).
  let from = 'file';
  if (source.url) {
    const after = await cachedEntry(source.url);
    if (engine !== loaded) return; // another load began meanwhile
    const reused = before?.cachedBytes ?? 0;
    if (fromCache || (reused > 0 && after?.cachedBytes === reused)) from = 'cache';
    else if (reused > 0) from = 'partial';
    else from = 'network';
  }
  const info = engine.info;
  const origin = {
    cache: 'from the download cache',
    partial: `resumed: ${fmt.bytes(before?.cachedBytes)} were cached`,
    network: 'downloaded',
    file: 'read from your device',
  }[from];
  ui.modelStatus.dataset.from = from;
  ui.modelStatus.replaceChildren(
    strong(info.name || source.label),
    ` · ${info.architecture} · ${info.quantization} · ${fmt.count(info.parameters)} parameters · ${fmt.bytes(info.weightBytes)} of weights. `
    + `Loaded in ${fmt.seconds(ms)}, ${origin}.`,
  );
  ui.modeNote.hidden = info.chatTemplate;
  document.body.dataset.mode = info.chatTemplate ? 'chat' : 'raw';
  ui.prompt.placeholder = info.chatTemplate
    ? 'Write a message. Enter sends; Shift+Enter starts a new line.'
    : 'Write the beginning of a text for the model to continue. Enter sends.';
  showFigures();
  setState('ready');
  refreshCache();
}

/** Shows the engine loading itself again when its GPU is lost; the conversation is kept. */
function watchDevice(eng, source) {
  const what = 'The GPU was lost: loading the model again';
  const on = (type, f) => eng.addEventListener(type, (e) => { if (engine === eng) f(e.detail); });
  on('devicelost', () => {
    restoring = true;
    showProgress({ phase: 'download', loaded: 0, total: 0 }, what, source);
    setState('loading');
  });
  on('progress', (p) => showProgress(p, what, source));
  on('restored', () => {
    restoring = false;
    showFigures();
    setState('ready');
  });
  on('restorefailed', ({ error }) => {
    restoring = false;
    showError(error);
    setState('error');
  });
}

function strong(text) {
  const s = document.createElement('strong');
  s.textContent = text;
  return s;
}

function showProgress({ phase, loaded, total }, reading, source) {
  ui.progress.dataset.phase = phase;
  ui.progressBar.max = total || 1;
  ui.progressBar.value = total ? loaded : 0;
  const pct = total ? ` (${Math.floor((100 * loaded) / total)}%)` : '';
  const what = phase === 'download' ? reading : 'Preparing the weights';
  ui.progressText.textContent = total
    ? `${what}: ${fmt.bytes(loaded)} of ${fmt.bytes(total)}${pct}`
    : `${what}: ${source.label}…`;
}

// ---- Figures -------------------------------------------------------------------------------

function clearFigures() {
  for (const dd of [ui.figBackend, ui.figPrompt, ui.figGen, ui.figMemory, ui.figContext]) {
    dd.textContent = '—';
    dd.removeAttribute('title');
  }
}

/** Backend, memory and context, read from the engine (refreshed after each call). */
function showFigures() {
  if (!engine) return;
  const info = engine.info;
  if (info.backend === 'webgpu') {
    // The adapter's description; some drivers leave the name empty and give only details.
    const adapter = (info.adapter ?? '').trim().replace(/^\((.*)\)$/, '$1');
    figure(ui.figBackend, 'WebGPU', adapter);
    ui.figBackend.title = `${adapter || 'WebGPU'}; optional features in use: ${info.features.join(', ') || 'none'}`;
  } else {
    const why = info.fallbackReason ? `WebGPU not used: ${info.fallbackReason}` : 'chosen in the settings';
    figure(ui.figBackend, info.workers > 1 ? `CPU, ${info.workers} workers` : 'CPU', why);
    ui.figBackend.title = why;
  }
  ui.figMemory.textContent = fmt.bytes(info.memoryHeld);
  ui.figContext.textContent = `${info.cachedTokens} / ${info.cachePositions}`;
  ui.figContext.title = `${info.cachedTokens} of the ${info.cachePositions} tokens the context holds are in use`;
}

/** A figure with a detail line beneath it. */
function figure(dd, main, detail) {
  const small = document.createElement('small');
  small.textContent = detail ?? '';
  dd.replaceChildren(main, small);
}

// ---- Generation ----------------------------------------------------------------------------

function number(input, fallback, { min = -Infinity, max = Infinity, integer = false } = {}) {
  const v = input.valueAsNumber;
  if (!Number.isFinite(v)) return fallback;
  const n = integer ? Math.round(v) : v;
  return Math.min(max, Math.max(min, n));
}

function sampling() {
  const p = {
    temperature: number(ui.temperature, 0.8, { min: 0, max: 2 }),
    top_p: number(ui.topP, 0.95, { min: 0, max: 1 }),
    top_k: number(ui.topK, 40, { min: 0, integer: true }),
    max_tokens: number(ui.maxTokens, 256, { min: 1, integer: true }),
  };
  const seed = number(ui.seed, null, { min: 0, max: 2 ** 32 - 1, integer: true });
  if (seed !== null) p.seed = seed;
  const format = ui.replyFormat.value;
  if (format === 'json_object') p.response_format = { type: 'json_object' };
  if (format === 'json_schema') {
    let schema;
    try {
      schema = JSON.parse(ui.schema.value);
    } catch (e) {
      throw new HearthError('bad_request', `the JSON schema is not JSON: ${e.message}`);
    }
    p.response_format = { type: 'json_schema', json_schema: { name: 'reply', schema, strict: true } };
  }
  return p;
}

async function send(text) {
  if (!engine || document.body.dataset.state !== 'ready') return;
  clearError();
  let settings;
  try {
    settings = sampling();
  } catch (err) {
    // Nothing was sent: the text stays to send again once the settings are mended.
    ui.prompt.value = text;
    showError(HearthError.from(err));
    return;
  }
  // A load may replace the engine and the conversation while this runs: keep to these.
  const eng = engine;
  const convo = messages;
  const chat = eng.info.chatTemplate;
  const user = log.add('user', text);
  const reply = log.add(chat ? 'assistant' : 'continuation');
  reply.busy(true);
  if (chat) convo.push({ role: 'user', content: text });
  const controller = new AbortController();
  genController = controller;
  setState('generating');
  ui.figPrompt.textContent = '…';
  ui.figGen.textContent = '…';

  const params = { ...settings, signal: controller.signal };
  const t0 = performance.now();
  let tFirst = null;
  let tokens = 0;
  let usage = null;
  let finish = null;
  const took = (piece) => {
    const now = performance.now();
    if (tFirst === null) tFirst = now;
    tokens++;
    if (piece) reply.append(piece);
    if (tokens > 1) ui.figGen.textContent = fmt.rate(tokens - 1, now - tFirst);
  };
  let failure = null;
  try {
    if (chat) {
      const system = ui.system.value.trim();
      const stream = await eng.chat.completions.create({
        ...params,
        messages: system ? [{ role: 'system', content: system }, ...convo] : convo,
        stream: true,
      });
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        if (choice?.delta?.content) took(choice.delta.content);
        if (choice?.finish_reason) finish = choice.finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
    } else {
      // No chat template: continue the text as written.
      const it = eng.generate(text, params)[Symbol.asyncIterator]();
      for (;;) {
        const { value, done } = await it.next();
        if (done) {
          if (value) ({ usage, finishReason: finish } = value);
          break;
        }
        took(value.text);
      }
    }
  } catch (err) {
    failure = HearthError.from(err);
  }
  const tEnd = performance.now();
  if (genController === controller) genController = null;
  reply.busy(false);
  if (engine !== eng) return; // another model took over

  const stopped = failure?.code === 'aborted';
  if (failure && !stopped) showError(failure);
  if (!reply.text && (failure || stopped)) {
    // Nothing came: take the turn back, and the text with it, so it can be sent again.
    reply.remove();
    user.remove();
    if (chat) convo.pop();
    if (!ui.prompt.value) ui.prompt.value = text;
  } else {
    if (chat) convo.push({ role: 'assistant', content: reply.text });
    if (stopped) reply.note('stopped');
    else if (finish === 'length') {
      const info = eng.info;
      const full = info.cachedTokens + 1 >= info.cachePositions;
      reply.note(full ? 'the context is full: start a New chat' : 'reached the token limit');
    }
  }

  // Prompt speed: the prompt tokens the model ran (not those reused from the last turn) over
  // the time to the first token.
  if (usage && tFirst !== null) {
    const ran = usage.prompt_tokens - usage.prompt_tokens_details.cached_tokens;
    ui.figPrompt.textContent = fmt.rate(ran, tFirst - t0);
    ui.figPrompt.title = `${ran} tokens in ${fmt.seconds(tFirst - t0)}; ${usage.prompt_tokens_details.cached_tokens} reused from the previous turn`;
    const generated = usage.completion_tokens;
    ui.figGen.textContent = fmt.rate(generated - 1, tEnd - tFirst);
    ui.figGen.title = `${generated} tokens, the last ${generated - 1} in ${fmt.seconds(tEnd - tFirst)}`;
  } else {
    ui.figPrompt.textContent = '—';
    ui.figGen.textContent = fmt.rate(tokens - 1, tEnd - (tFirst ?? tEnd));
  }
  showFigures();
  setState(restoring ? 'loading' : 'ready');
}

function stop() {
  genController?.abort();
}

async function newChat() {
  if (!engine || document.body.dataset.state !== 'ready') return;
  messages = [];
  log.clear();
  clearError();
  try {
    await engine.reset();
  } catch (err) {
    showError(err);
  }
  showFigures();
  ui.figPrompt.textContent = '—';
  ui.figGen.textContent = '—';
  ui.prompt.focus();
}

// ---- Download cache ------------------------------------------------------------------------

async function refreshCache() {
  if (!ui.cache.open) return;
  let entries;
  try {
    entries = await Hearth.cache.list();
  } catch (err) {
    ui.cacheList.replaceChildren(item(`The cache cannot be read: ${HearthError.from(err).message}`));
    return;
  }
  if (!entries.length) {
    ui.cacheList.replaceChildren(item('Nothing is cached.'));
    return;
  }
  entries.sort((a, b) => a.url.localeCompare(b.url));
  ui.cacheList.replaceChildren(...entries.map((e) => {
    const name = fmt.fileName(e.url);
    const li = item('');
    li.dataset.url = e.url;
    const label = document.createElement('span');
    label.className = 'name';
    label.title = e.url;
    label.textContent = name;
    const size = document.createElement('span');
    size.className = 'hint';
    size.textContent = e.complete ? fmt.bytes(e.cachedBytes) : `${fmt.bytes(e.cachedBytes)} of ${fmt.bytes(e.size)}`;
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'secondary small';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete ${name} from the cache`);
    del.addEventListener('click', async () => {
      del.disabled = true;
      try {
        await Hearth.cache.delete(e.url);
      } catch (err) {
        showError(err);
      }
      refreshCache();
    });
    li.append(label, size, del);
    return li;
  }));
}

function item(text) {
  const li = document.createElement('li');
  li.textContent = text;
  return li;
}

// ---- Wiring --------------------------------------------------------------------------------

ui.select.addEventListener('change', describeChoice);
ui.replyFormat.addEventListener('change', () => {
  ui.schemaField.hidden = ui.replyFormat.value !== 'json_schema';
});
ui.pickForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const m = chosenModel();
  load({ label: m.label, url: m.url });
});
/** Loads a typed (or linked) address, relative ones against this page. */
function loadAddress(text) {
  let url;
  try {
    url = new URL(text.trim(), location.href).href;
  } catch {
    showError(new HearthError('bad_request', `${text} is not a URL`));
    return;
  }
  load({ label: fmt.fileName(url), url });
}
ui.urlForm.addEventListener('submit', (e) => {
  e.preventDefault();
  loadAddress(ui.url.value);
});
ui.file.addEventListener('change', () => {
  const file = ui.file.files?.[0];
  if (file) load({ label: file.name, file });
  ui.file.value = '';
});
ui.cancelLoad.addEventListener('click', () => loadController?.abort());
ui.backend.addEventListener('change', () => {
  ui.backendHint.textContent = engine ? 'Applies when a model is (re)loaded: press Load.' : 'Applies when a model is (re)loaded.';
});
ui.cache.addEventListener('toggle', refreshCache);

ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.prompt.value;
  if (!text.trim() || document.body.dataset.state !== 'ready') return;
  ui.prompt.value = '';
  send(text);
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    ui.composer.requestSubmit();
  } else if (e.key === 'Escape' && document.body.dataset.state === 'generating') {
    stop();
  }
});
ui.stop.addEventListener('click', () => {
  stop();
  ui.prompt.focus();
});
ui.newChat.addEventListener('click', newChat);

// A .gguf file dropped anywhere on the page loads.
let dragDepth = 0;
const carriesFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
document.addEventListener('dragenter', (e) => {
  if (!carriesFiles(e)) return;
  dragDepth++;
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', (e) => {
  if (!carriesFiles(e)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) document.body.classList.remove('dragging');
});
document.addEventListener('dragover', (e) => {
  if (carriesFiles(e)) e.preventDefault();
});
document.addEventListener('drop', (e) => {
  dragDepth = 0;
  document.body.classList.remove('dragging');
  const file = e.dataTransfer?.files?.[0];
  if (!file) return;
  e.preventDefault();
  load({ label: file.name, file });
});

/** Says under the URL field which models load, as the engine itself lists them. */
async function showArchitectures() {
  try {
    const supported = await Hearth.architectures();
    ui.architectures.textContent = `Hearth runs ${modelFamilies(supported)} models.`;
    ui.architectures.hidden = false;
  } catch {
    // Only a hint: the page works without it.
  }
}

fillModelList();
readBundledFacts();
showArchitectures();
// `?model=<url>` loads that file instead of the bundled one (a link to share); `?backend=`
// (auto, webgpu or cpu) chooses where it runs.
const query = new URLSearchParams(location.search);
const chosen = query.get('backend');
if ([...ui.backend.options].some((o) => o.value === chosen)) ui.backend.value = chosen;
const linked = query.get('model');
if (linked) {
  ui.url.value = linked;
  loadAddress(linked);
} else {
  load({ label: BUNDLED.label, url: BUNDLED.url });
}
