//! The generation loop's bookkeeping: stop tokens and strings, the token budget, incremental
//! text and an output format's token masks.

use std::sync::Arc;

use super::{Sampler, SamplingError, SamplingOptions, StopMatcher};
use crate::constrain::{Constraint, TokenMask};
use crate::tokenizer::{TextDecoder, Tokenizer};

/// Options of a whole generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub sampling: SamplingOptions,
    /// Most tokens to generate (at least 1).
    pub max_tokens: usize,
    /// Text that ends generation; it is not part of the output.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (they are then decoded as text).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingOptions::default(),
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (EOS, EOT, ...).
    EndOfGeneration,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The output format allowed no further token (a grammar that dead-ends).
    Constraint,
}

impl FinishReason {
    /// The one name each reason goes by, from the CLI's JSON to the package: OpenAI's, where
    /// an end-of-generation token and a stop string are both "stop".
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::EndOfGeneration | FinishReason::StopString => "stop",
            FinishReason::MaxTokens => "length",
            FinishReason::Constraint => "constraint",
        }
    }
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub token: u32,
    /// Text to show now (possibly empty).
    pub text: String,
    /// Set on the last step.
    pub finished: Option<FinishReason>,
}

/// The token-by-token state of a generation: feed it each position's logits with
/// [`step`](Self::step), run the model on the returned token, until `finished` is set.
pub struct Generator {
    tokenizer: Arc<Tokenizer>,
    sampler: Sampler,
    decoder: TextDecoder,
    stops: StopMatcher,
    max_tokens: usize,
    ignore_eos: bool,
    generated: Vec<u32>,
    finished: Option<FinishReason>,
    /// The output format, where there is one.
    constraint: Option<Constraint>,
}

impl Generator {
    /// `prompt` feeds the penalties; it is not decoded.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        opts: GenerateOptions,
        prompt: &[u32],
    ) -> Result<Self, SamplingError> {
        if opts.max_tokens == 0 {
            return Err(SamplingError::MaxTokens);
        }
        let mut sampler = Sampler::new(opts.sampling)?;
        for &t in prompt {
            sampler.accept(t);
        }
        Ok(Generator {
            tokenizer,
            sampler,
            decoder: TextDecoder::new(true),
            stops: StopMatcher::new(opts.stop)?,
            max_tokens: opts.max_tokens,
            ignore_eos: opts.ignore_eos,
            generated: Vec::new(),
            finished: None,
            constraint: None,
        })
    }

    /// Holds the output to a format (compiled by [`crate::constrain::Grammars`]).
    pub fn constrain(&mut self, constraint: Constraint) {
        self.constraint = Some(constraint);
    }

    /// Chooses the next token from `logits` and returns the text it completes.
    pub fn step(&mut self, logits: &[f32]) -> Result<Step, SamplingError> {
        if self.finished.is_some() {
            return Err(SamplingError::Finished);
        }
        let token = match self.choosing() {
            (sampler, Some(mask)) => {
                let mut logits = logits.to_vec();
                mask.apply(&mut logits);
                sampler.sample(&logits)?
            }
            (sampler, None) => sampler.sample(logits)?,
        };
        self.push(token)
    }

    /// The sampler and the tokens the next step may choose (`None`: any), for a backend that
    /// chooses the token itself (see [`Sampler::wants`]); hand the token it chose to
    /// [`push`](Self::push).
    pub fn choosing(&mut self) -> (&mut Sampler, Option<&TokenMask>) {
        let mask = self.constraint.as_ref().map(Constraint::allowed);
        (&mut self.sampler, mask)
    }

    /// Takes the next token, chosen with [`choosing`](Self::choosing),
    /// and returns the text it completes.
    pub fn push(&mut self, token: u32) -> Result<Step, SamplingError> {
        if self.finished.is_some() {
            return Err(SamplingError::Finished);
        }
        let mut ending = None;
        if let Some(constraint) = &mut self.constraint {
            if !constraint.allowed().allows(token) {
                return Err(SamplingError::Disallowed(token));
            }
            constraint.accept(token)?;
            if constraint.is_complete() {
                // The format is satisfied and allows nothing more: this ends the output as
                // an end-of-generation token would.
                ending = Some(FinishReason::EndOfGeneration);
            } else if constraint.allowed().is_empty() {
                ending = Some(FinishReason::Constraint);
            }
        }
        self.sampler.accept(token);
        self.generated.push(token);
        let at_end = !self.ignore_eos && self.tokenizer.is_stop(token);
        let piece = if at_end {
            String::new()
        } else {
            self.decoder.push(&self.tokenizer, token)
        };
        if at_end {
            ending = Some(FinishReason::EndOfGeneration);
        } else if ending.is_none() && self.generated.len() >= self.max_tokens {
            ending = Some(FinishReason::MaxTokens);
        }
        let (mut text, stopped) = self.stops.push(&piece);
        let finished = if stopped {
            Some(FinishReason::StopString)
        } else if let Some(ending) = ending {
            // Whatever is still held back is final now.
            let (rest, stopped) = self.stops.push(&self.decoder.finish());
            text.push_str(&rest);
            if stopped {
                Some(FinishReason::StopString)
            } else {
                text.push_str(&self.stops.flush());
                Some(ending)
            }
        } else {
            None
        };
        self.finished = finished;
        Ok(Step {
            token,
            text,
            finished,
        })
    }

    /// Every token chosen so far, including a final end-of-generation token.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    pub fn finished(&self) -> Option<FinishReason> {
        self.finished
    }
}
