//! The tensors a model reads, by role. A role owns its GGUF name; no other code spells one.
//! Each role is one row of the table below: its name, how the backends hold it, and whether a
//! file has one (global) or one per layer.

/// How the backends hold a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Multiplied in its block format (weights, embeddings, heads).
    Matrix,
    /// Decoded to f32 once (norms, biases, small per-head tables).
    Vector,
}

#[derive(PartialEq)]
enum Scope {
    Global,
    Layer,
}

macro_rules! roles {
    ($($(#[$doc:meta])* $role:ident = $name:literal, $usage:ident, $scope:ident;)*) => {
        /// What a tensor is for. Global roles name one tensor; layer roles one per layer.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Role {
            $($(#[$doc])* $role,)*
        }

        impl Role {
            pub const ALL: &'static [Role] = &[$(Role::$role),*];

            /// The name after `blk.N.` (or the whole name of a global tensor).
            pub fn gguf_name(self) -> &'static str {
                match self {
                    $(Role::$role => $name,)*
                }
            }

            pub fn usage(self) -> Use {
                match self {
                    $(Role::$role => Use::$usage,)*
                }
            }

            pub fn is_global(self) -> bool {
                match self {
                    $(Role::$role => Scope::$scope == Scope::Global,)*
                }
            }
        }
    };
}

roles! {
    TokenEmbd = "token_embd.weight", Matrix, Global;
    /// Learned absolute positions (GPT-2): one row per position of the context.
    PositionEmbd = "position_embd.weight", Matrix, Global;
    OutputNorm = "output_norm.weight", Vector, Global;
    /// The final norm under the name LFM2's converter gives it.
    TokenEmbdNorm = "token_embd_norm.weight", Vector, Global;
    OutputNormBias = "output_norm.bias", Vector, Global;
    Output = "output.weight", Matrix, Global;
    /// Llama 3's per-frequency rope divisors.
    RopeFreqs = "rope_freqs.weight", Vector, Global;
    /// LongRoPE's per-frequency divisors for contexts past the original one (Phi-3).
    RopeFactorsLong = "rope_factors_long.weight", Vector, Global;
    /// LongRoPE's per-frequency divisors for contexts up to the original one (Phi-3).
    RopeFactorsShort = "rope_factors_short.weight", Vector, Global;

    AttnNorm = "attn_norm.weight", Vector, Layer;
    AttnNormBias = "attn_norm.bias", Vector, Layer;
    AttnQ = "attn_q.weight", Matrix, Layer;
    AttnK = "attn_k.weight", Matrix, Layer;
    AttnV = "attn_v.weight", Matrix, Layer;
    AttnQBias = "attn_q.bias", Vector, Layer;
    AttnKBias = "attn_k.bias", Vector, Layer;
    AttnVBias = "attn_v.bias", Vector, Layer;
    AttnQNorm = "attn_q_norm.weight", Vector, Layer;
    AttnKNorm = "attn_k_norm.weight", Vector, Layer;
    AttnOutput = "attn_output.weight", Matrix, Layer;
    AttnOutputBias = "attn_output.bias", Vector, Layer;

    FfnNorm = "ffn_norm.weight", Vector, Layer;
    FfnNormBias = "ffn_norm.bias", Vector, Layer;
    /// The norm before the feed-forward block, under the name Qwen3.5's converter gives it;
    /// in Gemma, the norm of the attention output.
    PostAttnNorm = "post_attention_norm.weight", Vector, Layer;
    FfnGate = "ffn_gate.weight", Matrix, Layer;
    FfnUp = "ffn_up.weight", Matrix, Layer;
    FfnDown = "ffn_down.weight", Matrix, Layer;
    /// The norm of the feed-forward block's output (Gemma; its mixer's is `PostAttnNorm`).
    FfnPostNorm = "post_ffw_norm.weight", Vector, Layer;
    FfnUpBias = "ffn_up.bias", Vector, Layer;
    FfnDownBias = "ffn_down.bias", Vector, Layer;

    /// Q, K and V in one projection: fused attention (split at load), or Gated DeltaNet's
    /// input to its convolution.
    AttnQkv = "attn_qkv.weight", Matrix, Layer;
    /// The bias of a fused attention's Q, K and V (split at load).
    AttnQkvBias = "attn_qkv.bias", Vector, Layer;
    /// Gated DeltaNet: z, the output gate of the gated norm.
    AttnGate = "attn_gate.weight", Matrix, Layer;
    SsmConv1d = "ssm_conv1d.weight", Vector, Layer;
    SsmDt = "ssm_dt.bias", Vector, Layer;
    /// `-exp(A_log)`, as the converter stores it.
    SsmA = "ssm_a", Vector, Layer;
    SsmBeta = "ssm_beta.weight", Matrix, Layer;
    SsmAlpha = "ssm_alpha.weight", Matrix, Layer;
    SsmNorm = "ssm_norm.weight", Vector, Layer;
    SsmOut = "ssm_out.weight", Matrix, Layer;

    /// Short convolution (LFM2): the `[B | C | x]` projection, the depthwise kernel and the
    /// output projection.
    ShortConvInProj = "shortconv.in_proj.weight", Matrix, Layer;
    ShortConvConv = "shortconv.conv.weight", Vector, Layer;
    ShortConvOutProj = "shortconv.out_proj.weight", Matrix, Layer;
}

impl Role {
    /// The bias of a norm, where the model's norm has one (LayerNorm).
    pub fn norm_bias(self) -> Option<Role> {
        match self {
            Role::OutputNorm => Some(Role::OutputNormBias),
            Role::AttnNorm => Some(Role::AttnNormBias),
            Role::FfnNorm => Some(Role::FfnNormBias),
            _ => None,
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
            .iter()
            .copied()
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
