//! The browser runtime behind the `pkg/` npm package. The JS side fetches bytes (ranges,
//! caching, resuming) and drives the decode loop one token per call, so it can stream and
//! abort between tokens; this crate turns those bytes into a model and runs it:
//!
//! 1. [`Loader::header`] parses each file's GGUF header from a growing prefix;
//! 2. [`Loader::plan`] checks the model (architecture, quantization, tokenizer) before any
//!    weight is fetched and names the byte ranges to fetch;
//! 3. on the CPU, [`Loader::build_cpu`] says which shard of the matrices to keep (all of them,
//!    or one worker's part: [`shards`]), [`Loader::fits_cpu`] checks the memory,
//!    [`Loader::put`] takes the bytes as they stream in, each tensor taken into the weights as
//!    soon as it is complete, and [`Loader::load_cpu`] builds an [`Engine`] (or, in another
//!    worker, [`Loader::into_shard`] a [`CpuShard`] that answers it);
//! 4. on WebGPU, [`Loader::load_gpu`] makes the model's buffers first (refusing a model the
//!    device cannot hold), then pulls the bytes itself and writes each tensor to the GPU as soon
//!    as it is complete, so wasm memory never holds more than the tensors in flight.

mod backend;
mod error;
mod request;
mod session;
mod shards;
mod source;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use hearth_core::chat::ChatTemplate;
use hearth_core::gguf::{Gguf, GgufError, GgufFile};
use hearth_core::model::cpu::{RING_SLACK, SNAPSHOTS};
use hearth_core::model::{CpuModel, ModelSpec, Shard, TensorId, Weights, WeightsBuilder};
use hearth_core::quant::GgmlType;
use hearth_core::tokenizer::Tokenizer;
use hearth_gpu::GpuModel;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

pub use backend::open_checked_gpu;
pub use error::{architectures, Architecture, WebError};
pub use hearth_gpu::Backend;
pub use request::{ChatMessage, GenerateRequest};
pub use session::Session;
pub use source::TensorChunks;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The architectures Hearth runs, as `[{ name, models }]`: what a page can offer or explain
/// without loading a model.
#[wasm_bindgen(js_name = architectures)]
pub fn architectures_js() -> Result<JsValue, JsValue> {
    to_js(&architectures())
}

/// Tensors closer than this in a file are fetched with one request.
const MERGE_GAP: u64 = 64 << 10;

/// What a wasm32 instance can address, less room for everything but the weights and cache.
const WASM_LIMIT: u64 = (4 << 30) - (256 << 20);

fn js_err(e: impl Into<WebError>) -> JsValue {
    e.into().into()
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_err(WebError::Internal(e.to_string())))
}

/// Facts about a model, known from its header alone.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub architecture: String,
    pub name: Option<String>,
    /// The most common type among the weight matrices ("Q4_K", "F16").
    pub quantization: String,
    pub parameters: f64,
    pub weight_bytes: f64,
    pub layers: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    /// Positions the KV cache holds (the requested context, at most the model's).
    pub cache_positions: usize,
    /// Wasm memory the weights and a full CPU KV cache take.
    pub memory_needed: f64,
    pub chat_template: bool,
}

/// The model checked and the byte ranges of its tensors to fetch.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Plan<'a> {
    info: &'a ModelInfo,
    /// `[file, start, end]` triples, in file order.
    fetch: Vec<[f64; 3]>,
}

/// Model-level state shared by [`Loader`] and [`Engine`].
struct Prepared {
    file: GgufFile<TensorChunks>,
    spec: ModelSpec,
    /// None in a worker that only holds a shard ([`Loader::plan_shard`]).
    tokenizer: Option<Tokenizer>,
    info: ModelInfo,
}

/// CPU weights being built as their tensors arrive.
struct Building {
    builder: WeightsBuilder,
    ids: HashMap<String, TensorId>,
    shard: Shard,
    /// The tensors whose source keeps this shard's bytes only.
    cut: HashSet<String>,
}

#[wasm_bindgen]
pub struct Loader {
    headers: Vec<Option<Gguf>>,
    /// Metadata keys left out of the headers.
    skip: &'static [&'static str],
    prepared: Option<Prepared>,
    building: Option<Building>,
}

