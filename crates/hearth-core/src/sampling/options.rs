//! The options of a sampler, checked before any token is drawn.

use super::SamplingError;

/// How to choose tokens. The default is greedy with no penalties. Deserialises from camelCase
/// keys, each optional (the browser runtime's options).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SamplingOptions {
    /// 0 picks the most likely token; higher flattens the distribution.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this; 1 is off.
    pub repeat_penalty: f32,
    /// Subtract this times a recent token's count from its logit; 0 is off.
    pub frequency_penalty: f32,
    /// Subtract this from the logit of every recent token; 0 is off.
    pub presence_penalty: f32,
    /// How many of the latest tokens the penalties look at; 0 turns them off.
    pub penalty_last_n: usize,
    /// Added to the logits of the given tokens (`[token, bias]` pairs); -inf bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingOptions {
    /// Checks every option; ids in the logit bias are checked against the logits when sampling.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::MinP(self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(SamplingError::RepeatPenalty(self.repeat_penalty));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(SamplingError::FrequencyPenalty(self.frequency_penalty));
        }
        if !self.presence_penalty.is_finite() {
            return Err(SamplingError::PresencePenalty(self.presence_penalty));
        }
        for &(id, bias) in &self.logit_bias {
            if !(bias.is_finite() || bias == f32::NEG_INFINITY) {
                return Err(SamplingError::LogitBias { id, bias });
            }
        }
        Ok(())
    }

    pub(super) fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}
