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

use std::collections::HashMap;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::tokenizer::{StreamDecoder, Tokenizer};

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
}

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

    fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// What a sampler needs to see of the logits, so a GPU need not read back the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The most likely token: greedy with nothing that changes the logits.
    Argmax,
    /// The `k` best tokens may do: [`Sampler::sample_top`] says whether a list suffices.
    Top { k: usize },
    /// Every logit.
    All,
}

/// Chooses tokens from logits; deterministic for a given seed and sequence of calls.
pub struct Sampler {
    opts: SamplingOptions,
    rng: ChaCha20Rng,
    /// The latest tokens, at most `penalty_last_n`.
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(opts: SamplingOptions) -> Result<Self, SamplingError> {
        opts.validate()?;
        let rng = ChaCha20Rng::seed_from_u64(opts.seed);
        Ok(Sampler {
            opts,
            rng,
            recent: Vec::new(),
        })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.opts
    }

    /// Records a token for the penalties: the prompt's and each one generated.
    pub fn accept(&mut self, token: u32) {
        let n = self.opts.penalty_last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() == n {
            self.recent.remove(0);
        }
        self.recent.push(token);
    }

    /// What of the logits [`sample`](Self::sample) needs: the options decide. A list of the
    /// best tokens can only do when the options keep at most `top_k` of them and nothing can
    /// raise a logit (no positive bias, penalties that only lower).
    pub fn wants(&self) -> Want {
        let o = &self.opts;
        let lowers_only = o.logit_bias.iter().all(|&(_, b)| b <= 0.0)
            && (!o.has_penalties()
                || (o.repeat_penalty >= 1.0
                    && o.frequency_penalty >= 0.0
                    && o.presence_penalty >= 0.0));
        let changed = !o.logit_bias.is_empty() || o.has_penalties();
        match (o.temperature == 0.0, o.top_k) {
            (true, _) if !changed => Want::Argmax,
            (true, _) if lowers_only => Want::Top { k: 1 },
            (false, k) if k > 0 && lowers_only => Want::Top { k },
            _ => Want::All,
        }
    }