/// A tokenizer's vocabulary: megabytes once parsed, which nothing reads but the tokenizer.
const VOCABULARY: [&str; 4] = [
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
];

#[wasm_bindgen]
impl Loader {
    /// A loader for a model made of `files` GGUF files (more than one for a split model).
    #[wasm_bindgen(constructor)]
    pub fn new(files: usize) -> Loader {
        Loader {
            headers: (0..files.max(1)).map(|_| None).collect(),
            skip: &[],
            prepared: None,
            building: None,
        }
    }

    /// A loader for a worker that holds a shard of the CPU model's matrices (see
    /// [`Loader::plan_shard`]): the headers' vocabulary is walked over, never held.
    #[wasm_bindgen(js_name = forShard)]
    pub fn for_shard(files: usize) -> Loader {
        Loader {
            skip: &VOCABULARY,
            ..Loader::new(files)
        }
    }

    /// Parses file `file`'s header from its first bytes. Returns 0 once the header is read,
    /// otherwise how long a prefix to fetch next.
    pub fn header(&mut self, file: usize, prefix: &[u8], file_len: f64) -> Result<f64, JsValue> {
        let len = file_len as u64;
        let slot = self
            .headers
            .get_mut(file)
            .ok_or_else(|| js_err(WebError::BadRequest(format!("no file {file}"))))?;
        match Gguf::parse_skipping(prefix, len, self.skip) {
            Ok(h) => {
                *slot = Some(h);
                Ok(0.0)
            }
            Err(GgufError::NeedMore { .. }) if (prefix.len() as u64) < len => {
                Ok(((prefix.len() as u64).max(1 << 16) * 4).min(len) as f64)
            }
            // Too short to hold even the magic: not a model at all.
            Err(GgufError::NeedMore { .. }) if prefix.len() < 8 => Err(js_err(WebError::NotGguf(
                format!("a file of {len} bytes is not a GGUF file"),
            ))),
            Err(GgufError::NeedMore { .. }) => Err(js_err(WebError::InvalidModel(format!(
                "the file ends inside its GGUF header ({len} bytes)"
            )))),
            Err(e) => Err(js_err(e)),
        }
    }

    /// Checks the model before any weight is fetched and plans the fetches; `context_length`
    /// is the number of positions to hold (0: the model's own, up to 4096).
    pub fn plan(&mut self, context_length: usize) -> Result<JsValue, JsValue> {
        self.prepare(context_length, true)
    }

    /// As [`Loader::plan`] for a worker that holds a shard of the CPU model's matrices and
    /// nothing else: no tokenizer.
    #[wasm_bindgen(js_name = planShard)]
    pub fn plan_shard(&mut self, context_length: usize) -> Result<(), JsValue> {
        self.prepare(context_length, false).map(drop)
    }

    /// Keeps shard `index` of `count` of the matrices for the CPU (`0, 1`: all of them), each
    /// tensor taken in as soon as its bytes are all in.
    #[wasm_bindgen(js_name = buildCpu)]
    pub fn build_cpu(&mut self, index: usize, count: usize) -> Result<(), JsValue> {
        if index >= count {
            return Err(js_err(WebError::BadRequest(format!(
                "no shard {index} of {count}"
            ))));
        }
        let shard = Shard { index, count };
        let p = self.prepared()?;
        let builder = WeightsBuilder::new(&p.spec, shard);
        let ids: HashMap<String, TensorId> = builder.names().into_iter().collect();
        let mut cut = HashSet::new();
        for (name, &id) in &ids {
            let kept = p
                .file
                .header
                .tensor(name)
                .and_then(|t| builder.kept_bytes(id, t));
            if kept.is_some_and(|ranges| p.file.source().keep(name, ranges)) {
                cut.insert(name.clone());
            }
        }
        self.building = Some(Building {
            builder,
            ids,
            shard,
            cut,
        });
        self.take_complete();
        Ok(())
    }

