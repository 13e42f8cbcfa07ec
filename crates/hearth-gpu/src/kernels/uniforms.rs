//! The uniform blocks the kernels read, each the Rust mirror of a WGSL struct (checked field by
//! field against the shaders in `tests/shaders.rs`).

use bytemuck::{Pod, Zeroable};

/// Per-token parameters (common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Step {
    pub pos: u32,
    pub token: u32,
    /// Its row in the activation buffers: its index in a prompt chunk.
    pub row: u32,
    /// Tokens in its chunk.
    pub count: u32,
}

/// How a matrix-vector product stores its result (quant.wgsl's `Mat.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Store = 0,
    /// Adds to the output: the residual connection.
    Add = 1,
    /// Multiplies `silu(output)` by the product: the gated MLP's up projection after its gate.
    SiluGate = 2,
    /// Multiplies the output by `sigmoid(product)`: an attention output gate.
    SigmoidGate = 3,
    /// Multiplies the output by the product: a short convolution's gates.
    Mul = 4,
    /// Stores `gelu(product)`: the up projection of an ungated GELU MLP.
    Gelu = 5,
    /// Multiplies `gelu(output)` by the product: GeGLU's up projection after its gate.
    GeluGate = 6,
}

/// Uniform block of the matrix kernels (quant.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Mat {
    pub rows: u32,
    pub cols: u32,
    pub row_words: u32,
    pub scale_base: u32,
    pub row_offset: u32,
    pub mode: u32,
    pub has_bias: u32,
    pub pos_stride: u32,
    pub y_stride: u32,
    /// Slots of the KV cache written (positions wrap around them); 0 where nothing wraps.
    pub pos_ring: u32,
    /// The embedding lookup's factor on its row.
    pub out_scale: f32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NormParams {
    pub n: u32,
    pub eps: f32,
    /// Normalise row `step.row` into row 0 (the head after a prompt chunk).
    pub step_row: u32,
    /// Adds the normed row to the output (a post-norm into the residual).
    pub add: u32,
    /// LayerNorm: subtract the mean, and add the bias held after the weight.
    pub centred: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RopeParams {
    pub head_dim: u32,
    pub rope_dim: u32,
    pub neox: u32,
    pub has_norm: u32,
    pub eps: f32,
    pub pos_stride: u32,
    pub row_stride: u32,
    /// Slots of the KV cache roped in place; 0 where nothing wraps.
    pub pos_ring: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttnParams {
    pub n_head: u32,
    pub group: u32,
    pub head_dim: u32,
    pub head_dim_v: u32,
    pub k_dim: u32,
    pub v_dim: u32,
    /// Positions a token sees, itself included; 0 for all.
    pub window: u32,
    pub scale: f32,
    /// Slots of the KV cache: position p is in slot p % ring.
    pub ring: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct KvStoreParams {
    pub k_dim: u32,
    pub v_dim: u32,
    pub ring: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TopParams {
    pub n: u32,
    pub from_logits: u32,
    pub neg_inf: f32,
    pub masked: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ArgmaxParams {
    pub n: u32,
    pub masked: u32,
    pub _pad: [u32; 2],
}

/// Uniform block of conv.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub channels: u32,
    pub kernel: u32,
    /// 1 to apply SiLU to the output (the delta net), 0 for none (the short convolution).
    pub silu: u32,
    pub _pad: u32,
}

/// Uniform block of delta_net.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DeltaParams {
    pub n_k: u32,
    pub n_v: u32,
    pub conv_dim: u32,
    pub key_dim: u32,
    pub value_dim: u32,
    pub eps: f32,
    pub q_scale: f32,
    pub _pad: u32,
}
