//! A loaded model on either backend, behind one interface: the CPU reference forward pass or
//! the GPU engine. Both keep per-sequence state that can be cut back to a shared prefix.

use hearth_core::constrain::TokenMask;
use hearth_core::gguf::{ByteSource, GgufFile};
use hearth_core::model::{CpuModel, ModelError, ModelSpec, State};
use hearth_core::sampling::{Generator, Sampler, Step, Want};

use crate::kernels::TOP_K;
use crate::{Gpu, GpuError, GpuModel};

// One per loaded model, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Cpu {
        model: CpuModel,
        state: State,
        weight_bytes: u64,
    },
    Gpu {
        gpu: Gpu,
        model: GpuModel,
    },
}

impl Backend {
    /// Loads the CPU reference with a cache of `context_length` positions.
    pub fn load_cpu<S: ByteSource>(
        file: &GgufFile<S>,
        context_length: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, ModelError> {
        let mut weight_bytes = 0;
        let model = CpuModel::load(file, &mut |loaded, total| {
            weight_bytes = total;
            progress(loaded, total)
        })?;
        Ok(Self::cpu(model, context_length, weight_bytes))
    }

    /// The CPU engine over `model` (of `weight_bytes` in its file), with a cache of
    /// `context_length` positions.
    pub fn cpu(model: CpuModel, context_length: usize, weight_bytes: u64) -> Self {
        let state = model.new_state(context_length);
        Backend::Cpu {
            model,
            state,
            weight_bytes,
        }
    }

    /// Loads the model onto `gpu` with a cache of `context_length` positions.
    pub async fn load_gpu<S: ByteSource>(
        gpu: Gpu,
        file: &GgufFile<S>,
        context_length: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, GpuError> {
        let model = GpuModel::load(&gpu, file, context_length, progress).await?;
        Ok(Backend::Gpu { gpu, model })
    }

    /// "cpu" or "webgpu".
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu { .. } => "cpu",
            Backend::Gpu { .. } => "webgpu",
        }
    }

    pub fn spec(&self) -> &ModelSpec {
        match self {
            Backend::Cpu { model, .. } => &model.spec,
            Backend::Gpu { model, .. } => &model.spec,
        }
    }

    /// Positions in the sequence's state.
    pub fn positions(&self) -> usize {
        match self {
            Backend::Cpu { state, .. } => state.len(),
            Backend::Gpu { model, .. } => model.len(),
        }
    }

    /// Most positions the state holds.
    pub fn capacity(&self) -> usize {
        match self {
            Backend::Cpu { state, .. } => state.capacity(),
            Backend::Gpu { model, .. } => model.capacity(),
        }
    }

    /// Keeps at most the first `len` positions and returns how many it kept: fewer than `len`
    /// where recurrent state could only be restored from an earlier checkpoint. The caller
    /// runs the tokens from there on again.
    pub fn truncate(&mut self, len: usize) -> usize {
        match self {
            Backend::Cpu { state, .. } => state.truncate(len),
            Backend::Gpu { model, .. } => model.truncate(len),
        }
    }

    /// Remembers the recurrent state at the current position (where a prompt or a reply
    /// ended), so that a later [`Backend::truncate`] can continue from here.
    pub fn checkpoint(&mut self) {
        match self {
            Backend::Cpu { state, .. } => state.checkpoint(),
            Backend::Gpu { model, .. } => model.checkpoint(),
        }
    }

    /// Runs `tokens` at the next positions; the logits of the last one.
    pub async fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        match self {
            Backend::Cpu { model, state, .. } => Ok(model.forward_async(state, tokens).await?),
            Backend::Gpu { model, .. } => model.forward(tokens).await,
        }
    }

    /// Runs `tokens` at the next positions and chooses the token after them with `sampler`,
    /// among the tokens `mask` allows (the GPU applies it). The GPU reads back only what that
    /// needs: the token's id when greedy, the best [`TOP_K`] tokens where those suffice, every
    /// logit otherwise.
    pub async fn next_token(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
        mask: Option<&TokenMask>,
    ) -> Result<u32, GpuError> {
        let masked = |mut logits: Vec<f32>| {
            if let Some(mask) = mask {
                mask.apply(&mut logits);
            }
            logits
        };
        let model = match self {
            Backend::Cpu { model, state, .. } => {
                let logits = model.forward_async(state, tokens).await?;
                return Ok(sampler.sample(&masked(logits))?);
            }
            Backend::Gpu { model, .. } => model,
        };
        let words = mask.map(TokenMask::words);
        match sampler.wants() {
            Want::Argmax => model.forward_greedy(tokens, words).await,
            Want::Top { k: ..=TOP_K } => {
                let top = model.forward_top(tokens, words).await?;
                match sampler.sample_top(&top, model.spec.n_vocab)? {
                    Some(id) => Ok(id),
                    None => Ok(sampler.sample(&masked(model.last_logits().await?))?),
                }
            }
            _ => Ok(sampler.sample(&masked(model.forward(tokens).await?))?),
        }
    }

    /// Runs `tokens` at the next positions and takes `generator`'s next token.
    pub async fn step(
        &mut self,
        tokens: &[u32],
        generator: &mut Generator,
    ) -> Result<Step, GpuError> {
        let (sampler, mask) = generator.choosing();
        let token = self.next_token(tokens, sampler, mask).await?;
        Ok(generator.push(token)?)
    }

    /// Bytes of memory the model holds (host memory for the CPU, GPU memory for the GPU).
    pub fn held_bytes(&self) -> u64 {
        match self {
            Backend::Cpu {
                state,
                weight_bytes,
                ..
            } => weight_bytes + state.bytes(),
            Backend::Gpu { model, .. } => model.held_bytes(),
        }
    }

    /// The adapter and the optional features in use; `None` on the CPU.
    pub fn adapter(&self) -> Option<(String, Vec<&'static str>)> {
        match self {
            Backend::Cpu { .. } => None,
            Backend::Gpu { gpu, .. } => {
                let mut features = Vec::new();
                if gpu.paths.shader_f16 {
                    features.push("shader-f16");
                }
                if gpu.paths.subgroup_size.is_some() {
                    features.push("subgroups");
                }
                Some((gpu.describe(), features))
            }
        }
    }
}
