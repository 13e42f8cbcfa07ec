//! Hearth's pure-Rust core: GGUF files, quant block formats, model specs and a CPU reference
//! forward pass. No GPU and no JS here: this crate is the oracle every backend is checked against.

pub mod chat;
pub mod constrain;
pub mod gguf;
pub mod model;
pub mod quant;
pub mod sampling;
pub mod tokenizer;
