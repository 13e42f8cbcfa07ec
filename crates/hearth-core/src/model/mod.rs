//! Transformer models: the tensors they read, by role ([`tensor`]), what each architecture is
//! ([`arch`]) in the shared description ([`spec`]), its weights ([`weights`]) and the CPU
//! reference forward pass ([`cpu`]).

pub mod arch;
pub mod cpu;
mod meta;
pub mod requantize;
pub mod shard;
pub mod spec;
pub mod tensor;
pub mod weights;

pub use arch::Arch;
pub use cpu::{CpuModel, State};
pub use shard::{Answers, Link, Peers, Request, Requests, Shard, REQUEST_WORDS};
pub use spec::{
    Attention, DeltaNet, Ffn, Layer, LongRope, Mixer, ModelSpec, Norm, Rope, RopeStyle, ShortConv,
};
pub use tensor::{Role, TensorId};
pub use weights::{Products, QTensor, Weights, WeightsBuilder};

use crate::gguf::SourceError;
use crate::quant::QuantError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the file names no architecture (general.architecture is missing)")]
    NoArchitecture,
    #[error("architecture {0:?} is not supported (supported: {list})", list = arch::supported())]
    UnsupportedArchitecture(String),
    #[error("metadata key {0:?} is missing or has the wrong type")]
    MissingKey(String),
    #[error("invalid hyper-parameter: {0}")]
    BadHyperParameter(String),
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {got:?} where {want:?} is expected")]
    BadShape {
        name: String,
        got: Vec<u64>,
        want: Vec<u64>,
    },
    #[error("tensor {name:?}: {source}")]
    Quant { name: String, source: QuantError },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("reading the model failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("the context is full: {len} positions of {max}")]
    ContextFull { len: usize, max: usize },
}
