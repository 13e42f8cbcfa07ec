//! Stop strings matched across token boundaries.

use super::SamplingError;

/// Holds back text that might be the start of a stop string, so a stop string split over
/// several tokens is still found and never shown. Each push costs time linear in the text held
/// and the stop strings' length, however long they are.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<Stop>,
    held: String,
}

/// A stop string with its failure function: `border[i]` is the length of the longest proper
/// prefix of `text[..=i]` that is also its suffix (Knuth–Morris–Pratt).
#[derive(Clone, Debug, Default)]
struct Stop {
    text: String,
    border: Vec<usize>,
}

impl Stop {
    fn new(text: String) -> Self {
        let s = text.as_bytes();
        let mut border = vec![0; s.len()];
        let mut k = 0;
        for i in 1..s.len() {
            while k > 0 && s[i] != s[k] {
                k = border[k - 1];
            }
            if s[i] == s[k] {
                k += 1;
            }
            border[i] = k;
        }
        Stop { text, border }
    }

    /// The length of the longest proper prefix of this stop string that `held` ends with.
    /// `held` holds no whole occurrence, and is valid UTF-8, so the prefix ends on a character
    /// boundary.
    fn held_prefix(&self, held: &str) -> usize {
        let s = self.text.as_bytes();
        let tail = &held.as_bytes()[held.len().saturating_sub(s.len() - 1)..];
        let mut k = 0;
        for &b in tail {
            while k > 0 && (k == s.len() || b != s[k]) {
                k = self.border[k - 1];
            }
            if b == s[k] {
                k += 1;
            }
        }
        k.min(s.len() - 1)
    }
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Result<Self, SamplingError> {
        if stops.iter().any(String::is_empty) {
            return Err(SamplingError::EmptyStop);
        }
        Ok(StopMatcher {
            stops: stops.into_iter().map(Stop::new).collect(),
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
            .filter_map(|s| self.held.find(s.text.as_str()))
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
            .map(|s| s.held_prefix(&self.held))
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