    /// Refuses (`too_large`) a model whose weights (this shard's part of them) and KV cache do
    /// not fit in wasm memory, as the CPU backend needs them to.
    #[wasm_bindgen(js_name = fitsCpu)]
    pub fn fits_cpu(&self) -> Result<(), JsValue> {
        let info = &self.prepared()?.info;
        let shards = self.building.as_ref().map_or(1, |b| b.shard.count) as u64;
        let weights = info.weight_bytes as u64;
        let need = info.memory_needed as u64 - weights + weights.div_ceil(shards);
        let limit = WASM_LIMIT.saturating_sub(wasm_memory_bytes());
        if need > limit {
            return Err(js_err(WebError::TooLarge { need, limit }));
        }
        Ok(())
    }

    /// Stores bytes fetched from file `file`, starting at `offset`.
    pub fn put(&mut self, file: usize, offset: f64, bytes: &[u8]) -> Result<(), JsValue> {
        self.prepared()?
            .file
            .source()
            .put(file, offset as u64, bytes)
            .map_err(js_err)?;
        self.take_complete();
        Ok(())
    }

    /// Tensor bytes still to arrive.
    pub fn missing(&self) -> Result<f64, JsValue> {
        Ok(self.prepared()?.file.source().missing() as f64)
    }

    /// The ggml type id of most weight matrices, for the WebGPU self-test.
    #[wasm_bindgen(js_name = matrixType)]
    pub fn matrix_type(&self) -> Result<u32, JsValue> {
        let p = self.prepared()?;
        Ok(backend::matrix_type(&p.file.header, &p.spec).id())
    }

    /// The model's widths for the speed probe of [`GpuDevice::open`]: its embedding and
    /// feed-forward widths and the values in its matrices.
    #[wasm_bindgen(js_name = probeWidths)]
    pub fn probe_widths(&self) -> Result<Vec<f64>, JsValue> {
        let p = self.prepared()?;
        let w = backend::ModelWidths::of(&p.file.header, &p.spec);
        Ok(vec![
            w.embedding as f64,
            w.ffn as f64,
            w.matrix_values as f64,
        ])
    }

    /// Builds the engine on the CPU (on the first shard of a split model, which then needs
    /// [`Engine::set_peers`]). `progress(loaded, total)` follows the weight bytes taken in, up
    /// to the weights' total once the engine is built.
    #[wasm_bindgen(js_name = loadCpu)]
    pub fn load_cpu(mut self, progress: &js_sys::Function) -> Result<Engine, JsValue> {
        if self.building.is_none() {
            self.build_cpu(0, 1)?;
        }
        let (weights, p) = self.into_weights()?;
        weights_progress(progress, &p);
        let model = CpuModel {
            spec: p.spec.clone(),
            weights,
        };
        let backend = Backend::cpu(model, p.info.cache_positions, p.info.weight_bytes as u64);
        Engine::new(p, backend)
    }

    /// This worker's shard of the matrices, once all of its bytes are in (after
    /// [`Loader::build_cpu`] with a shard other than the first).
    #[wasm_bindgen(js_name = intoShard)]
    pub fn into_shard(self) -> Result<CpuShard, JsValue> {
        Ok(CpuShard(self.into_weights()?.0))
    }

    /// Builds the engine on WebGPU, after the device passed its self-test. The model's buffers
    /// are made first; then `next_piece()` is awaited for the bytes, as `{ file, offset, bytes }`
    /// or `undefined` once the download is over, and each tensor is written to the GPU as soon
    /// as all of its bytes are in. `progress` as for [`Loader::load_cpu`].
    #[wasm_bindgen(js_name = loadGpu)]
    pub async fn load_gpu(
        self,
        gpu: GpuDevice,
        progress: js_sys::Function,
        next_piece: js_sys::Function,
    ) -> Result<Engine, JsValue> {
        let p = self
            .prepared
            .ok_or_else(|| js_err(WebError::BadRequest("plan() must come first".into())))?;
        let gpu = gpu.0;
        match fill_gpu(&gpu, &p, &next_piece).await {
            Ok(model) => {
                weights_progress(&progress, &p);
                Engine::new(p, Backend::Gpu { gpu, model })
            }
            Err(e) => {
                // In browsers wgpu leaves a dropped buffer to the garbage collector: destroying
                // the device frees what this load (and the self-test) allocated now, before the
                // CPU or another load needs the memory.
                gpu.device.destroy();
                Err(e)
            }
        }
    }
}

