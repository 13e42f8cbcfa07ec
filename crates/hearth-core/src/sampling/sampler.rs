//! The sampler: logits in, one token out.

use std::collections::HashMap;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{SamplingError, SamplingOptions};

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
    /// (a higher logit first, then a lower id; tokens outside an output format's mask at -inf),
    /// as a GPU finds them; the same token [`sample`](Self::sample) would choose from every
    /// logit, or `None` (drawing nothing) when the list is too short to be sure of it.
    pub fn sample_top(
        &mut self,
        top: &[(u32, f32)],
        n_vocab: usize,
    ) -> Result<Option<u32>, SamplingError> {
        let k = match self.wants() {
            Want::Argmax => 1,
            Want::Top { k } => k,
            Want::All => return Ok(None),
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
        // Every token left out ranks below `edge`, and the changes only lowered logits: the
        // list decides when it holds the whole vocabulary, when `edge` is -inf (so is every
        // token left out: a mask or a ban), or when its k-th best after the changes still
        // ranks above `edge`.
        if top.len() < n_vocab && edge.1 > f32::NEG_INFINITY {
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