    /// The next token for `logits` (one per vocabulary entry). Call [`accept`](Self::accept)
    /// with the token that is kept.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        if let Some(i) = logits.iter().position(|l| l.is_nan()) {
            return Err(SamplingError::NanLogit(i));
        }
        let n_vocab = logits.len();
        let mut logits: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        self.modify(&mut logits, n_vocab, |id| id as usize)?;
        self.choose(&logits)
    }

    /// The next token from `top`, the best tokens of a vocabulary of `n_vocab` by raw logit
    /// (a higher logit first, then a lower id), as a GPU finds them; the same token
    /// [`sample`](Self::sample) would choose from every logit, or `None` (drawing nothing) when
    /// the list is too short to be sure of it.
    pub fn sample_top(
        &mut self,
        top: &[(u32, f32)],
        n_vocab: usize,
    ) -> Result<Option<u32>, SamplingError> {
        let Want::Top { k } = self.wants() else {
            return Ok(None);
        };
        if let Some(&(id, _)) = top.iter().find(|(_, l)| l.is_nan()) {
            return Err(SamplingError::NanLogit(id as usize));
        }
        let Some(&edge) = top.last() else {
            return Ok(None);
        };
        let mut logits = top.to_vec();
        let positions: HashMap<u32, usize> = top
            .iter()
            .enumerate()
            .map(|(i, &(id, _))| (id, i))
            .collect();
        self.modify(&mut logits, n_vocab, |id| {
            positions.get(&id).copied().unwrap_or(usize::MAX)
        })?;
        if top.len() < n_vocab {
            // Every token left out ranks below `edge`, and the changes only lowered logits: the
            // list decides when its k-th best after them still ranks above `edge`.
            let mut ranked = logits.clone();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let ranks_above = |c: &(u32, f32)| c.1 > edge.1 || (c.1 == edge.1 && c.0 < edge.0);
            if ranked.get(k - 1).is_none_or(|c| !ranks_above(c)) {
                return Ok(None);
            }
        }
        self.choose(&logits).map(Some)
    }

    /// Applies the logit bias and penalties to `(id, logit)` entries; `slot(id)` is the entry
    /// of a token (out of range where the token has none).
    fn modify(
        &self,
        logits: &mut [(u32, f32)],
        n_vocab: usize,
        slot: impl Fn(u32) -> usize,
    ) -> Result<(), SamplingError> {
        for &(id, bias) in &self.opts.logit_bias {
            if id as usize >= n_vocab {
                return Err(SamplingError::LogitBiasOutOfRange { id, n_vocab });
            }
            if let Some(entry) = logits.get_mut(slot(id)) {
                entry.1 += bias;
            }
        }
        if self.opts.has_penalties() {
            self.apply_penalties(logits, slot);
        }
        Ok(())
    }

    /// Chooses among `(id, logit)` entries (the whole vocabulary, or enough of its best).
    fn choose(&mut self, logits: &[(u32, f32)]) -> Result<u32, SamplingError> {
        if self.opts.temperature == 0.0 {
            // Ties go to the lowest id.
            let best = logits
                .iter()
                .filter(|(_, l)| *l > f32::NEG_INFINITY)
                .min_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            return best
                .map(|&(id, _)| id)
                .ok_or(SamplingError::NothingToSample);
        }

        let inv_t = 1.0 / f64::from(self.opts.temperature);
        let mut cands: Vec<(u32, f64)> = logits
            .iter()
            .filter(|(_, l)| *l > f32::NEG_INFINITY)
            .map(|&(i, l)| (i, f64::from(l) * inv_t))
            .collect();
        if cands.is_empty() {
            return Err(SamplingError::NothingToSample);
        }
        let by_logit = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = self.opts.top_k;
        if k > 0 && k < cands.len() {
            cands.select_nth_unstable_by(k - 1, by_logit);
            cands.truncate(k);
        }
        cands.sort_unstable_by(by_logit);

        // Probabilities, most likely first.
        let max = cands[0].1;
        let mut probs: Vec<f64> = cands.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);

        let mut keep = probs.len();
        if self.opts.top_p < 1.0 {
            let p = f64::from(self.opts.top_p);
            let mut cum = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.opts.min_p > 0.0 {
            let floor = f64::from(self.opts.min_p) * probs[0];
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        probs.truncate(keep);

        let total: f64 = probs.iter().sum();
        let mut r = self.uniform() * total;
        for (i, q) in probs.iter().enumerate() {
            if r < *q {
                return Ok(cands[i].0);
            }
            r -= q;
        }
        // Rounding left r at or just above the last probability.
        Ok(cands[keep - 1].0)
    }

    fn apply_penalties(&self, logits: &mut [(u32, f32)], slot: impl Fn(u32) -> usize) {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &self.recent {
            *counts.entry(t).or_default() += 1;
        }
        let o = &self.opts;
        for (&t, &n) in &counts {
            let Some((_, l)) = logits.get_mut(slot(t)) else {
                continue;
            };
            if *l == f32::NEG_INFINITY {
                continue;
            }
            *l = if *l > 0.0 {
                *l / o.repeat_penalty
            } else {
                *l * o.repeat_penalty
            };
            *l -= n as f32 * o.frequency_penalty + o.presence_penalty;
        }
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Holds back text that might be the start of a stop string, so a stop string split over
/// several tokens is still found and never shown.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Result<Self, SamplingError> {
        if stops.iter().any(String::is_empty) {
            return Err(SamplingError::EmptyStop);
        }
        Ok(StopMatcher {
            stops,
            held: String::new(),
        })
    }

    /// Adds text; returns what can be shown now, and whether a stop string was found (the text
    /// returned then ends just before it, and everything after is dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // The longest end of the held text that some stop string starts with stays held.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len()).filter(|&k| s.is_char_boundary(k) && self.held.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    /// The text still held back, once no more will come.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

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
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::EndOfGeneration => "eos",
            FinishReason::StopString => "stop",
            FinishReason::MaxTokens => "length",
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
pub struct Generator<'t> {
    tokenizer: &'t Tokenizer,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    max_tokens: usize,
    ignore_eos: bool,
    generated: Vec<u32>,
    finished: Option<FinishReason>,
}