/// Makes the model's buffers on `gpu`, then writes each tensor as its bytes arrive from
/// `next_piece` (see [`Loader::load_gpu`]).
async fn fill_gpu(
    gpu: &hearth_gpu::Gpu,
    p: &Prepared,
    next_piece: &js_sys::Function,
) -> Result<GpuModel, JsValue> {
    let mut model = GpuModel::allocate(gpu, &p.file.header, p.info.cache_positions)
        .await
        .map_err(js_err)?;
    let source = p.file.source();
    loop {
        for (name, bytes) in source.take_complete() {
            model.fill(&name, &bytes).map_err(js_err)?;
        }
        if source.missing() == 0 {
            break;
        }
        let piece = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(
            &next_piece.call0(&JsValue::NULL)?,
        ))
        .await?;
        if piece.is_undefined() {
            return Err(js_err(WebError::Internal(format!(
                "the download ended with {} bytes of tensor data missing",
                source.missing()
            ))));
        }
        let field = |key: &str| js_sys::Reflect::get(&piece, &key.into());
        let (file, offset) = (field("file")?.as_f64(), field("offset")?.as_f64());
        let bytes = field("bytes")?.dyn_into::<js_sys::Uint8Array>();
        let (Some(file), Some(offset), Ok(bytes)) = (file, offset, bytes) else {
            return Err(js_err(WebError::BadRequest(
                "a piece must be { file, offset, bytes: Uint8Array }".into(),
            )));
        };
        source
            .put(file as usize, offset as u64, &bytes.to_vec())
            .map_err(js_err)?;
    }
    if let Some(name) = model.pending().next() {
        return Err(js_err(WebError::Internal(format!(
            "tensor {name:?} was never written"
        ))));
    }
    // Surfaces what the writes ran into (out of memory, a lost device).
    gpu.finish().await.map_err(js_err)?;
    Ok(model)
}

impl Loader {
    fn prepare(&mut self, context_length: usize, tokenizer: bool) -> Result<JsValue, JsValue> {
        // Taken, not copied: a large vocabulary's header is tens of megabytes once parsed, and
        // wasm memory never shrinks.
        let mut headers: Vec<Gguf> = std::mem::take(&mut self.headers)
            .into_iter()
            .map(|h| h.ok_or_else(|| js_err(WebError::BadRequest("a header is missing".into()))))
            .collect::<Result<_, _>>()?;
        let (mut merged, parts) = if headers.len() == 1 {
            (headers.pop().expect("one header"), Vec::new())
        } else {
            let (bytes, len) = source::merge_headers(&headers).map_err(js_err)?;
            (Gguf::parse(&bytes, len).map_err(js_err)?, headers)
        };
        let header_bytes = merged.data_offset;
        let virt_len = merged.file_len;
        let spec = ModelSpec::from_gguf(&merged).map_err(js_err)?;
        spec.check_tensors(&merged).map_err(js_err)?;
        let tokenizer = match tokenizer {
            true => Some(Tokenizer::from_gguf(&merged).map_err(js_err)?),
            false => None,
        };
        // The vocabulary's arrays, parsed, are megabytes that nothing reads once the tokenizer
        // is built (a shard never builds one): freed before the weights arrive, their memory
        // serves the weights.
        merged.retain_metadata(|key, _| !VOCABULARY.contains(&key));
        let names: Vec<String> = spec
            .expected_tensors()
            .into_iter()
            .map(|(id, _)| id.name())
            .collect();
        let whole = std::slice::from_ref(&merged);
        let located = source::locate(
            if parts.is_empty() { whole } else { &parts },
            &merged,
            &names,
        )
        .map_err(js_err)?;
        drop(parts);

        let positions = match context_length {
            0 => spec.context_length.min(4096),
            n => n.min(spec.context_length),
        };
        let weight_bytes: u64 = names
            .iter()
            .filter_map(|n| merged.tensor(n))
            .map(|t| t.n_bytes)
            .sum();
        let parameters: u64 = names
            .iter()
            .filter_map(|n| merged.tensor(n))
            .map(|t| t.n_elements())
            .sum();
        let (kv_bytes, recurrent_bytes) = spec.state_bytes(positions, 4, RING_SLACK);
        let cache_bytes = kv_bytes + recurrent_bytes * (1 + SNAPSHOTS as u64);
        // The vocabulary and merges are held twice while the tokenizer is built.
        let memory_needed = weight_bytes + cache_bytes + 2 * header_bytes;
        let info = ModelInfo {
            architecture: spec.arch.name.to_string(),
            name: merged.get_str("general.name").map(str::to_string),
            quantization: backend::matrix_type(&merged, &spec).name().to_string(),
            parameters: parameters as f64,
            weight_bytes: weight_bytes as f64,
            layers: spec.n_layer(),
            vocab_size: spec.n_vocab,
            context_length: spec.context_length,
            cache_positions: positions,
            memory_needed: memory_needed as f64,
            chat_template: merged.get_str("tokenizer.chat_template").is_some(),
        };
        let chunks = TensorChunks::new(virt_len, located);
        let fetch = chunks
            .fetch_plan(MERGE_GAP)
            .into_iter()
            .map(|(f, r)| [f as f64, r.start as f64, r.end as f64])
            .collect();
        let plan = to_js(&Plan { info: &info, fetch })?;
        let file = GgufFile::with_header(merged, chunks);
        self.prepared = Some(Prepared {
            file,
            spec,
            tokenizer,
            info,
        });
        Ok(plan)
    }

