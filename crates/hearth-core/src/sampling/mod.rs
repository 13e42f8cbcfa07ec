//! Choosing the next token from logits, and the generation loop's bookkeeping around it.
//!
//! [`Sampler`] applies, in order: logit bias; repetition, frequency and presence penalties over
//! the recent tokens; then greedy choice when the temperature is 0, else temperature scaling,
//! top-k, top-p, min-p and a draw from the rest. Temperature comes before the truncations, as
//! in Hugging Face `transformers`, so top-p and min-p see the distribution that is sampled.
//! Draws come from ChaCha20 seeded with [`SamplingOptions::seed`]: a seed reproduces a sequence.
//!
//! [`Generator`] adds what a streaming generate loop needs: stop tokens, stop strings matched
//! across token boundaries (never emitted), a token budget and incremental text.

mod generator;
mod options;
mod sampler;
mod stop;
#[cfg(test)]
mod tests;

pub use generator::{FinishReason, GenerateOptions, Generator, Step};
pub use options::SamplingOptions;
pub use sampler::{Sampler, Want};
pub use stop::StopMatcher;

use crate::constrain::ConstraintError;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("temperature must be a finite number >= 0, not {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], not {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1], not {0}")]
    MinP(f32),
    #[error("repeat_penalty must be a finite number > 0, not {0}")]
    RepeatPenalty(f32),
    #[error("frequency_penalty must be a finite number, not {0}")]
    FrequencyPenalty(f32),
    #[error("presence_penalty must be a finite number, not {0}")]
    PresencePenalty(f32),
    #[error("the logit bias for token {id} must be finite or -inf (to ban it), not {bias}")]
    LogitBias { id: u32, bias: f32 },
    #[error("the logit bias names token {id}, outside the vocabulary of {n_vocab}")]
    LogitBiasOutOfRange { id: u32, n_vocab: usize },
    #[error("max_tokens must be at least 1")]
    MaxTokens,
    #[error("a stop string must not be empty")]
    EmptyStop,
    #[error("there are no logits to sample from")]
    EmptyLogits,
    #[error("the logits contain NaN (at token {0})")]
    NanLogit(usize),
    #[error("every token is banned: no logit is above -inf")]
    NothingToSample,
    #[error("generation has already finished")]
    Finished,
    #[error("token {0} is not allowed by the output format")]
    Disallowed(u32),
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
}
