//! Gemma 3 (text): embeddings scaled by `sqrt(n_embd)`, a norm after the attention and after
//! the feed-forward block as well as before each, per-head Q/K norms, a GeGLU feed-forward
//! block, and five sliding-window (local) layers to each global one. The GGUF does not
//! record the pattern: llama.cpp fixes layer `il` as local when `il % 6 < 5`, as does
//! transformers' default `sliding_window_pattern` of 6. The converter has already added 1 to
//! every norm weight (Gemma scales by `1 + w`).

use super::{read_attention, Arch, Meta};
use crate::model::spec::{Attention, Ffn, Layer, Mixer, Norm, Rope, RopeStyle};
use crate::model::tensor::Role;
use crate::model::ModelError;

pub const GEMMA3: Arch = Arch {
    name: "gemma3",
    models: "Gemma 3",
    scale_embd: true,
    norm: Norm::Rms,
    learned_positions: false,
    layers,
};

/// Every sixth layer is global, the others local.
const PATTERN: usize = 6;

/// The rope base of local layers when the file names none (llama.cpp's and transformers').
const LOCAL_ROPE_BASE: f32 = 10000.0;

/// Gemma 3 27B's block count: the one size whose queries are scaled by
/// `1 / sqrt(n_embd / n_head)` (its `query_pre_attn_scalar`) rather than by the head's
/// dimension; llama.cpp tells it by this count too.
const LAYERS_27B: usize = 62;

fn layers(m: &Meta, n_layer: usize) -> Result<Vec<Layer>, ModelError> {
    let mut global = read_attention(m, RopeStyle::Neox, false, true, false)?;
    if n_layer == LAYERS_27B {
        let n_embd = m.required("embedding_length")?;
        global.scale = 1.0 / (n_embd as f32 / global.n_head as f32).sqrt();
    }
    let window = m.required("attention.sliding_window")?;
    let rope = global.rope.expect("read_attention gives a rope");
    // Rope scaling (Gemma 3 4B and larger) applies to the global layers only.
    let local = Attention {
        window: Some(window),
        rope: Some(Rope {
            base: m.float("rope.freq_base_swa")?.unwrap_or(LOCAL_ROPE_BASE),
            freq_scale: 1.0,
            ..rope
        }),
        ..global.clone()
    };
    let ffn = Ffn::GeluGated {
        n_ff: m.required("feed_forward_length")?,
    };
    Ok((0..n_layer)
        .map(|il| Layer {
            mixer: Mixer::Attention(if il % PATTERN < PATTERN - 1 {
                local.clone()
            } else {
                global.clone()
            }),
            ffn_norm: Role::FfnNorm,
            ffn: ffn.clone(),
            post_norms: true,
        })
        .collect())
}
