//! Stop strings matched across token boundaries.

use super::SamplingError;

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
