//! GPT-2: learned absolute positions, LayerNorm with bias, one fused Q/K/V projection with
//! bias, a GELU MLP with biases, and the head tied to the embedding (llama.cpp's `gpt2`).
//! The converter transposes GPT-2's Conv1D weights, so they are stored as any other.

use super::{read_attention, Arch, Meta};
use crate::model::spec::{Ffn, Layer, Mixer, Norm, RopeStyle};
use crate::model::tensor::Role;
use crate::model::ModelError;

pub const GPT2: Arch = Arch {
    name: "gpt2",
    models: "GPT-2",
    layers,
    norm: Norm::Layer,
    learned_positions: true,
    scale_embd: false,
};

fn layers(m: &Meta, n_layer: usize) -> Result<Vec<Layer>, ModelError> {
    let mut attention = read_attention(m, RopeStyle::Norm, true, false, false)?;
    // Positions are in the embedding; attention encodes none.
    attention.rope = None;
    attention.fused_qkv = true;
    attention.out_bias = true;
    let layer = Layer {
        mixer: Mixer::Attention(attention),
        ffn_norm: Role::FfnNorm,
        post_norms: false,
        ffn: Ffn::Gelu {
            n_ff: m.required("feed_forward_length")?,
        },
    };
    Ok(vec![layer; n_layer])
}
