//! Choosing WebGPU only where it computes right (the start-up self-test) and, under `auto`,
//! only where it is faster than the CPU engine for the model (the speed probe). The two
//! backends themselves are [`hearth_gpu::Backend`].

use std::io;

use hearth_core::gguf::{write_gguf, GgufFile, TensorToWrite, Value};
use hearth_core::model::tensor::Use;
use hearth_core::model::{CpuModel, ModelSpec, Products};
use hearth_core::quant::{quantize, GgmlType};
use hearth_gpu::{Gpu, GpuModel, GpuOptions};

use crate::error::WebError;

/// Opens the WebGPU device and checks that it computes a small model's logits as the CPU
/// reference does, with `ty` for the matrices (the model's own weight type where it can be
/// made), so a driver that gets answers silently wrong is never used. Unless `software` is
/// allowed, a software adapter is refused: the CPU engine is faster than WebGPU run on the CPU.
pub async fn open_checked_gpu(ty: GgmlType, software: bool) -> Result<Gpu, WebError> {
    let gpu = Gpu::new(&GpuOptions::default()).await?;
    if !software && gpu.is_software() {
        let why = format!(
            "the WebGPU adapter is a software renderer ({}); the CPU engine is faster",
            gpu.describe()
        );
        gpu.device.destroy();
        return Err(WebError::NoGpu(why));
    }
    match self_test(&gpu, ty).await {
        Ok(()) => Ok(gpu),
        Err(e) => {
            // What the test allocated is freed now, not when the garbage collector runs.
            gpu.device.destroy();
            Err(e)
        }
    }
}

/// Runs the probe model on `gpu` and on the CPU; fails unless the logits agree.
async fn self_test(gpu: &Gpu, ty: GgmlType) -> Result<(), WebError> {
    let file = probe_file(ty, SELF_TEST)?;
    let mut cpu = CpuModel::load(&file, &mut |_, _| {})?;
    cpu.set_products(Products::Reference);
    let tokens = [1, 7, 30, 2];
    let want = cpu.forward(&mut cpu.new_state(tokens.len()), &tokens)?;
    let mut model = GpuModel::load(gpu, &file, tokens.len(), &mut |_, _| {}).await?;
    let got = model.forward(&tokens).await?;
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if got.len() != want.len() || worst.is_nan() || worst > 2e-2 * scale {
        return Err(WebError::Gpu(format!(
            "the WebGPU self-test failed on {}: logits differ from the CPU's by {worst} (scale {scale})",
            gpu.describe()
        )));
    }
    Ok(())
}

/// A decode step's time for a model's matrices, as the speed probe predicts it on each engine.
#[derive(Clone, Copy, Debug)]
pub struct Speeds {
    pub cpu_ms: f64,
    pub gpu_ms: f64,
}

/// The widths of a model, for the speed probe: its embedding and feed-forward widths, and the
/// values in all its matrices.
#[derive(Clone, Copy, Debug)]
pub struct ModelWidths {
    pub embedding: u64,
    pub ffn: u64,
    pub matrix_values: u64,
}

impl ModelWidths {
    pub fn of(file_header: &hearth_core::gguf::Gguf, spec: &ModelSpec) -> ModelWidths {
        let matrix_values = spec
            .expected_tensors()
            .into_iter()
            .filter(|(id, _)| id.role.usage() == Use::Matrix || id.role == spec.head)
            .filter_map(|(id, _)| file_header.tensor(&id.name()))
            .map(|t| t.n_elements())
            .sum();
        ModelWidths {
            embedding: spec.n_embd as u64,
            ffn: spec.layers.first().map_or(0, |l| l.ffn.n_ff()) as u64,
            matrix_values,
        }
    }