impl<'t> Generator<'t> {
    /// `prompt` feeds the penalties; it is not decoded.
    pub fn new(
        tokenizer: &'t Tokenizer,
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
            decoder: tokenizer.stream_decoder(true),
            stops: StopMatcher::new(opts.stop)?,
            max_tokens: opts.max_tokens,
            ignore_eos: opts.ignore_eos,
            generated: Vec::new(),
            finished: None,
        })
    }

    /// Chooses the next token from `logits` and returns the text it completes.
    pub fn step(&mut self, logits: &[f32]) -> Result<Step, SamplingError> {
        if self.finished.is_some() {
            return Err(SamplingError::Finished);
        }
        let token = self.sampler.sample(logits)?;
        self.push(token)
    }

    /// The sampler, for a backend that chooses the token itself (see [`Sampler::wants`]);
    /// hand the token it chose to [`push`](Self::push).
    pub fn sampler(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// Takes the next token, chosen by [`sampler`](Self::sampler), and returns the text it
    /// completes.
    pub fn push(&mut self, token: u32) -> Result<Step, SamplingError> {
        if self.finished.is_some() {
            return Err(SamplingError::Finished);
        }
        self.sampler.accept(token);
        self.generated.push(token);
        let at_end = !self.ignore_eos && self.tokenizer.is_stop(token);
        let piece = if at_end {
            String::new()
        } else {
            self.decoder.push(token)
        };
        let (mut text, stopped) = self.stops.push(&piece);
        let finished = if stopped {
            Some(FinishReason::StopString)
        } else if at_end || self.generated.len() >= self.max_tokens {
            // Whatever is still held back is final now.
            let (rest, stopped) = self.stops.push(&self.decoder.finish());
            text.push_str(&rest);
            if stopped {
                Some(FinishReason::StopString)
            } else {
                text.push_str(&self.stops.flush());
                Some(if at_end {
                    FinishReason::EndOfGeneration
                } else {
                    FinishReason::MaxTokens
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(f: impl FnOnce(&mut SamplingOptions)) -> Sampler {
        let mut o = SamplingOptions::default();
        f(&mut o);
        Sampler::new(o).unwrap()
    }

    fn draws(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
        (0..n).map(|_| s.sample(logits).unwrap()).collect()
    }

    const LOGITS: [f32; 6] = [1.0, 3.0, 2.5, -1.0, 0.0, 2.9];

    /// The `n` best (id, logit) entries, best first, ties to the lower id: what a GPU returns.
    fn best(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Logits with many ties and some banned tokens.
    fn rough_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                if i % 37 == 5 {
                    f32::NEG_INFINITY
                } else {
                    (rng.next_u64() % 64) as f32 / 8.0
                }
            })
            .collect()
    }

    #[test]
    fn the_best_tokens_give_the_same_draws_as_every_logit() {
        let logits = rough_logits(3000, 1);
        let recent: Vec<u32> = best(&logits, 64)
            .iter()
            .step_by(3)
            .map(|&(id, _)| id)
            .collect();
        let cases: [fn(&mut SamplingOptions); 5] = [
            |o| (o.temperature, o.top_k) = (0.8, 40),
            |o| (o.temperature, o.top_k, o.top_p, o.min_p) = (1.3, 20, 0.9, 0.05),
            |o| {
                (
                    o.temperature,
                    o.top_k,
                    o.repeat_penalty,
                    o.frequency_penalty,
                ) = (1.0, 30, 1.3, 0.5)
            },
            |o| {
                (o.temperature, o.top_k, o.logit_bias) =
                    (0.7, 10, vec![(7, -2.0), (9, f32::NEG_INFINITY)])
            },
            |o| (o.temperature, o.repeat_penalty, o.presence_penalty) = (0.0, 1.5, 1.0),
        ];
        for (c, set) in cases.iter().enumerate() {
            let mut covered = 0;
            for seed in 0..40 {
                let make = || {
                    let mut s = sampler(|o| {
                        o.seed = seed;
                        set(o);
                    });
                    recent.iter().for_each(|&t| s.accept(t));
                    s
                };
                let (mut full, mut top) = (make(), make());
                assert!(matches!(top.wants(), Want::Top { .. }), "case {c}");
                for step in 0..5 {
                    let want = full.sample(&logits).unwrap();
                    let Some(got) = top.sample_top(&best(&logits, 64), logits.len()).unwrap()
                    else {
                        break;
                    };
                    assert_eq!(got, want, "case {c}, seed {seed}, step {step}");
                    covered += 1;
                    full.accept(want);
                    top.accept(got);
                }
            }
            assert!(
                covered >= 150,
                "case {c}: the list sufficed only {covered} times of 200"
            );
        }
    }

    #[test]
    fn a_list_too_short_for_the_options_is_refused_without_a_draw() {
        let logits = rough_logits(3000, 2);
        let top = best(&logits, 64);
        let need_all = [
            sampler(|o| o.temperature = 1.0),
            sampler(|o| (o.temperature, o.top_k, o.logit_bias) = (1.0, 10, vec![(3, 0.5)])),
            sampler(|o| (o.temperature, o.top_k, o.repeat_penalty) = (1.0, 10, 0.8)),
        ];
        for s in &need_all {
            assert_eq!(s.wants(), Want::All);
        }
        assert_eq!(sampler(|_| {}).wants(), Want::Argmax);
        // Asks for more than the list holds.
        assert_eq!(
            sampler(|o| (o.temperature, o.top_k) = (1.0, 65))
                .sample_top(&top, 3000)
                .unwrap(),
            None
        );
        // Penalties push most of the list below its last entry.
        let mut s = sampler(|o| {
            (o.temperature, o.top_k, o.frequency_penalty, o.seed) = (1.0, 40, 100.0, 5)
        });
        top.iter().take(60).for_each(|&(id, _)| s.accept(id));
        assert_eq!(s.sample_top(&top, 3000).unwrap(), None);
        // Nothing was drawn: the first draw from every logit is the one a fresh sampler makes.
        let mut fresh = sampler(|o| {
            (o.temperature, o.top_k, o.frequency_penalty, o.seed) = (1.0, 40, 100.0, 5)
        });
        top.iter().take(60).for_each(|&(id, _)| fresh.accept(id));
        assert_eq!(s.sample(&logits).unwrap(), fresh.sample(&logits).unwrap());
    }

    #[test]
    fn greedy_takes_the_argmax_and_ties_go_to_the_lowest_id() {
        assert_eq!(sampler(|_| {}).sample(&LOGITS).unwrap(), 1);
        assert_eq!(sampler(|_| {}).sample(&[0.5, 2.0, 2.0]).unwrap(), 1);
    }

    #[test]
    fn top_k_1_equals_greedy_at_any_temperature() {
        let mut s = sampler(|o| {
            o.temperature = 5.0;
            o.top_k = 1;
            o.seed = 7;
        });
        assert!(draws(&mut s, &LOGITS, 200).iter().all(|&t| t == 1));
    }

    #[test]
    fn top_k_keeps_exactly_the_k_best() {
        let mut s = sampler(|o| {
            o.temperature = 10.0;
            o.top_k = 3;
        });
        let seen: std::collections::BTreeSet<u32> =
            draws(&mut s, &LOGITS, 2000).into_iter().collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 5]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Probabilities 0.5, 0.3, 0.15, 0.05: p = 0.79 needs the first two, p = 0.81 three.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        for (p, want) in [
            (0.79, vec![0, 1]),
            (0.81, vec![0, 1, 2]),
            (0.1, vec![0]),
            (1.0, vec![0, 1, 2, 3]),
        ] {
            let mut s = sampler(|o| {
                o.temperature = 1.0;
                o.top_p = p;
            });
            let seen: std::collections::BTreeSet<u32> =
                draws(&mut s, &logits, 3000).into_iter().collect();
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "top_p {p}");
        }
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        // The floor is min_p * 0.5: 0.145 keeps 0.15, 0.155 does not.
        for (min_p, want) in [(0.29, vec![0, 1, 2]), (0.31, vec![0, 1]), (1.0, vec![0])] {
            let mut s = sampler(|o| {
                o.temperature = 1.0;
                o.min_p = min_p;
            });
            let seen: std::collections::BTreeSet<u32> =
                draws(&mut s, &logits, 3000).into_iter().collect();
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "min_p {min_p}");
        }
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let share = |t: f32| {
            let mut s = sampler(|o| o.temperature = t);
            draws(&mut s, &LOGITS, 4000)
                .iter()
                .filter(|&&x| x == 1)
                .count()
        };
        let (cold, warm, hot) = (share(0.1), share(1.0), share(100.0));
        assert!(cold > warm && warm > hot, "{cold} {warm} {hot}");
        // At a very high temperature all six are about equally likely.
        assert!((500..900).contains(&hot), "{hot}");
    }

    #[test]
    fn sampling_matches_the_softmax() {
        let logits: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
        let mut s = sampler(|o| o.temperature = 1.0);
        let n = 20_000;
        let d = draws(&mut s, &logits, n);
        for (id, p) in [(0, 0.6), (1, 0.3), (2, 0.1)] {
            let got = d.iter().filter(|&&x| x == id).count() as f64 / n as f64;
            assert!((got - p).abs() < 0.015, "token {id}: {got} vs {p}");
        }
    }

    #[test]
    fn a_seed_reproduces_the_sequence() {
        let run = |seed| {
            let mut s = sampler(|o| {
                o.temperature = 1.5;
                o.seed = seed;
            });
            draws(&mut s, &LOGITS, 50)
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn penalties_lower_recent_tokens() {
        let mut s = sampler(|o| o.repeat_penalty = 2.0);
        s.accept(1);
        // 3.0 / 2 = 1.5 falls below 2.9 and 2.5.
        assert_eq!(s.sample(&LOGITS).unwrap(), 5);
        s.accept(5);
        assert_eq!(s.sample(&LOGITS).unwrap(), 2);
        // A negative logit is multiplied, so it drops further.
        let mut s = sampler(|o| o.repeat_penalty = 2.0);
        s.accept(0);
        let mut l = vec![-1.0, -1.5];
        assert_eq!(s.sample(&l).unwrap(), 1);
        l[1] = -2.5;
        assert_eq!(s.sample(&l).unwrap(), 0);

        let mut s = sampler(|o| o.frequency_penalty = 0.1);
        for _ in 0..3 {
            s.accept(1);
        }
        // 3.0 - 3 * 0.1 = 2.7 < 2.9.
        assert_eq!(s.sample(&LOGITS).unwrap(), 5);
        let mut s = sampler(|o| o.presence_penalty = 0.05);
        for _ in 0..3 {
            s.accept(1);
        }
        // 3.0 - 0.05 = 2.95 > 2.9: presence does not grow with the count.
        assert_eq!(s.sample(&LOGITS).unwrap(), 1);
    }

    #[test]
    fn penalties_only_see_the_last_n_tokens() {
        let mut s = sampler(|o| {
            o.repeat_penalty = 2.0;
            o.penalty_last_n = 2;
        });
        s.accept(1);
        s.accept(3);
        s.accept(4);
        assert_eq!(s.sample(&LOGITS).unwrap(), 1);
    }

    #[test]
    fn logit_bias_adds_and_bans() {
        let mut s = sampler(|o| o.logit_bias = vec![(1, f32::NEG_INFINITY), (3, 10.0)]);
        assert_eq!(s.sample(&LOGITS).unwrap(), 3);
        let mut s = sampler(|o| {
            o.temperature = 1.0;
            o.logit_bias = vec![(1, f32::NEG_INFINITY)];
        });
        assert!(!draws(&mut s, &LOGITS, 500).contains(&1));
        let mut s =
            sampler(|o| o.logit_bias = vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]);
        assert_eq!(s.sample(&[0.0, 1.0]), Err(SamplingError::NothingToSample));
        let mut s = sampler(|o| o.logit_bias = vec![(9, 1.0)]);
        assert_eq!(
            s.sample(&LOGITS),
            Err(SamplingError::LogitBiasOutOfRange { id: 9, n_vocab: 6 })
        );
    }

    #[test]
    fn invalid_options_are_rejected_with_a_clear_error() {
        type Mutate = fn(&mut SamplingOptions);
        let bad: Vec<(Mutate, &str)> = vec![
            (|o| o.temperature = -0.1, "temperature"),
            (|o| o.temperature = f32::NAN, "temperature"),
            (|o| o.temperature = f32::INFINITY, "temperature"),
            (|o| o.top_p = 0.0, "top_p"),
            (|o| o.top_p = 1.5, "top_p"),
            (|o| o.min_p = -0.5, "min_p"),
            (|o| o.min_p = 2.0, "min_p"),
            (|o| o.repeat_penalty = 0.0, "repeat_penalty"),
            (|o| o.frequency_penalty = f32::NAN, "frequency_penalty"),
            (|o| o.presence_penalty = f32::INFINITY, "presence_penalty"),
            (|o| o.logit_bias = vec![(0, f32::INFINITY)], "logit bias"),
        ];
        for (f, name) in bad {
            let mut o = SamplingOptions::default();
            f(&mut o);
            let err = Sampler::new(o).err().expect("rejected");
            assert!(err.to_string().contains(name), "{err}");
        }
        assert_eq!(sampler(|_| {}).sample(&[]), Err(SamplingError::EmptyLogits));
        assert_eq!(
            sampler(|_| {}).sample(&[0.0, f32::NAN]),
            Err(SamplingError::NanLogit(1))
        );
        assert_eq!(
            StopMatcher::new(vec![String::new()]).err(),
            Some(SamplingError::EmptyStop)
        );
    }

    #[test]
    fn stop_strings_match_across_pieces_and_are_never_emitted() {
        let mut m = StopMatcher::new(vec!["</end>".into(), "STOP".into()]).unwrap();
        assert_eq!(m.push("hello </"), ("hello ".into(), false));
        assert_eq!(m.push("en"), (String::new(), false));
        // Not a stop after all: the held text comes out.
        assert_eq!(m.push("try"), ("</entry".into(), false));
        assert_eq!(m.push(" ST"), (" ".into(), false));
        assert_eq!(m.push("OP and more"), (String::new(), true));

        let mut m = StopMatcher::new(vec!["ab".into()]).unwrap();
        assert_eq!(m.push("xa"), ("x".into(), false));
        assert_eq!(m.flush(), "a");
        // Multi-byte text is held back by whole characters.
        let mut m = StopMatcher::new(vec!["日本語".into()]).unwrap();
        assert_eq!(m.push("に日本"), ("に".into(), false));
        assert_eq!(m.push("人"), ("日本人".into(), false));
    }

    /// Mistral's SentencePiece vocabulary from the tokenizer fixtures.
    fn llama2() -> Tokenizer {
        use std::io::Read;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/tokenizers/llama2.gguf.gz"
        );
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        Tokenizer::from_gguf(&crate::gguf::Gguf::parse(&bytes, bytes.len() as u64).unwrap())
            .unwrap()
    }

    /// Runs a generator on logits that make greedy choose `script`, one token per step.
    fn run(
        tok: &Tokenizer,
        opts: GenerateOptions,
        script: &[u32],
    ) -> (String, Vec<u32>, Option<FinishReason>) {
        let mut g = Generator::new(tok, opts, &[1]).unwrap();
        let mut text = String::new();
        for &want in script {
            let mut logits = vec![0.0; tok.n_vocab()];
            logits[want as usize] = 10.0;
            let step = g.step(&logits).unwrap();
            assert_eq!(step.token, want);
            text.push_str(&step.text);
            if step.finished.is_some() {
                assert_eq!(g.step(&logits), Err(SamplingError::Finished));
                break;
            }
        }
        (text, g.generated().to_vec(), g.finished())
    }

    #[test]
    fn generation_stops_at_eos_without_showing_it() {
        let tok = llama2();
        let mut script = tok.encode("Hello world", false);
        script.push(2);
        script.extend(tok.encode("never", false));
        let (text, ids, finish) = run(&tok, GenerateOptions::default(), &script);
        assert_eq!(text, "Hello world");
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(finish, Some(FinishReason::EndOfGeneration));

        // With ignore_eos the token is generated and, being a control token, not shown.
        let opts = GenerateOptions {
            ignore_eos: true,
            max_tokens: script.len(),
            ..Default::default()
        };
        let (text, ids, finish) = run(&tok, opts, &script);
        assert_eq!(
            (text.as_str(), ids.len(), finish),
            (
                "Hello world never",
                script.len(),
                Some(FinishReason::MaxTokens)
            )
        );
    }

    #[test]
    fn stop_strings_end_generation_across_token_boundaries() {
        let tok = llama2();
        let script = tok.encode("The answer is 42.\nQuestion: more", false);
        let opts = GenerateOptions {
            stop: vec!["\nQuest".into()],
            ..Default::default()
        };
        let (text, ids, finish) = run(&tok, opts, &script);
        assert_eq!(text, "The answer is 42.");
        assert_eq!(finish, Some(FinishReason::StopString));
        assert!(ids.len() < script.len());
    }

    #[test]
    fn max_tokens_bounds_the_generation_and_flushes_held_text() {
        let tok = llama2();
        let script = tok.encode("one two three four", false);
        let opts = GenerateOptions {
            max_tokens: 2,
            stop: vec!["twoX".into()],
            ..Default::default()
        };
        let (text, ids, finish) = run(&tok, opts, &script);
        assert_eq!(
            (text.as_str(), ids.len(), finish),
            ("one two", 2, Some(FinishReason::MaxTokens))
        );
        let zero = GenerateOptions {
            max_tokens: 0,
            ..Default::default()
        };
        assert_eq!(
            Generator::new(&tok, zero, &[]).err(),
            Some(SamplingError::MaxTokens)
        );
    }
}
