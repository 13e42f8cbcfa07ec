//! The kernels of `shaders/`: which variants exist and what they are made of ([`shaders`]),
//! the uniform blocks they read ([`uniforms`]), their compiled pipelines and the recorded
//! launches a plan is made of ([`pipelines`]), the functions that record each launch
//! ([`launches`]), and the buffers they use ([`buffers`]). Pipelines are created once, when a
//! model (or a test) sets up; nothing here runs per token.

pub mod buffers;
pub mod launches;
pub mod pipelines;
pub mod shaders;
pub mod uniforms;

pub use buffers::{scratch, storage_f32, uniform};
pub use launches::{
    delta_records_len, matrix_lanes, token_mask, TopLaunches, MAX_HEAD_V_DIM, TOP_K,
};
pub use pipelines::{grid, submit, Dispatch, Kernel, Kernels, Steps, STEP_STRIDE};
pub use shaders::{matvec_rows, super_block_path, DeltaPart, Features, Shader, Slot, COPY};
pub use uniforms::*;
