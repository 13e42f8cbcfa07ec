//! The tensors a model reads, by role. A role owns its GGUF name; no other code spells one.

/// What a tensor is for. Global roles name one tensor; layer roles one per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    TokenEmbd,
    OutputNorm,
    Output,
    /// Llama 3's per-frequency rope divisors.
    RopeFreqs,

    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnQBias,
    AttnKBias,
    AttnVBias,
    AttnQNorm,
    AttnKNorm,
    AttnOutput,

    FfnNorm,
    /// The norm before the feed-forward block, under the name Qwen3.5's converter gives it.
    PostAttnNorm,
    FfnGate,
    FfnUp,
    FfnDown,

    /// Gated DeltaNet: the fused Q, K and V projection feeding the convolution.
    AttnQkv,
    /// Gated DeltaNet: z, the output gate of the gated norm.
    AttnGate,
    SsmConv1d,
    SsmDt,
    /// `-exp(A_log)`, as the converter stores it.
    SsmA,
    SsmBeta,
    SsmAlpha,
    SsmNorm,
    SsmOut,
}

/// How the backends hold a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Multiplied in its block format (weights, embeddings, heads).
    Matrix,
    /// Decoded to f32 once (norms, biases, small per-head tables).
    Vector,
}

impl Role {
    pub const ALL: [Role; 28] = {
        use Role::*;
        [
            TokenEmbd,
            OutputNorm,
            Output,
            RopeFreqs,
            AttnNorm,
            AttnQ,
            AttnK,
            AttnV,
            AttnQBias,
            AttnKBias,
            AttnVBias,
            AttnQNorm,
            AttnKNorm,
            AttnOutput,
            FfnNorm,
            PostAttnNorm,
            FfnGate,
            FfnUp,
            FfnDown,
            AttnQkv,
            AttnGate,
            SsmConv1d,
            SsmDt,
            SsmA,
            SsmBeta,
            SsmAlpha,
            SsmNorm,
            SsmOut,
        ]
    };

    /// The name after `blk.N.` (or the whole name of a global tensor).
    pub fn gguf_name(self) -> &'static str {
        use Role::*;
        match self {
            TokenEmbd => "token_embd.weight",
            OutputNorm => "output_norm.weight",
            Output => "output.weight",
            RopeFreqs => "rope_freqs.weight",
            AttnNorm => "attn_norm.weight",
            AttnQ => "attn_q.weight",
            AttnK => "attn_k.weight",
            AttnV => "attn_v.weight",
            AttnQBias => "attn_q.bias",
            AttnKBias => "attn_k.bias",
            AttnVBias => "attn_v.bias",
            AttnQNorm => "attn_q_norm.weight",
            AttnKNorm => "attn_k_norm.weight",
            AttnOutput => "attn_output.weight",
            FfnNorm => "ffn_norm.weight",
            PostAttnNorm => "post_attention_norm.weight",
            FfnGate => "ffn_gate.weight",
            FfnUp => "ffn_up.weight",
            FfnDown => "ffn_down.weight",
            AttnQkv => "attn_qkv.weight",
            AttnGate => "attn_gate.weight",
            SsmConv1d => "ssm_conv1d.weight",
            SsmDt => "ssm_dt.bias",
            SsmA => "ssm_a",
            SsmBeta => "ssm_beta.weight",
            SsmAlpha => "ssm_alpha.weight",
            SsmNorm => "ssm_norm.weight",
            SsmOut => "ssm_out.weight",
        }
    }

    pub fn is_global(self) -> bool {
        use Role::*;
        matches!(self, TokenEmbd | OutputNorm | Output | RopeFreqs)
    }

    pub fn usage(self) -> Use {
        use Role::*;
        match self {
            TokenEmbd | Output | AttnQ | AttnK | AttnV | AttnOutput | FfnGate | FfnUp | FfnDown
            | AttnQkv | AttnGate | SsmBeta | SsmAlpha | SsmOut => Use::Matrix,
            _ => Use::Vector,
        }
    }
}

/// One tensor of a model: a role, in a layer unless the role is global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorId {
    pub role: Role,
    pub layer: Option<usize>,
}

impl TensorId {
    pub fn global(role: Role) -> Self {
        TensorId { role, layer: None }
    }

    pub fn layer(layer: usize, role: Role) -> Self {
        TensorId {
            role,
            layer: Some(layer),
        }
    }

    /// The tensor a GGUF name stands for, if it is one Hearth reads.
    pub fn parse(name: &str) -> Option<Self> {
        let (layer, rest) = match name.strip_prefix("blk.") {
            Some(rest) => {
                let (l, rest) = rest.split_once('.')?;
                (Some(l.parse().ok()?), rest)
            }
            None => (None, name),
        };
        let role = Role::ALL
            .into_iter()
            .find(|r| r.gguf_name() == rest && r.is_global() == layer.is_none())?;
        Some(TensorId { role, layer })
    }

    /// The GGUF name, such as `blk.3.attn_q.weight`.
    pub fn name(self) -> String {
        match self.layer {
            None => self.role.gguf_name().to_string(),
            Some(l) => format!("blk.{l}.{}", self.role.gguf_name()),
        }
    }
}
