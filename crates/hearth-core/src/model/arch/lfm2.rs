//! LFM2 (Liquid AI): a hybrid of gated short-convolution layers and grouped-query attention
//! layers with Q/K norms and NeoX rope. The file says which layer is which only through
//! `attention.head_count_kv`, an array with 0 for each convolution layer.

use super::{read_attention_with, Arch, Meta};
use crate::model::meta::bad;
use crate::model::spec::{Ffn, Layer, Mixer, Norm, RopeStyle, ShortConv};
use crate::model::tensor::Role;
use crate::model::ModelError;

pub const LFM2: Arch = Arch {
    name: "lfm2",
    models: "LFM2",
    norm: Norm::Rms,
    learned_positions: false,
    scale_embd: false,
    layers,
};

fn layers(m: &Meta, n_layer: usize) -> Result<Vec<Layer>, ModelError> {
    let kv_heads = m
        .counts_per_layer("attention.head_count_kv", n_layer)?
        .ok_or_else(|| ModelError::MissingKey(m.key("attention.head_count_kv")))?;
    let conv_kernel = m.required("shortconv.l_cache")?;
    if conv_kernel < 2 {
        return Err(bad(format!("convolution kernel of {conv_kernel}")));
    }
    let conv = ShortConv {
        channels: m.required("embedding_length")?,
        conv_kernel,
    };
    let ffn = Ffn::SiluGated {
        n_ff: m.required("feed_forward_length")?,
    };
    kv_heads
        .into_iter()
        .map(|n_head_kv| {
            let mixer = match n_head_kv {
                0 => Mixer::ShortConv(conv.clone()),
                n => Mixer::Attention(read_attention_with(
                    m,
                    Some(n),
                    RopeStyle::Neox,
                    false,
                    true,
                    false,
                )?),
            };
            Ok(Layer {
                mixer,
                ffn_norm: Role::FfnNorm,
                post_norms: false,
                ffn: ffn.clone(),
            })
        })
        .collect()
}
