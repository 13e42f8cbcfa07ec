//! Generated models of real sizes: random weights quantized under llama.cpp's Q4_K_M choices,
//! with a real vocabulary and tokenizer taken from a committed fixture's header. Each file is
//! written from a [`ModelSpec`]: its tensors are `spec.expected_tensors()` and its metadata the
//! keys the architecture reads, so `ModelSpec::from_gguf` of the file gives the spec back.
//! Made at test time (hundreds of MB) rather than committed.
//!
//! Weights are scaled so that activations stay O(1) through every layer: matrices uniform in
//! +-1/sqrt(row length), norms near 1, biases near 0, and the delta net's decay `ssm_a`
//! negative, as the converter stores `-exp(A_log)`.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use hearth_core::gguf::{write_gguf, Array, Gguf, TensorInfo, TensorToWrite, Value};
use hearth_core::model::requantize::{target_type, Scheme};
use hearth_core::model::{
    arch, Attention, DeltaNet, Ffn, Layer, Mixer, ModelSpec, Role, Rope, RopeStyle,
};
use hearth_core::quant::{quantize, GgmlType};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generated models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Qwen2 attention over a hidden size of 1024, 2 layers, with Qwen2's 151,936-token
    /// vocabulary: its embedding, also the output head, is larger than many devices' storage
    /// binding limit, so the GPU engine must split it.
    Qwen2,
    /// Qwen3.5-0.8B: 24 layers, every fourth gated full attention (8 heads of 256 over 2 KV
    /// heads, rope over 64 dimensions) and the others Gated DeltaNet (16 key and 16 value heads
    /// of 128); hidden 1024, feed-forward 3584, tied embedding over 248,320 tokens.
    Qwen35_0_8B,
    /// Qwen3-0.6B: 28 attention layers (16 heads of 128 over 8 KV heads, Q/K norm), hidden
    /// 1024, feed-forward 3072, tied embedding over 151,936 tokens.
    Qwen3_0_6B,
    /// A Qwen3 of 103M parameters for benchmarks: 8 layers (4 heads of 128 over 2 KV heads,
    /// Q/K norm), hidden 512, feed-forward 1536, tied embedding over 151,936 tokens (78M of
    /// the parameters, as in the small real models).
    Qwen3_100M,
    /// Llama-3.2-1B: 16 layers (32 heads of 64 over 8 KV heads), hidden 2048, feed-forward
    /// 8192, tied embedding over Llama 3's 128,256 tokens, rope base 500,000 (without the
    /// long-context frequency factors, which cost nothing per token).
    Llama32_1B,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Qwen2,
        Shape::Qwen35_0_8B,
        Shape::Qwen3_0_6B,
        Shape::Qwen3_100M,
        Shape::Llama32_1B,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Qwen2 => "qwen2-1024",
            Shape::Qwen35_0_8B => "qwen35-0.8b",
            Shape::Qwen3_0_6B => "qwen3-0.6b",
            Shape::Qwen3_100M => "qwen3-100m",
            Shape::Llama32_1B => "llama3.2-1b",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Layers of the full model.
    pub fn layers(self) -> usize {
        match self {
            Shape::Qwen2 => 2,
            Shape::Qwen35_0_8B => 24,
            Shape::Qwen3_0_6B => 28,
            Shape::Qwen3_100M => 8,
            Shape::Llama32_1B => 16,
        }
    }

    /// The committed fixture whose tokenizer the model takes ("name.type").
    pub fn tokenizer_fixture(self) -> &'static str {
        match self {
            Shape::Qwen2 => "qwen2-tiny.q8_0",
            Shape::Qwen35_0_8B => "qwen35-tiny.q8_0",
            Shape::Qwen3_0_6B | Shape::Qwen3_100M => "qwen3-tiny.q8_0",
            // SmolLM3 uses Llama 3's tokenizer.
            Shape::Llama32_1B => "smollm3-tiny.q8_0",
        }
    }

    /// The header of [`Shape::tokenizer_fixture`].
    pub fn tokenizer_source(self) -> Gguf {
        let bytes = crate::model_fixture(self.tokenizer_fixture()).gguf_bytes();
        Gguf::parse(&bytes, bytes.len() as u64).expect("a fixture's header parses")
    }

    /// The model with its first `n_layer` layers (the layer pattern is the full model's; at
    /// least 4 for Qwen3.5, whose first attention layer is the fourth) over a vocabulary of
    /// `n_vocab` tokens.
    pub fn spec(self, n_layer: usize, n_vocab: usize) -> ModelSpec {
        let find = |name| arch::find(name).expect("a supported architecture");
        let rope = |dim, base| Rope {
            dim,
            base,
            style: if self == Shape::Llama32_1B {
                RopeStyle::Norm
            } else {
                RopeStyle::Neox
            },
            freq_scale: 1.0,
            freqs: false,
            long_rope: None,
        };
        let attention = |n_head, n_head_kv, head_dim, rope_dim, base| Attention {
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v: head_dim,
            rope: Some(rope(rope_dim, base)),
            qkv_bias: false,
            qk_norm: false,
            output_gate: false,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
            fused_qkv: false,
            out_bias: false,
        };
        let dense = |mixer: Attention, n_ff| Layer {
            mixer: Mixer::Attention(mixer),
            ffn_norm: Role::FfnNorm,
            ffn: Ffn::SiluGated { n_ff },
            post_norms: false,
        };
        let mut n_embd = 1024;
        let (arch, layers) = match self {
            Shape::Qwen2 => {
                let a = Attention {
                    qkv_bias: true,
                    ..attention(16, 2, 64, 64, 1e6)
                };
                (find("qwen2"), vec![dense(a, 2816); n_layer])
            }
            Shape::Qwen3_0_6B => {
                let a = Attention {
                    qk_norm: true,
                    ..attention(16, 8, 128, 128, 1e6)
                };
                (find("qwen3"), vec![dense(a, 3072); n_layer])
            }
            Shape::Qwen3_100M => {
                n_embd = 512;
                let a = Attention {
                    qk_norm: true,
                    ..attention(4, 2, 128, 128, 1e6)
                };
                (find("qwen3"), vec![dense(a, 1536); n_layer])
            }
            Shape::Llama32_1B => {
                n_embd = 2048;
                (
                    find("llama"),
                    vec![dense(attention(32, 8, 64, 64, 5e5), 8192); n_layer],
                )
            }
            Shape::Qwen35_0_8B => {
                assert!(
                    n_layer >= 4,
                    "Qwen3.5's first attention layer is its fourth"
                );
                let full = Attention {
                    qk_norm: true,
                    output_gate: true,
                    ..attention(8, 2, 256, 64, 1e7)
                };
                let delta = DeltaNet {
                    n_k_heads: 16,
                    n_v_heads: 16,
                    head_k_dim: 128,
                    head_v_dim: 128,
                    conv_kernel: 4,
                };
                let layers = (0..n_layer)
                    .map(|l| Layer {
                        mixer: if (l + 1) % 4 == 0 {
                            Mixer::Attention(full.clone())
                        } else {
                            Mixer::DeltaNet(delta.clone())
                        },
                        ffn_norm: Role::PostAttnNorm,
                        ffn: Ffn::SiluGated { n_ff: 3584 },
                        post_norms: false,
                    })
                    .collect();
                (find("qwen35"), layers)
            }
        };
        ModelSpec {
            arch,
            n_vocab,
            n_embd,
            embd_scale: 1.0,
            rms_eps: 1e-6,
            // Room for a 512-token prompt and its continuation, not the real models' length:
            // nothing here is trained for long contexts.
            context_length: 4096,
            output_norm: Role::OutputNorm,
            head: Role::TokenEmbd,
            rope_freqs: false,
            layers,
        }
    }
}

