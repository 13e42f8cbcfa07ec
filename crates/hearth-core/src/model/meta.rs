//! Typed reads of an architecture's metadata keys (`<arch>.<key>`), each checked: counts are
//! positive and bounded, floats finite, so no size derived from them can overflow.

use super::ModelError;
use crate::gguf::{Gguf, Value};

/// A hyper-parameter must be a positive count below this; tensor shapes then bound them far
/// tighter.
const MAX_DIM: u64 = 1 << 24;

pub(crate) fn bad(msg: String) -> ModelError {
    ModelError::BadHyperParameter(msg)
}

/// The metadata of one file, read under one architecture's prefix.
pub struct Meta<'a> {
    pub gguf: &'a Gguf,
    pub prefix: &'static str,
}

impl Meta<'_> {
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.gguf.get(&self.key(name))
    }

    fn checked_count(&self, name: &str, v: &Value) -> Result<usize, ModelError> {
        match v.as_u64() {
            Some(n) if (1..MAX_DIM).contains(&n) => Ok(n as usize),
            _ => Err(bad(format!("{} = {}", self.key(name), v.summary()))),
        }
    }

    /// A positive count, if the key is present.
    pub fn count(&self, name: &str) -> Result<Option<usize>, ModelError> {
        self.value(name)
            .map(|v| self.checked_count(name, v))
            .transpose()
    }

    pub fn required(&self, name: &str) -> Result<usize, ModelError> {
        self.count(name)?
            .ok_or_else(|| ModelError::MissingKey(self.key(name)))
    }

    /// A count that may be zero (such as a number of extra layers), if present.
    pub fn count_or_zero(&self, name: &str) -> Result<usize, ModelError> {
        match self.value(name) {
            Some(v) if v.as_u64() == Some(0) => Ok(0),
            Some(v) => self.checked_count(name, v),
            None => Ok(0),
        }
    }

    /// A count for each of `n_layer` layers, each positive or zero: one value for every layer,
    /// or an array of exactly `n_layer` values (LFM2's `attention.head_count_kv`, 0 on its
    /// convolution layers), if present.
    pub fn counts_per_layer(
        &self,
        name: &str,
        n_layer: usize,
    ) -> Result<Option<Vec<usize>>, ModelError> {
        let Some(v) = self.value(name) else {
            return Ok(None);
        };
        let bad_value = || {
            bad(format!(
                "{} = {} for {n_layer} layers",
                self.key(name),
                v.summary()
            ))
        };
        let check = |n: Option<u64>| match n {
            Some(n) if n < MAX_DIM => Ok(n as usize),
            _ => Err(bad_value()),
        };
        let counts = match v {
            Value::Array(a) => a
                .to_i64s()
                .filter(|xs| xs.len() == n_layer)
                .ok_or_else(bad_value)?
                .into_iter()
                .map(|n| check(u64::try_from(n).ok()))
                .collect::<Result<_, _>>()?,
            _ => vec![check(v.as_u64())?; n_layer],
        };
        Ok(Some(counts))
    }

    /// A positive finite float, if present.
    pub fn float(&self, name: &str) -> Result<Option<f32>, ModelError> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
                _ => Err(bad(format!("{} = {}", self.key(name), v.summary()))),
            },
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.gguf.get_str(&self.key(name))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.gguf.tensor(name).is_some()
    }
}
