//! The vocabulary's token texts in one buffer, and the id of a text found without a second copy
//! of the texts: a 151k-token vocabulary held as a `String` per token plus a `HashMap` from text
//! to id took about 20 MB, which a browser page never gets back.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::TokenizerError;

pub(crate) struct Vocab {
    /// Every token's text, in id order.
    text: String,
    /// Token `id` is `text[offsets[id]..offsets[id + 1]]`.
    offsets: Vec<u32>,
    /// Ids hashed by their text; a repeated text has only its first id here.
    ids: HashTable<u32>,
    hasher: RandomState,
}

/// The text of token `id` in a vocabulary's parts, for use while the table is being built.
fn text_of<'t>(text: &'t str, offsets: &[u32], id: u32) -> &'t str {
    let id = id as usize;
    &text[offsets[id] as usize..offsets[id + 1] as usize]
}

impl Vocab {
    pub(crate) fn new<S: AsRef<str>>(tokens: &[S]) -> Result<Self, TokenizerError> {
        let n = tokens.len();
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::VocabTooLarge(n));
        }
        let len: usize = tokens.iter().map(|t| t.as_ref().len()).sum();
        if u32::try_from(len).is_err() {
            return Err(TokenizerError::VocabTextTooLarge(len));
        }
        let mut text = String::with_capacity(len);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for t in tokens {
            text.push_str(t.as_ref());
            offsets.push(text.len() as u32);
        }
        let hasher = RandomState::new();
        let mut ids = HashTable::with_capacity(n);
        let rehash = |&id: &u32| hasher.hash_one(text_of(&text, &offsets, id));
        for id in 0..n as u32 {
            let t = text_of(&text, &offsets, id);
            let eq = |&other: &u32| text_of(&text, &offsets, other) == t;
            // A repeated text keeps its first id, as a map filled in id order with
            // `or_insert` would.
            if let hashbrown::hash_table::Entry::Vacant(slot) =
                ids.entry(hasher.hash_one(t), eq, rehash)
            {
                slot.insert(id);
            }
        }
        Ok(Vocab {
            text,
            offsets,
            ids,
            hasher,
        })
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The text of token `id`, if there is one.
    pub(crate) fn token(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.len()).then(|| text_of(&self.text, &self.offsets, id))
    }

    /// The first id whose text is `text`.
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids
            .find(self.hasher.hash_one(text), |&id| {
                text_of(&self.text, &self.offsets, id) == text
            })
            .copied()
    }

    /// Every token's text, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len() as u32).map(|id| text_of(&self.text, &self.offsets, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_ids_round_trip() {
        let tokens = ["b", "a", "", "ab", "ä", "<|im_end|>", "a b"];
        let v = Vocab::new(&tokens).unwrap();
        assert_eq!(v.len(), tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            assert_eq!(v.token(id as u32), Some(*t));
            assert_eq!(v.id(t), Some(id as u32));
        }
        assert_eq!(v.token(tokens.len() as u32), None);
        for missing in ["c", "aa", "abc", "a ", " ", "<|im_end"] {
            assert_eq!(v.id(missing), None, "{missing:?}");
        }
        assert!(v.iter().eq(tokens));
    }

    #[test]
    fn a_repeated_text_keeps_its_first_id() {
        let v = Vocab::new(&["x", "dup", "y", "dup", "", "dup", ""]).unwrap();
        assert_eq!(v.id("dup"), Some(1));
        assert_eq!(v.id(""), Some(4));
        assert_eq!(v.token(5), Some("dup"));
    }
}