/// Tokens in the vocabulary of `source` (a GGUF header with a tokenizer).
pub fn n_vocab(source: &Gguf) -> io::Result<usize> {
    source
        .get_array("tokenizer.ggml.tokens")
        .map(|a| a.len())
        .ok_or_else(|| io::Error::other("the source has no tokenizer.ggml.tokens"))
}

/// Rows quantized at a time, so the f32 values of a large tensor are never all in memory.
const ROWS_PER_CHUNK: usize = 2048;

#[derive(Clone, Copy)]
enum Fill {
    /// Uniform in +-1/sqrt(row length): activations keep their scale through the layers.
    Matrix,
    /// Near 1.
    Norm,
    /// Near 0.
    Bias,
    /// `-exp(U(-2, 0))`: a decay rate per value head, as `ssm_a = -exp(A_log)` is stored.
    Decay,
}

impl Fill {
    fn of(role: Role) -> Fill {
        use Role::*;
        match role {
            TokenEmbd | PositionEmbd | Output | AttnQ | AttnK | AttnV | AttnOutput | FfnGate
            | FfnUp | FfnDown | AttnQkv | AttnGate | SsmBeta | SsmAlpha | SsmOut
            | ShortConvInProj | ShortConvOutProj => Fill::Matrix,
            // A depthwise kernel: each channel's row is its taps.
            SsmConv1d | ShortConvConv => Fill::Matrix,
            OutputNorm | TokenEmbdNorm | AttnNorm | AttnQNorm | AttnKNorm | FfnNorm
            | PostAttnNorm | FfnPostNorm | SsmNorm | RopeFreqs | RopeFactorsLong
            | RopeFactorsShort => Fill::Norm,
            AttnQBias | AttnKBias | AttnVBias | AttnQkvBias | SsmDt | OutputNormBias
            | AttnNormBias | AttnOutputBias | FfnNormBias | FfnUpBias | FfnDownBias => Fill::Bias,
            SsmA => Fill::Decay,
        }
    }