    /// The probe's layers: the model's widths in whole super-blocks, made narrower where
    /// one layer would hold more than [`PROBE_VALUES`].
    fn probe(self, layers: u64) -> ProbeShape {
        let whole = |v: u64| (v / 256).max(1) * 256;
        let mut embedding = whole(self.embedding);
        while 3 * embedding * embedding + 3 * embedding * 256 > PROBE_VALUES {
            embedding = whole(embedding / 2);
        }
        let fits = (PROBE_VALUES - 3 * embedding * embedding) / (3 * embedding);
        ProbeShape {
            embedding,
            ffn: whole(self.ffn.min(fits)),
            layers,
            distinct_rows: 8,
        }
    }
}

/// Predicts a decode step of a model of `widths` with matrices of `ty` on `gpu` and on the CPU
/// engine (one worker): probe models of one and of three layers of its widths (see
/// [`ModelWidths::probe`]) are timed on both, `now()` being a clock in milliseconds; each
/// engine's fixed cost per step and cost per matrix value are read off the two, and applied to
/// the model's matrices.
pub async fn compare_speeds(
    gpu: &Gpu,
    ty: GgmlType,
    widths: ModelWidths,
    now: &dyn Fn() -> f64,
) -> Result<Speeds, WebError> {
    let (mut cpu, mut on_gpu) = ([0.0; 2], [0.0; 2]);
    let shapes = [1, 3].map(|layers| widths.probe(layers));
    for (i, &shape) in shapes.iter().enumerate() {
        let file = probe_file(ty, shape)?;
        let model = CpuModel::load(&file, &mut |_, _| {})?;
        let mut state = model.new_state(PROBE_CONTEXT);
        let mut steps = Steps::new(now);
        cpu[i] = loop {
            match steps.next() {
                Ok(token) => {
                    model.forward(&mut state, &[token])?;
                }
                Err(ms) => break ms,
            }
        };
        drop(model);
        let mut model = GpuModel::load(gpu, &file, PROBE_CONTEXT, &mut |_, _| {}).await?;
        let mut steps = Steps::new(now);
        on_gpu[i] = loop {
            match steps.next() {
                Ok(token) => {
                    model.forward_greedy(&[token], None).await?;
                }
                Err(ms) => break ms,
            }
        };
    }
    let layers = widths.matrix_values as f64 / shapes[0].layer_values() as f64;
    // Fixed cost and cost per layer from one and three layers (neither below zero).
    let predict = |[one, three]: [f64; 2]| {
        let per_layer = ((three - one) / 2.0).max(0.0);
        (one - per_layer).max(0.0) + per_layer * layers
    };
    Ok(Speeds {
        cpu_ms: predict(cpu),
        gpu_ms: predict(on_gpu),
    })
}

/// The decode steps of a speed probe: [`Steps::next`] gives the token of each step to run,
/// [`WARM_UP`] untimed ones then timed ones, until [`TIMED_MS`] have passed or the probe's
/// context is full; then the mean time of the timed ones.
struct Steps<'a> {
    now: &'a dyn Fn() -> f64,
    n: usize,
    start: f64,
}

impl Steps<'_> {
    fn new(now: &dyn Fn() -> f64) -> Steps<'_> {
        Steps {
            now,
            n: 0,
            start: 0.0,
        }
    }

    /// The next step's token, or the timed steps' mean time in milliseconds once done.
    fn next(&mut self) -> Result<u32, f64> {
        let (n, now) = (self.n, (self.now)());
        if n == WARM_UP {
            self.start = now;
        }
        let timed = n.saturating_sub(WARM_UP);
        if timed > 0 && (now - self.start >= TIMED_MS || n == PROBE_CONTEXT) {
            return Err((now - self.start) / timed as f64);
        }
        self.n += 1;
        Ok((n % PROBE_VOCAB) as u32)
    }
}

/// The layers of a probe model: their width, feed-forward width and number; the attention
/// has heads of 64 and half as many key/value heads.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ProbeShape {
    embedding: u64,
    ffn: u64,
    layers: u64,
    /// Each matrix's rows are random up to this many, then repeat (a speed probe's values
    /// matter not, and quantizing them all would cost more than the probe).
    distinct_rows: u64,
}