    fn prepared(&self) -> Result<&Prepared, JsValue> {
        self.prepared
            .as_ref()
            .ok_or_else(|| js_err(WebError::BadRequest("plan() must come first".into())))
    }

    /// Moves every complete tensor into the weights being built.
    fn take_complete(&mut self) {
        let (Some(p), Some(b)) = (&self.prepared, &mut self.building) else {
            return;
        };
        for (name, bytes) in p.file.source().take_complete() {
            // The source holds the tensors the spec reads, which plan() checked.
            let info = p.file.header.tensor(&name).expect("a planned tensor");
            match b.cut.contains(&name) {
                true => b.builder.add_kept(b.ids[&name], info, bytes),
                false => b.builder.add(b.ids[&name], info, bytes),
            }
        }
    }

    fn into_weights(self) -> Result<(Weights, Prepared), JsValue> {
        let (p, b) = match (self.prepared, self.building) {
            (Some(p), Some(b)) => (p, b),
            _ => {
                let why = "plan() and buildCpu() must come first";
                return Err(js_err(WebError::BadRequest(why.into())));
            }
        };
        match p.file.source().missing() {
            0 => Ok((b.builder.finish().map_err(js_err)?, p)),
            n => Err(js_err(WebError::BadRequest(format!(
                "{n} bytes of tensor data have not arrived"
            )))),
        }
    }
}

/// Reports the weight bytes the backend has taken from the source. Counted at the source, so
/// every tensor counts (the backends' own counts may leave small ones out).
fn weights_progress(progress: &js_sys::Function, p: &Prepared) {
    let loaded = p.file.source().handed() as f64;
    // Progress is advisory: a throwing callback must not stop the load.
    let _ = progress.call2(&JsValue::NULL, &loaded.into(), &p.info.weight_bytes.into());
}

#[cfg(target_arch = "wasm32")]
fn wasm_memory_bytes() -> u64 {
    core::arch::wasm32::memory_size(0) as u64 * 65536
}

#[cfg(not(target_arch = "wasm32"))]
fn wasm_memory_bytes() -> u64 {
    0
}

/// An opened WebGPU device that passed the start-up self-test.
#[wasm_bindgen]
pub struct GpuDevice(hearth_gpu::Gpu);