    fn draw(self, row: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        match self {
            Fill::Matrix => {
                let a = 1.0 / (row as f32).sqrt();
                (0..n).map(|_| rng.random_range(-a..a)).collect()
            }
            Fill::Norm => (0..n).map(|_| 1.0 + rng.random_range(-0.1..0.1)).collect(),
            Fill::Bias => (0..n).map(|_| rng.random_range(-0.1..0.1)).collect(),
            Fill::Decay => (0..n)
                .map(|_| -rng.random_range(-2.0f32..0.0).exp())
                .collect(),
        }
    }
}

/// The metadata keys `spec`'s architecture reads, then the tokenizer of `source`.
fn metadata(spec: &ModelSpec, source: &Gguf) -> io::Result<Vec<(String, Value)>> {
    let arch = spec.arch.name;
    let count = |n: usize| Value::U32(n as u32);
    let mut arch_keys = vec![
        ("block_count", count(spec.n_layer())),
        ("context_length", count(spec.context_length)),
        ("embedding_length", count(spec.n_embd)),
        ("attention.layer_norm_rms_epsilon", Value::F32(spec.rms_eps)),
    ];
    if let Some(l) = spec.layers.first() {
        arch_keys.push(("feed_forward_length", count(l.ffn.n_ff())));
    }
    if let Some(a) = spec.attention_layers().next() {
        arch_keys.extend([
            ("attention.head_count", count(a.n_head)),
            ("attention.head_count_kv", count(a.n_head_kv)),
            ("attention.key_length", count(a.head_dim)),
            ("attention.value_length", count(a.head_dim_v)),
        ]);
    }
    if let Some(r) = spec.attention_layers().find_map(|a| a.rope) {
        arch_keys.extend([
            ("rope.dimension_count", count(r.dim)),
            ("rope.freq_base", Value::F32(r.base)),
        ]);
    }
    if let Some(d) = spec.delta_net_layers().next() {
        let interval = spec
            .layers
            .iter()
            .position(|l| l.attention().is_some())
            .map_or(spec.n_layer(), |i| i + 1);
        arch_keys.extend([
            ("ssm.conv_kernel", count(d.conv_kernel)),
            ("ssm.state_size", count(d.head_k_dim)),
            ("ssm.inner_size", count(d.value_dim())),
            ("ssm.time_step_rank", count(d.n_v_heads)),
            ("ssm.group_count", count(d.n_k_heads)),
            ("full_attention_interval", count(interval)),
        ]);
        // How Qwen3.5's rope splits its rotated pairs among text position, image height and
        // width, as the converter writes it: for text Hearth reads plain partial rope, but
        // llama.cpp requires the key.
        if let Some(r) = spec.attention_layers().find_map(|a| a.rope) {
            let pairs = r.dim as i32 / 2;
            let sections = vec![(pairs + 2) / 3, (pairs + 1) / 3, pairs / 3, 0];
            arch_keys.push((
                "rope.dimension_sections",
                Value::Array(Array::I32(sections)),
            ));
        }
    }
    let mut out = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (
            "general.name".to_string(),
            Value::String(format!("Random {arch}, {} layers", spec.n_layer())),
        ),
        ("general.file_type".to_string(), Value::U32(15)),
        ("general.quantization_version".to_string(), Value::U32(2)),
    ];
    out.extend(
        arch_keys
            .into_iter()
            .map(|(k, v)| (format!("{arch}.{k}"), v)),
    );
    let tokens = n_vocab(source)?;
    if tokens != spec.n_vocab {
        return Err(io::Error::other(format!(
            "the tokenizer has {tokens} tokens, the model {}",
            spec.n_vocab
        )));
    }
    out.extend(
        source
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned(),
    );
    Ok(out)
}

