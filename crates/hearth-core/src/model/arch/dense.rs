//! Attention-only transformers that differ in a few choices: one row each.

use super::{read_attention, Arch, Meta};
use crate::model::spec::{Ffn, Layer, Mixer, Norm, RopeStyle};
use crate::model::tensor::{Role, TensorId};
use crate::model::ModelError;

/// The dense architectures; a new variant is a row here.
pub const ARCHS: &[Arch] = &[LLAMA, QWEN2, QWEN3, SMOLLM3, PHI3];

/// Llama 1/2/3.x, SmolLM2, TinyLlama, Mistral. llama.cpp's converter permutes Q and K rows so
/// that rotary pairs are adjacent; biases are used where a file has them.
pub const LLAMA: Arch = Arch {
    name: "llama",
    models: "Llama, SmolLM2, TinyLlama, Mistral",
    scale_embd: false,
    norm: Norm::Rms,
    learned_positions: false,
    layers: |m, n| dense(m, n, RopeStyle::Norm, Bias::IfPresent, false),
};

/// Qwen2 and Qwen2.5: biases on Q, K and V, rope over halves.
pub const QWEN2: Arch = Arch {
    name: "qwen2",
    models: "Qwen2, Qwen2.5",
    scale_embd: false,
    norm: Norm::Rms,
    learned_positions: false,
    layers: |m, n| dense(m, n, RopeStyle::Neox, Bias::Required, false),
};

/// Qwen3: RMS norm over each head of Q and K before rope.
pub const QWEN3: Arch = Arch {
    name: "qwen3",
    models: "Qwen3",
    scale_embd: false,
    norm: Norm::Rms,
    learned_positions: false,
    layers: |m, n| dense(m, n, RopeStyle::Neox, Bias::IfPresent, true),
};

/// SmolLM3: Llama whose every fourth layer (3, 7, 11, ...) has no rope (NoPE). Its GGUF
/// names no such layer: llama.cpp fixes the interval at 4 for `smollm3`
/// (`n_no_rope_layer_step`), the `no_rope_layer_interval` of SmolLM3's configuration.
pub const SMOLLM3: Arch = Arch {
    name: "smollm3",
    models: "SmolLM3",
    scale_embd: false,
    norm: Norm::Rms,
    learned_positions: false,
    layers: |m, n| {
        let mut layers = dense(m, n, RopeStyle::Norm, Bias::IfPresent, false)?;
        for layer in layers.iter_mut().skip(3).step_by(4) {
            if let Mixer::Attention(a) = &mut layer.mixer {
                a.rope = None;
            }
        }
        Ok(layers)
    },
};

/// Phi-3, Phi-3.5 and Phi-4-mini: Q, K and V in one tensor and the gate and up projections in
/// another (each split at load), rope over halves (over the leading 3/4 of each head in
/// Phi-4-mini), and LongRoPE where the file holds its factors. A non-zero
/// `attention.sliding_window` (Phi-3-mini-4k's 2047) windows every layer, as transformers
/// does; llama.cpp ignores it for phi3.
pub const PHI3: Arch = Arch {
    name: "phi3",
    models: "Phi-3, Phi-3.5, Phi-4-mini",
    scale_embd: false,
    norm: Norm::Rms,
    learned_positions: false,
    layers: |m, n| {
        let mut layers = dense(m, n, RopeStyle::Neox, Bias::IfPresent, false)?;
        let window = Some(m.count_or_zero("attention.sliding_window")?).filter(|&w| w > 0);
        for layer in &mut layers {
            if let Mixer::Attention(a) = &mut layer.mixer {
                a.fused_qkv = true;
                a.window = window;
            }
            layer.ffn = Ffn::SiluGatedFused {
                n_ff: layer.ffn.n_ff(),
            };
        }
        Ok(layers)
    },
};

enum Bias {
    Required,
    IfPresent,
}

fn dense(
    m: &Meta,
    n_layer: usize,
    style: RopeStyle,
    bias: Bias,
    qk_norm: bool,
) -> Result<Vec<Layer>, ModelError> {
    let q_bias = TensorId::layer(0, Role::AttnQBias).name();
    let has_bias = m.has_tensor(&q_bias);
    if matches!(bias, Bias::Required) && !has_bias {
        return Err(ModelError::MissingTensor(q_bias));
    }
    let attention = read_attention(m, style, has_bias, qk_norm, false)?;
    let layer = Layer {
        mixer: Mixer::Attention(attention),
        ffn_norm: Role::FfnNorm,
        ffn: Ffn::SiluGated {
            n_ff: m.required("feed_forward_length")?,
        },
        post_norms: false,
    };
    Ok(vec![layer; n_layer])
}