#[wasm_bindgen]
impl GpuDevice {
    /// Opens the device and runs the self-test with matrices of ggml type `matrix_type` (the
    /// model's); fails with `no_webgpu` without an adapter, or with a software adapter unless
    /// `software` allows it, and with `gpu_error` when the test fails. With `widths` (a
    /// model's [`Loader::probe_widths`]), also fails with `no_webgpu` where the speed probe
    /// finds the CPU engine faster for that model (`backend: "auto"`).
    pub async fn open(
        matrix_type: u32,
        software: bool,
        widths: Option<Vec<f64>>,
    ) -> Result<GpuDevice, JsValue> {
        let ty = GgmlType::from_id(matrix_type).unwrap_or(GgmlType::F32);
        let gpu = open_checked_gpu(ty, software).await.map_err(js_err)?;
        let Some(&[embedding, ffn, matrix_values]) = widths.as_deref() else {
            return Ok(GpuDevice(gpu));
        };
        let widths = backend::ModelWidths {
            embedding: embedding as u64,
            ffn: ffn as u64,
            matrix_values: matrix_values as u64,
        };
        let speeds = backend::compare_speeds(&gpu, ty, widths, &now_ms).await;
        match speeds {
            Ok(s) if s.gpu_ms <= s.cpu_ms => Ok(GpuDevice(gpu)),
            Ok(s) => {
                let why = format!(
                    "the CPU engine is faster for this model: a probe of its shapes predicts {:.1} ms a token for its products on the CPU, {:.1} ms on {}",
                    s.cpu_ms,
                    s.gpu_ms,
                    gpu.describe()
                );
                gpu.device.destroy();
                Err(js_err(WebError::NoGpu(why)))
            }
            Err(e) => {
                gpu.device.destroy();
                Err(js_err(e))
            }
        }
    }

    pub fn describe(&self) -> String {
        self.0.describe()
    }
}

/// `performance.now()` of the worker (or page), in milliseconds.
fn now_ms() -> f64 {
    let performance = js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .expect("a global object has properties");
    let now: js_sys::Function = js_sys::Reflect::get(&performance, &"now".into())
        .expect("performance has now()")
        .unchecked_into();
    now.call0(&performance)
        .expect("performance.now() returns")
        .as_f64()
        .unwrap_or(0.0)
}

/// A shard of a CPU model's matrices, in a worker of its own (`pkg/shard.js`).
#[wasm_bindgen]
pub struct CpuShard(Weights);

#[wasm_bindgen]
impl CpuShard {
    /// Answers the engine's requests through `buffer` (see [`Engine::set_peers`]); returns
    /// never: the worker is ended with the engine.
    pub fn serve(&self, buffer: &js_sys::SharedArrayBuffer) {
        self.0.serve(&shards::SharedLink::new(buffer));
    }

    /// Answers one request that came as a message (see [`Engine::set_message_peers`]):
    /// `words` as `Request::to_words` wrote them, `input` its inputs. Returns `[spans,
    /// values]` for the engine's [`shards::Mailbox::answer`].
    pub fn answer(&self, words: &[u32], input: Vec<f32>) -> Result<js_sys::Array, JsValue> {
        let words = words
            .try_into()
            .map_err(|_| JsError::new("a request has the wrong number of words"))?;
        let reply = shards::Reply::new(input);
        self.0
            .answer(hearth_core::model::Request::from_words(words), &reply);
        Ok(reply.into_js())
    }
}

/// What `engine.info` reports.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EngineInfo<'a> {
    #[serde(flatten)]
    model: &'a ModelInfo,
    backend: &'static str,
    adapter: Option<String>,
    features: Vec<&'static str>,
    memory_held: f64,
    cached_tokens: usize,
    /// Workers holding a part of the model's matrices each (1 on WebGPU).
    workers: usize,
}

/// A loaded model: tokenizer, chat template, backend and the conversation in its KV cache.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<RefCell<Session>>,
    /// The wasm memory of the workers holding the other shards of a split CPU model.
    peer_memory: std::cell::Cell<f64>,
}

