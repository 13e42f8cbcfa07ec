//! Errors a page can act on: each carries a stable `code` that the JS side turns into a typed
//! error.

use hearth_core::gguf::{GgufError, SourceError};
use hearth_core::model::arch;
use hearth_core::model::ModelError;
use hearth_core::quant::QuantError;
use hearth_core::tokenizer::TokenizerError;
use hearth_gpu::GpuError;
use serde::Serialize;
use wasm_bindgen::JsValue;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    NotGguf(String),
    #[error("{0}")]
    InvalidModel(String),
    /// `found`: the file's `general.architecture`, if it names one.
    #[error("{message}")]
    UnsupportedArchitecture {
        message: String,
        found: Option<String>,
    },
    #[error("{0}")]
    UnsupportedQuantization(String),
    #[error("{0}")]
    UnsupportedTokenizer(String),
    #[error("the model needs {need} bytes of memory; {limit} are available here")]
    TooLarge { need: u64, limit: u64 },
    #[error("{0}")]
    GpuTooLarge(String),
    #[error("out of memory: {0} more bytes could not be allocated")]
    OutOfMemory(u64),
    #[error("{0}")]
    GpuOutOfMemory(String),
    #[error("{0}")]
    DeviceLost(String),
    #[error("{0}")]
    NoGpu(String),
    #[error("{0}")]
    Gpu(String),
    #[error("{0}")]
    ContextFull(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the engine is busy with another request")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    /// The stable name the JS API exposes as `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            WebError::NotGguf(_) => "not_gguf",
            WebError::InvalidModel(_) => "invalid_model",
            WebError::UnsupportedArchitecture { .. } => "unsupported_architecture",
            WebError::UnsupportedQuantization(_) => "unsupported_quantization",
            WebError::UnsupportedTokenizer(_) => "unsupported_tokenizer",
            WebError::TooLarge { .. } | WebError::GpuTooLarge(_) => "too_large",
            WebError::OutOfMemory(_) | WebError::GpuOutOfMemory(_) => "out_of_memory",
            WebError::DeviceLost(_) => "device_lost",
            WebError::NoGpu(_) => "no_webgpu",
            WebError::Gpu(_) => "gpu_error",
            WebError::ContextFull(_) => "context_full",
            WebError::BadRequest(_) => "bad_request",
            WebError::Busy => "busy",
            WebError::Internal(_) => "internal",
        }
    }
}

/// One architecture Hearth runs, as the package reports it (`Hearth.architectures()` and the
/// `supported` list of an `unsupported_architecture` error).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Architecture {
    /// The GGUF `general.architecture` name.
    pub name: &'static str,
    /// The model families that use it, for people ("Qwen2, Qwen2.5").
    pub models: &'static str,
}

/// Every architecture Hearth runs, read off the core's one list.
pub fn architectures() -> Vec<Architecture> {
    arch::all()
        .map(|a| Architecture {
            name: a.name,
            models: a.models,
        })
        .collect()
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> JsValue {
        let err = js_sys::Error::new(&e.to_string());
        // Setting a plain data property on a fresh Error cannot fail.
        let set = |key: &str, value: JsValue| js_sys::Reflect::set(&err, &key.into(), &value);
        let _ = set("code", e.code().into());
        if let WebError::UnsupportedArchitecture { found, .. } = &e {
            // What a page needs to say which models would work, without a copy of the list.
            let list =
                architectures().serialize(&serde_wasm_bindgen::Serializer::json_compatible());
            if let Ok(list) = list {
                let _ = set("supported", list);
            }
            if let Some(name) = found {
                let _ = set("architecture", name.as_str().into());
            }
        }
        err.into()
    }
}

impl From<GgufError> for WebError {
    fn from(e: GgufError) -> Self {
        match e {
            GgufError::BadMagic(_) | GgufError::UnsupportedVersion(_) => {
                WebError::NotGguf(e.to_string())
            }
            other => WebError::InvalidModel(other.to_string()),
        }
    }
}