impl ProbeShape {
    /// The values in one layer's matrices.
    fn layer_values(self) -> u64 {
        let e = self.embedding;
        2 * e * e + e * e + 3 * e * self.ffn
    }
}

/// The self-test's model: small, so that it costs next to nothing.
const SELF_TEST: ProbeShape = ProbeShape {
    embedding: 256,
    ffn: 256,
    layers: 1,
    distinct_rows: u64::MAX,
};

/// The most values a speed probe's layer holds (its matrices are made as f32 first).
const PROBE_VALUES: u64 = 4 << 20;

/// Decode steps on each probe model: [`WARM_UP`] untimed ones, then timed ones until
/// [`TIMED_MS`] have passed or the probe's context is full.
const WARM_UP: usize = 2;
const TIMED_MS: f64 = 25.0;
const PROBE_CONTEXT: usize = 64;
/// The probe models' tokens.
const PROBE_VOCAB: usize = 64;

/// A probe model's file, for the GPU and CPU engines.
fn probe_file(ty: GgmlType, shape: ProbeShape) -> Result<GgufFile<Vec<u8>>, WebError> {
    GgufFile::open(probe_model(ty, shape)).map_err(|e| WebError::Internal(e.to_string()))
}

/// A llama model of `shape` with deterministic weights, as a GGUF file in memory.
fn probe_model(ty: GgmlType, shape: ProbeShape) -> Vec<u8> {
    const VOCAB: u64 = PROBE_VOCAB as u64;
    let ProbeShape {
        embedding: e,
        ffn: ff,
        layers,
        ..
    } = shape;
    let heads = e / 64;
    let meta = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(e as u32)),
        ("llama.feed_forward_length", Value::U32(ff as u32)),
        ("llama.block_count", Value::U32(layers as u32)),
        ("llama.context_length", Value::U32(PROBE_CONTEXT as u32)),
        ("llama.attention.head_count", Value::U32(heads as u32)),
        (
            "llama.attention.head_count_kv",
            Value::U32((heads / 2) as u32),
        ),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let kv = e / 2;
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![e, VOCAB]),
        ("output_norm.weight".into(), vec![e]),
        ("output.weight".into(), vec![e, VOCAB]),
    ];
    for l in 0..layers {
        shapes.extend(
            [
                ("attn_norm", vec![e]),
                ("attn_q", vec![e, e]),
                ("attn_k", vec![e, kv]),
                ("attn_v", vec![e, kv]),
                ("attn_output", vec![e, e]),
                ("ffn_norm", vec![e]),
                ("ffn_gate", vec![e, ff]),
                ("ffn_up", vec![e, ff]),
                ("ffn_down", vec![ff, e]),
            ]
            .map(|(name, dims)| (format!("blk.{l}.{name}.weight"), dims)),
        );
    }
    let mut seed = 0x2545_f491_u32;
    let data: Vec<(GgmlType, Vec<u8>)> = shapes
        .iter()
        .map(|(_, dims)| {
            if let [n] = dims[..] {
                let ones: Vec<f32> = vec![1.0; n as usize];
                return (GgmlType::F32, bytes_of(&ones));
            }
            // The first `distinct_rows` rows, then the same again.
            let (cols, rows) = (dims[0], dims[1]);
            let made = rows.min(shape.distinct_rows);
            let values: Vec<f32> = (0..cols * made)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed as f32 / u32::MAX as f32 - 0.5) * 0.2
                })
                .collect();
            let (ty, bytes) = match quantize(ty, &values) {
                Ok(q) => (ty, q),
                Err(_) => (GgmlType::F32, bytes_of(&values)),
            };
            let len = bytes.len() / made as usize * rows as usize;
            (ty, bytes.into_iter().cycle().take(len).collect())
        })
        .collect();
    let tensors: Vec<TensorToWrite> = shapes
        .iter()
        .zip(&data)
        .map(|((name, dims), (ty, _))| TensorToWrite {
            name: name.clone(),
            dims: dims.clone(),
            ty: *ty,
        })
        .collect();
    let mut out = Vec::new();
    write_gguf::<io::Error>(&mut out, &meta, &tensors, |i| Ok(data[i].1.clone()))
        .expect("the probe model's shapes are whole blocks");
    out
}