impl Engine {
    fn new(p: Prepared, backend: Backend) -> Result<Engine, JsValue> {
        let tokenizer = p.tokenizer.ok_or_else(|| {
            js_err(WebError::BadRequest(
                "planShard() prepares a shard, not an engine".into(),
            ))
        })?;
        // A template that does not parse leaves the raw-prompt API usable.
        let template = ChatTemplate::from_gguf(&p.file.header, &tokenizer).ok();
        Ok(Engine {
            inner: Rc::new(RefCell::new(Session::new(
                backend, tokenizer, p.spec, p.info, template,
            ))),
            peer_memory: std::cell::Cell::new(0.0),
        })
    }

    fn session(&self) -> Result<std::cell::RefMut<'_, Session>, JsValue> {
        self.inner
            .try_borrow_mut()
            .map_err(|_| js_err(WebError::Busy))
    }

    /// Sets the peers that `make(others, weights)` gives (`None`: they cannot serve this model)
    /// on a split CPU model.
    fn split_with<T>(
        &self,
        memory: f64,
        make: impl FnOnce(usize, &Weights) -> Option<(Box<dyn hearth_core::model::Peers>, T)>,
    ) -> Result<T, JsValue> {
        let mut s = self.session()?;
        let Backend::Cpu { model, .. } = s.backend_mut() else {
            return Err(not_on_cpu());
        };
        let others = model.weights.shards() - 1;
        let made = (others > 0).then(|| make(others, &model.weights)).flatten();
        let Some((peers, out)) = made else {
            return Err(js_err(WebError::BadRequest(
                "the buffer is too small, or the model is not split".into(),
            )));
        };
        model.weights.set_peers(peers);
        self.peer_memory.set(memory);
        Ok(out)
    }
}

