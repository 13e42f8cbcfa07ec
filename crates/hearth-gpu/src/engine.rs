//! A loaded model on either backend, behind one interface: the CPU reference forward pass or
//! the GPU engine. Both keep a KV cache that can be cut back to a shared prefix.

use hearth_core::gguf::{ByteSource, GgufFile};
use hearth_core::model::{CpuModel, KvCache, ModelError, ModelSpec};
use hearth_core::sampling::{Sampler, Want};

use crate::kernels::TOP_K;
use crate::{Gpu, GpuError, GpuModel};

// One per loaded model, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Cpu {
        model: CpuModel,
        cache: KvCache,
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
        let cache = model.new_cache(context_length);
        Ok(Backend::Cpu {
            model,
            cache,
            weight_bytes,
        })
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

    /// Positions in the KV cache.
    pub fn positions(&self) -> usize {
        match self {
            Backend::Cpu { cache, .. } => cache.len(),
            Backend::Gpu { model, .. } => model.len(),
        }
    }

    /// Most positions the KV cache holds.
    pub fn capacity(&self) -> usize {
        match self {
            Backend::Cpu { cache, .. } => cache.capacity(),
            Backend::Gpu { model, .. } => model.capacity(),
        }
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        match self {
            Backend::Cpu { model, cache, .. } => cache.truncate(len, &model.spec),
            Backend::Gpu { model, .. } => model.truncate(len),
        }
    }

    /// Runs `tokens` at the next positions; the logits of the last one.
    pub async fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        match self {
            Backend::Cpu { model, cache, .. } => Ok(model.forward(cache, tokens)?),
            Backend::Gpu { model, .. } => model.forward(tokens).await,
        }
    }

    /// Runs `tokens` at the next positions and chooses the token after them with `sampler`.
    /// The GPU reads back only what the sampler's options need: the token's id when greedy,
    /// the best [`TOP_K`] tokens where those suffice, every logit otherwise.
    pub async fn next_token(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
    ) -> Result<u32, GpuError> {
        let model = match self {
            Backend::Cpu { model, cache, .. } => {
                return Ok(sampler.sample(&model.forward(cache, tokens)?)?)
            }
            Backend::Gpu { model, .. } => model,
        };
        match sampler.wants() {
            Want::Argmax => model.forward_greedy(tokens).await,
            Want::Top { k } if k <= TOP_K => {
                let top = model.forward_top(tokens).await?;
                match sampler.sample_top(&top, model.spec.n_vocab)? {
                    Some(id) => Ok(id),
                    None => Ok(sampler.sample(&model.last_logits().await?)?),
                }
            }
            _ => Ok(sampler.sample(&model.forward(tokens).await?)?),
        }
    }

    /// Bytes of memory the model holds (host memory for the CPU, GPU memory for the GPU).
    pub fn held_bytes(&self) -> u64 {
        match self {
            Backend::Cpu {
                model,
                cache,
                weight_bytes,
            } => {
                let s = &model.spec;
                weight_bytes + (cache.len() * s.n_layer * (s.k_dim() + s.v_dim()) * 4) as u64
            }
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