fn bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The most common type among a model's matrices (what its quantization is called by).
pub fn matrix_type(file_header: &hearth_core::gguf::Gguf, spec: &ModelSpec) -> GgmlType {
    let mut counts: Vec<(GgmlType, u64)> = Vec::new();
    for (id, _) in spec.expected_tensors() {
        if id.role.usage() != Use::Matrix {
            continue;
        }
        if let Some(t) = file_header.tensor(&id.name()) {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += t.n_elements(),
                None => counts.push((t.ty, t.n_elements())),
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map_or(GgmlType::F32, |(ty, _)| ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The speed probe's layers keep a model's widths where they fit the budget, in whole
    /// super-blocks, and are narrowed where they do not.
    #[test]
    fn probe_layers_fit_the_budget() {
        let widths = |embedding, ffn| ModelWidths {
            embedding,
            ffn,
            matrix_values: 0,
        };
        let shape = |embedding, ffn| ProbeShape {
            embedding,
            ffn,
            layers: 3,
            distinct_rows: 8,
        };
        assert_eq!(widths(512, 1536).probe(3), shape(512, 1536));
        assert_eq!(widths(1024, 3072).probe(3), shape(1024, 256));
        assert_eq!(widths(896, 4864).probe(3), shape(768, 1024));
        assert_eq!(widths(64, 128).probe(3), shape(256, 256));
        for (e, f) in [(4096, 14336), (8192, 28672), (2048, 8192), (100, 100)] {
            let p = widths(e, f).probe(1);
            assert!(p.layer_values() <= PROBE_VALUES, "{p:?}");
            assert!(
                p.embedding % 256 == 0 && p.ffn % 256 == 0 && p.ffn > 0,
                "{p:?}"
            );
        }
    }

    /// On the machine's adapter (lavapipe in CI: Vulkan on the CPU) the probe predicts a time
    /// for each engine, and on a software adapter the CPU engine's is the shorter.
    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn the_speed_probe_times_both_engines() {
        let gpu = match pollster::block_on(Gpu::new(&GpuOptions::default())) {
            Ok(gpu) => gpu,
            Err(e) if std::env::var_os("HEARTH_REQUIRE_GPU").is_some() => {
                panic!("HEARTH_REQUIRE_GPU is set but there is no adapter: {e}")
            }
            Err(e) => return eprintln!("skipped: {e}"),
        };
        let start = std::time::Instant::now();
        let now = || start.elapsed().as_secs_f64() * 1000.0;
        let widths = ModelWidths {
            embedding: 512,
            ffn: 1536,
            matrix_values: 100 << 20,
        };
        let s = pollster::block_on(compare_speeds(&gpu, GgmlType::Q8_0, widths, &now)).unwrap();
        eprintln!("{}: {s:?}", gpu.describe());
        assert!(s.cpu_ms > 0.0 && s.cpu_ms.is_finite(), "{s:?}");
        assert!(s.gpu_ms > 0.0 && s.gpu_ms.is_finite(), "{s:?}");
        if gpu.is_software() {
            assert!(s.cpu_ms < s.gpu_ms, "{s:?}");
        }
    }

    #[test]
    fn probe_model_loads_on_the_cpu() {
        for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_K] {
            let file = probe_file(ty, SELF_TEST).unwrap();
            let model = CpuModel::load(&file, &mut |_, _| {}).unwrap();
            let logits = model.forward(&mut model.new_state(4), &[1, 2, 3]).unwrap();
            assert_eq!(logits.len(), 64);
            assert!(logits.iter().all(|v| v.is_finite()));
            assert!(logits.iter().any(|&v| v != logits[0]));
        }
    }
}
