//! A generated model large enough for real shapes: Qwen2's 151,936-token vocabulary (its real
//! tokenizer, taken from the qwen2-tiny fixture) over a hidden size of 1024, random weights,
//! quantized under llama.cpp's Q4_K_M choices. Its embedding, also the output head, is larger
//! than many devices' storage binding limit, so the GPU engine must split it. Made at test time
//! (about 140 MB) rather than committed.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use hearth_core::gguf::{write_gguf, TensorInfo, TensorToWrite, Value};
use hearth_core::model::requantize::{target_type, Scheme};
use hearth_core::model::{Role, TensorId};
use hearth_core::quant::{quantize, GgmlType};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shape of the generated model.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            hidden: 1024,
            ffn: 2816,
            layers: 2,
            heads: 16,
            kv_heads: 2,
            context: 512,
        }
    }
}

/// Rows quantized at a time, so the f32 values of a large tensor are never all in memory.
const ROWS_PER_CHUNK: usize = 2048;

/// What to write for each tensor: its name, dims (ggml order) and how its values are drawn.
fn tensors(shape: &Shape, n_vocab: usize) -> Vec<(String, Vec<u64>, Fill)> {
    let (e, ff) = (shape.hidden as u64, shape.ffn as u64);
    let kv = (shape.hidden / shape.heads * shape.kv_heads) as u64;
    let mut out = vec![
        (
            TensorId::global(Role::TokenEmbd).name(),
            vec![e, n_vocab as u64],
            Fill::Matrix,
        ),
        (
            TensorId::global(Role::OutputNorm).name(),
            vec![e],
            Fill::Norm,
        ),
    ];
    for l in 0..shape.layers {
        let n = |role| TensorId::layer(l, role).name();
        out.extend([
            (n(Role::AttnNorm), vec![e], Fill::Norm),
            (n(Role::AttnQ), vec![e, e], Fill::Matrix),
            (n(Role::AttnQBias), vec![e], Fill::Bias),
            (n(Role::AttnK), vec![e, kv], Fill::Matrix),
            (n(Role::AttnKBias), vec![kv], Fill::Bias),
            (n(Role::AttnV), vec![e, kv], Fill::Matrix),
            (n(Role::AttnVBias), vec![kv], Fill::Bias),
            (n(Role::AttnOutput), vec![e, e], Fill::Matrix),
            (n(Role::FfnNorm), vec![e], Fill::Norm),
            (n(Role::FfnGate), vec![e, ff], Fill::Matrix),
            (n(Role::FfnUp), vec![e, ff], Fill::Matrix),
            (n(Role::FfnDown), vec![ff, e], Fill::Matrix),
        ]);
    }
    out
}

#[derive(Clone, Copy)]
enum Fill {
    /// Uniform in +-1/sqrt(row length): activations keep their scale through the layers.
    Matrix,
    /// Near 1.
    Norm,
    /// Near 0.
    Bias,
}

fn draw(fill: Fill, row: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let a = match fill {
        Fill::Matrix => 1.0 / (row as f32).sqrt(),
        Fill::Norm | Fill::Bias => 0.1,
    };
    let base = if matches!(fill, Fill::Norm) { 1.0 } else { 0.0 };
    (0..n).map(|_| base + rng.random_range(-a..a)).collect()
}

/// Writes the model to `path`. `tokenizer_source` is a GGUF header (the qwen2-tiny fixture's)
/// whose tokenizer and Qwen2 settings are kept; `seed` fixes the weights.
pub fn write(
    path: &Path,
    tokenizer_source: &hearth_core::gguf::Gguf,
    shape: &Shape,
    seed: u64,
) -> io::Result<()> {
    let n_vocab = tokenizer_source
        .get_array("tokenizer.ggml.tokens")
        .map(|a| a.len())
        .ok_or_else(|| io::Error::other("the source has no tokenizer.ggml.tokens"))?;
    let set = [
        ("general.name", Value::String("Large random Qwen2".into())),
        ("qwen2.embedding_length", Value::U32(shape.hidden as u32)),
        ("qwen2.feed_forward_length", Value::U32(shape.ffn as u32)),
        ("qwen2.block_count", Value::U32(shape.layers as u32)),
        ("qwen2.attention.head_count", Value::U32(shape.heads as u32)),
        (
            "qwen2.attention.head_count_kv",
            Value::U32(shape.kv_heads as u32),
        ),
        ("qwen2.context_length", Value::U32(shape.context as u32)),
        ("general.file_type", Value::U32(15)),
    ];
    let mut metadata: Vec<(String, Value)> = tokenizer_source
        .metadata()
        .iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    metadata.extend(set.into_iter().map(|(k, v)| (k.to_string(), v)));

    let list = tensors(shape, n_vocab);
    let plan: Vec<TensorToWrite> = list
        .iter()
        .map(|(name, dims, _)| {
            let info = TensorInfo {
                name: name.clone(),
                dims: dims.clone(),
                ty: GgmlType::F32,
                offset: 0,
                n_bytes: 0,
            };
            TensorToWrite {
                name: name.clone(),
                dims: dims.clone(),
                ty: target_type(&info, Scheme::Q4KM, shape.layers, false),
            }
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    write_gguf(&mut out, &metadata, &plan, |i| {
        let (_, dims, fill) = &list[i];
        let row = dims[0] as usize;
        let rows = (dims.iter().product::<u64>() as usize) / row;
        let mut bytes = Vec::new();
        for start in (0..rows).step_by(ROWS_PER_CHUNK) {
            let n = ROWS_PER_CHUNK.min(rows - start);
            let values = draw(*fill, row, n * row, &mut rng);
            bytes.extend(quantize(plan[i].ty, &values).map_err(io::Error::other)?);
        }
        Ok::<_, io::Error>(bytes)
    })?;
    out.flush()
}