/// What the file of a spec holds.
struct Layout {
    metadata: Vec<(String, Value)>,
    /// Each tensor's name, dims and Q4_K_M type.
    tensors: Vec<TensorToWrite>,
    /// How each tensor's values are drawn.
    fills: Vec<Fill>,
}

impl Layout {
    fn new(spec: &ModelSpec, source: &Gguf) -> io::Result<Self> {
        let (tensors, fills) = spec
            .expected_tensors()
            .into_iter()
            .map(|(id, dims)| {
                let info = TensorInfo {
                    name: id.name(),
                    dims: dims.clone(),
                    ty: GgmlType::F32,
                    offset: 0,
                    n_bytes: 0,
                };
                let ty = target_type(&info, Scheme::Q4KM, spec.n_layer(), !spec.tied_output());
                let t = TensorToWrite {
                    name: info.name,
                    dims,
                    ty,
                };
                (t, Fill::of(id.role))
            })
            .unzip();
        Ok(Layout {
            metadata: metadata(spec, source)?,
            tensors,
            fills,
        })
    }
}

/// The header [`write`] writes for `spec`, parsed, without drawing any weights.
pub fn header(spec: &ModelSpec, source: &Gguf) -> io::Result<Gguf> {
    let Layout {
        metadata, tensors, ..
    } = Layout::new(spec, source)?;
    let mut bytes = Vec::new();
    // The writer streams: the whole header is out before the first tensor's bytes are asked
    // for, and refusing them ends the file there.
    let stop = "header only";
    match write_gguf(&mut bytes, &metadata, &tensors, |_| {
        Err(io::Error::other(stop))
    }) {
        Err(e) if e.to_string() == stop => {}
        Err(e) => return Err(e),
        Ok(()) => return Err(io::Error::other("the writer asked for no tensor bytes")),
    }
    let data: u64 = tensors
        .iter()
        .map(|t| {
            let n = t.ty.bytes_for(t.dims.iter().product()).unwrap_or(0);
            n.next_multiple_of(32)
        })
        .sum();
    let file_len = (bytes.len() as u64).next_multiple_of(32) + data;
    Gguf::parse(&bytes, file_len).map_err(io::Error::other)
}

/// Writes the model `spec` describes to `path`, with the tokenizer of `source` (a GGUF
/// header whose vocabulary has `spec.n_vocab` tokens); `seed` fixes the weights.
pub fn write(path: &Path, spec: &ModelSpec, source: &Gguf, seed: u64) -> io::Result<()> {
    let layout = Layout::new(spec, source)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    write_gguf(&mut out, &layout.metadata, &layout.tensors, |i| {
        let (t, fill) = (&layout.tensors[i], layout.fills[i]);
        let row = t.dims[0] as usize;
        let rows = (t.dims.iter().product::<u64>() as usize) / row;
        let mut bytes = Vec::new();
        for start in (0..rows).step_by(ROWS_PER_CHUNK) {
            let n = ROWS_PER_CHUNK.min(rows - start);
            let values = fill.draw(row, n * row, &mut rng);
            bytes.extend(quantize(t.ty, &values).map_err(io::Error::other)?);
        }
        Ok::<_, io::Error>(bytes)
    })?;
    out.flush()
}