impl From<ModelError> for WebError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NoArchitecture => WebError::UnsupportedArchitecture {
                message: e.to_string(),
                found: None,
            },
            ModelError::UnsupportedArchitecture(ref name) => WebError::UnsupportedArchitecture {
                found: Some(name.clone()),
                message: e.to_string(),
            },
            ModelError::Quant {
                source: QuantError::UnsupportedDequant(_),
                ..
            } => WebError::UnsupportedQuantization(e.to_string()),
            ModelError::ContextFull { .. } => WebError::ContextFull(e.to_string()),
            ModelError::TokenOutOfRange { .. } => WebError::BadRequest(e.to_string()),
            ModelError::Source(SourceError::Format(f)) => f.into(),
            other => WebError::InvalidModel(other.to_string()),
        }
    }
}

impl From<TokenizerError> for WebError {
    fn from(e: TokenizerError) -> Self {
        match e {
            TokenizerError::UnsupportedModel(_) | TokenizerError::UnsupportedPreTokenizer(_) => {
                WebError::UnsupportedTokenizer(e.to_string())
            }
            other => WebError::InvalidModel(other.to_string()),
        }
    }
}

impl From<GpuError> for WebError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::NoAdapter(_) | GpuError::RequestDevice(_) => WebError::NoGpu(e.to_string()),
            GpuError::OutOfMemory => WebError::GpuOutOfMemory(e.to_string()),
            GpuError::DeviceLost(_) => WebError::DeviceLost(e.to_string()),
            GpuError::UnsupportedType(_) => WebError::UnsupportedQuantization(e.to_string()),
            GpuError::TooLarge { .. } => WebError::GpuTooLarge(e.to_string()),
            GpuError::Validation(_) | GpuError::Map(_) | GpuError::Unsupported(_) => {
                WebError::Gpu(e.to_string())
            }
            // The file or the request, not the device: another backend fails the same way.
            GpuError::TensorSize { .. } | GpuError::UnexpectedTensor(_) => {
                WebError::InvalidModel(e.to_string())
            }
            GpuError::NoTokens => WebError::BadRequest(e.to_string()),
            GpuError::NotLoaded(_) => WebError::Internal(e.to_string()),
            GpuError::Model(m) => m.into(),
            GpuError::Sampling(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes the package's worker falls back to the CPU on (`GPU_FAILURES` in worker.js,
    /// and `no_webgpu` where no device opens) are the device failures of the GPU engine.
    #[test]
    fn device_failures_are_the_codes_the_worker_falls_back_on() {
        let worker = include_str!("../../../pkg/worker.js");
        let line = worker
            .lines()
            .find(|l| l.starts_with("const GPU_FAILURES = ["))
            .expect("worker.js lists GPU_FAILURES");
        let mut fallback: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
        fallback.push("no_webgpu");
        let errors = [
            GpuError::NoAdapter("x".into()),
            GpuError::RequestDevice("x".into()),
            GpuError::Validation("x".into()),
            GpuError::OutOfMemory,
            GpuError::DeviceLost("x".into()),
            GpuError::Map("x".into()),
            GpuError::Unsupported("x".into()),
            GpuError::UnsupportedType(hearth_core::quant::GgmlType::Q8_1),
            GpuError::TooLarge {
                what: "x".into(),
                bytes: 2,
                limit: 1,
            },
            GpuError::TensorSize { got: 1, want: 2 },
            GpuError::UnexpectedTensor("x".into()),
            GpuError::NotLoaded(1),
            GpuError::NoTokens,
            GpuError::Model(ModelError::NoArchitecture),
        ];
        for e in errors {
            let device = e.is_device_failure();
            let code = WebError::from(e).code();
            assert_eq!(device, fallback.contains(&code), "{code}");
        }
    }
}
