//! Hearth's WebGPU engine: device set-up ([`device`]), weights repacked and streamed into GPU
//! buffers ([`weights`]), the WGSL kernels of `shaders/` ([`kernels`]), and a model whose decode
//! step is one command submission per token ([`model`]). The same code runs natively (Vulkan,
//! Metal, DX12) and in browsers; nothing here blocks on the GPU except through `async` reads.

pub mod bench;
pub mod device;
pub mod engine;
pub mod kernels;
pub mod model;
mod plan;
pub mod recurrent;
pub mod weights;

pub use device::{Gpu, GpuOptions, Paths};
pub use engine::Backend;
pub use model::GpuModel;
pub use plan::CHUNK;

use hearth_core::model::ModelError;
use hearth_core::quant::GgmlType;
use hearth_core::sampling::SamplingError;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no WebGPU adapter: {0}")]
    NoAdapter(String),
    #[error("the WebGPU device could not be opened: {0}")]
    RequestDevice(String),
    #[error("WebGPU validation error: {0}")]
    Validation(String),
    #[error("the GPU ran out of memory")]
    OutOfMemory,
    #[error("the WebGPU device was lost: {0}")]
    DeviceLost(String),
    #[error("reading a GPU buffer back failed: {0}")]
    Map(String),
    #[error("the GPU engine does not run {0}")]
    Unsupported(String),
    #[error("tensor type {0} has no GPU kernel")]
    UnsupportedType(GgmlType),
    #[error("{what} needs {bytes} bytes in one binding; this device allows {limit}")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("tensor data of {got} bytes where {want} are expected")]
    TensorSize { got: u64, want: u64 },
    #[error("tensor {0:?} is not one the model is waiting for")]
    UnexpectedTensor(String),
    #[error("{0} of the model's tensors have not been loaded")]
    NotLoaded(usize),
    #[error("no tokens were given")]
    NoTokens,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
}

impl GpuError {
    /// Whether the device failed rather than the model or the request: no device, one over a
    /// limit or out of memory, a type or shape it has no kernel for, a lost or failing device.
    /// The CPU backend may run the same model.
    pub fn is_device_failure(&self) -> bool {
        use GpuError::*;
        match self {
            NoAdapter(_)
            | RequestDevice(_)
            | Validation(_)
            | OutOfMemory
            | DeviceLost(_)
            | Map(_)
            | Unsupported(_)
            | UnsupportedType(_)
            | TooLarge { .. } => true,
            TensorSize { .. }
            | UnexpectedTensor(_)
            | NotLoaded(_)
            | NoTokens
            | Model(_)
            | Sampling(_) => false,
        }
    }
}
