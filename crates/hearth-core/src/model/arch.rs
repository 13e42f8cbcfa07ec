//! What distinguishes each supported architecture. Everything architecture-specific (tensor
//! names, rope convention, which optional pieces must be present) lives here and only here.

use super::spec::RopeStyle;
use super::ModelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3.x, SmolLM2, TinyLlama, Mistral.
    Llama,
    /// Qwen2 and Qwen2.5: biases on Q, K and V.
    Qwen2,
    /// Qwen3: RMS norm over each head of Q and K before rope.
    Qwen3,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Self, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The GGUF name, which also prefixes the architecture's metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// llama.cpp's converter permutes llama's Q and K rows so that rotary pairs are adjacent;
    /// the Qwen families keep Hugging Face's halves.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Norm,
            Arch::Qwen2 | Arch::Qwen3 => RopeStyle::Neox,
        }
    }

    /// Whether Q, K and V must carry biases (they are used whenever present).
    pub fn requires_qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// Whether Q and K are RMS-normed per head.
    pub fn has_qk_norm(self) -> bool {
        self == Arch::Qwen3
    }
}

/// GGUF tensor names shared by the supported architectures.
pub mod names {
    pub const TOKEN_EMBD: &str = "token_embd.weight";
    pub const OUTPUT_NORM: &str = "output_norm.weight";
    pub const OUTPUT: &str = "output.weight";
    pub const ROPE_FREQS: &str = "rope_freqs.weight";

    /// The name of tensor `what` (such as "attn_q.weight") of layer `layer`.
    pub fn layer(layer: usize, what: &str) -> String {
        format!("blk.{layer}.{what}")
    }
}
