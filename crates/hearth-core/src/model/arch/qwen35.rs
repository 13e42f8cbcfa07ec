//! Qwen3.5 (dense): a hybrid of Gated DeltaNet layers and gated full-attention layers; every
//! `full_attention_interval`-th layer is attention. Its rope is multi-section (`mrope`), which
//! for text, where every section sees the same position, is plain partial NeoX rope.
//! `block_count` also counts the multi-token-prediction blocks appended after the trunk
//! (`nextn_predict_layers`); they are not run.

use super::{read_attention, Arch, Meta};
use crate::model::meta::bad;
use crate::model::spec::{DeltaNet, Ffn, Layer, Mixer, Norm, RopeStyle};
use crate::model::tensor::Role;
use crate::model::ModelError;

pub const QWEN35: Arch = Arch {
    name: "qwen35",
    models: "Qwen3.5",
    scale_embd: false,
    layers,
    norm: Norm::Rms,
    learned_positions: false,
};

fn layers(m: &Meta, block_count: usize) -> Result<Vec<Layer>, ModelError> {
    let extra = m.count_or_zero("nextn_predict_layers")?;
    let n_layer = block_count
        .checked_sub(extra)
        .filter(|&n| n > 0)
        .ok_or_else(|| bad(format!("{extra} prediction blocks of {block_count} blocks")))?;
    let interval = m.count("full_attention_interval")?.unwrap_or(4);
    let attention = read_attention(m, RopeStyle::Neox, false, true, true)?;
    let n_v_heads = m.required("ssm.time_step_rank")?;
    let n_k_heads = m.required("ssm.group_count")?;
    let inner = m.required("ssm.inner_size")?;
    if n_v_heads % n_k_heads != 0 || inner % n_v_heads != 0 {
        return Err(bad(format!(
            "{n_v_heads} value heads over {n_k_heads} key heads and {inner} inner dimensions"
        )));
    }
    let conv_kernel = m.required("ssm.conv_kernel")?;
    if conv_kernel < 2 {
        return Err(bad(format!("convolution kernel of {conv_kernel}")));
    }
    let delta = DeltaNet {
        n_k_heads,
        n_v_heads,
        head_k_dim: m.required("ssm.state_size")?,
        head_v_dim: inner / n_v_heads,
        conv_kernel,
    };
    let ffn = Ffn::SiluGated {
        n_ff: m.required("feed_forward_length")?,
    };
    Ok((0..n_layer)
        .map(|il| Layer {
            mixer: if (il + 1) % interval == 0 {
                Mixer::Attention(attention.clone())
            } else {
                Mixer::DeltaNet(delta.clone())
            },
            ffn_norm: Role::PostAttnNorm,
            ffn: ffn.clone(),
            post_norms: false,
        })
        .collect())
}