#[wasm_bindgen]
impl Engine {
    /// Token ids of `text`; with `add_special`, the BOS/EOS the model's tokenizer adds.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, JsValue> {
        Ok(self.session()?.tokenizer().encode(text, add_special))
    }

    /// Text of `ids`; with `skip_special`, control tokens are left out.
    pub fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String, JsValue> {
        Ok(self.session()?.tokenizer().decode_with(ids, skip_special))
    }

    /// The model, the backend and the memory held.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let s = self.session()?;
        let (adapter, features) = match s.backend().adapter() {
            Some((a, f)) => (Some(a), f),
            None => (None, Vec::new()),
        };
        to_js(&EngineInfo {
            model: s.info(),
            backend: s.backend().name(),
            adapter,
            features,
            memory_held: match s.backend() {
                // What the instances hold in fact: weights, cache, tokenizer and all.
                Backend::Cpu { .. } => wasm_memory_bytes() as f64 + self.peer_memory.get(),
                Backend::Gpu { .. } => s.backend().held_bytes() as f64,
            },
            cached_tokens: s.backend().positions(),
            workers: cpu_weights(s.backend()).map_or(1, |w| w.shards()),
        })
    }

    /// Renders `[{ role, content, tool_calls?, tool_call_id?, name? }]` messages (tool-call
    /// arguments as JSON text) with the model's chat template, ending with the assistant's
    /// turn opened; `tools` is OpenAI's tool list as JSON text, or undefined.
    #[wasm_bindgen(js_name = applyChatTemplate)]
    pub fn apply_chat_template(
        &self,
        messages: JsValue,
        tools: Option<String>,
    ) -> Result<String, JsValue> {
        let messages: Vec<ChatMessage> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| js_err(WebError::BadRequest(format!("messages: {e}"))))?;
        self.session()?
            .render_chat(&messages, tools.as_deref())
            .map_err(js_err)
    }

    /// The tokens of a rendered chat, special-token text parsed. Nothing is added: the
    /// template writes BOS itself where the model wants one (as `hearth chat` and transformers
    /// assume).
    #[wasm_bindgen(js_name = chatTokens)]
    pub fn chat_tokens(&self, rendered: &str) -> Result<Vec<u32>, JsValue> {
        Ok(self.session()?.tokenizer().encode(rendered, false))
    }

    /// Starts generating after `prompt` (token ids), reusing the KV cache of the prefix it
    /// shares with what the cache holds. Returns `{ promptTokens, cachedTokens }`.
    pub fn begin(&self, prompt: Vec<u32>, options: JsValue) -> Result<JsValue, JsValue> {
        let options: GenerateRequest = if options.is_undefined() || options.is_null() {
            GenerateRequest::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| js_err(WebError::BadRequest(format!("options: {e}"))))?
        };
        let started = self.session()?.begin(prompt, options).map_err(js_err)?;
        to_js(&started)
    }

    /// Produces the next token: `{ text, token, finishReason }`, where `finishReason` is null
    /// while generation goes on, then "stop" or "length" (and `token` null when nothing more
    /// was produced).
    pub fn step(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        // The session stays borrowed for the whole step on purpose: every other call takes it
        // with `try_borrow_mut`, so one made meanwhile fails with `busy` rather than panicking.
        #[allow(clippy::await_holding_refcell_ref)]
        wasm_bindgen_futures::future_to_promise(async move {
            let mut s = inner.try_borrow_mut().map_err(|_| js_err(WebError::Busy))?;
            let step = s.step().await.map_err(js_err)?;
            to_js(&step)
        })
    }

    /// Forgets the conversation held in the KV cache.
    pub fn reset(&self) -> Result<(), JsValue> {
        self.session()?.reset();
        Ok(())
    }

    /// The bytes of the SharedArrayBuffer through which the workers holding the other shards
    /// of a split CPU model answer (see [`Engine::set_peers`]).
    #[wasm_bindgen(js_name = peerBufferBytes)]
    pub fn peer_buffer_bytes(&self) -> Result<f64, JsValue> {
        let s = self.session()?;
        let weights = cpu_weights(s.backend()).ok_or_else(not_on_cpu)?;
        Ok(shards::buffer_bytes(peer_capacity(weights, SHARED_FLOATS)))
    }

    /// Takes the other shards' rows of every product from the workers serving `buffer` (a
    /// SharedArrayBuffer of [`Engine::peer_buffer_bytes`]), from now on; their wasm memory
    /// holds `memory` bytes together.
    #[wasm_bindgen(js_name = setPeers)]
    pub fn set_peers(
        &self,
        buffer: &js_sys::SharedArrayBuffer,
        memory: f64,
    ) -> Result<(), JsValue> {
        self.split_with(memory, |others, weights| {
            let peers = shards::SharedPeers::new(buffer, others);
            (hearth_core::model::Peers::capacity(&peers) >= peer_capacity(weights, SHARED_FLOATS))
                .then_some((Box::new(peers) as Box<dyn hearth_core::model::Peers>, ()))
        })
    }

    /// Takes the other shards' rows of every product by message from now on, where the page
    /// cannot share memory between workers: `post(words, input)` must hand each request to
    /// every worker serving another shard ([`CpuShard::answer`]), and their answers go to the
    /// returned mailbox. Their wasm memory holds `memory` bytes together.
    #[wasm_bindgen(js_name = setMessagePeers)]
    pub fn set_message_peers(
        &self,
        post: js_sys::Function,
        memory: f64,
    ) -> Result<shards::Mailbox, JsValue> {
        self.split_with(memory, |others, weights| {
            let capacity = peer_capacity(weights, MESSAGE_FLOATS);
            let (peers, mailbox) = shards::MessagePeers::new(post, others, capacity);
            Some((
                Box::new(peers) as Box<dyn hearth_core::model::Peers>,
                mailbox,
            ))
        })
    }
}

/// Floats each area between the shards holds: at least the largest dimension of a split matrix,
/// and room for whole prompts of the common matrices in one request each: `least`.
fn peer_capacity(weights: &Weights, least: usize) -> usize {
    weights.largest_split_dimension().max(least)
}

/// The least floats of a SharedArrayBuffer's areas (outside wasm memory).
const SHARED_FLOATS: usize = 1 << 21;
/// The least floats of the output area where answers come by message: it is in wasm memory,
/// which never shrinks; longer prompts take a few requests a product.
const MESSAGE_FLOATS: usize = 1 << 18;

fn cpu_weights(backend: &Backend) -> Option<&Weights> {
    match backend {
        Backend::Cpu { model, .. } => Some(&model.weights),
        Backend::Gpu { .. } => None,
    }
}

fn not_on_cpu() -> JsValue {
    js_err(WebError::BadRequest("the engine is not on the CPU".into()))
}
