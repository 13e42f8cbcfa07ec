//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`: Llama 2, TinyLlama, Mistral):
//! spaces become "▁", then adjacent pieces merge highest score first, and characters not in the
//! vocabulary fall back to `<0xXX>` byte tokens. This is llama.cpp's `llm_tokenizer_spm`, which
//! agrees with Hugging Face's merges when the scores follow merge order, as SentencePiece's do.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::{TokenType, TokenizerError};

/// SentencePiece's stand-in for a space.
pub(crate) const SPACE: char = '\u{2581}';

pub(crate) struct Spm {
    scores: Vec<f32>,
    /// `<0xXX>` for every byte, when the vocabulary has all 256.
    byte_token: Option<[u32; 256]>,
    unk: Option<u32>,
    pub(crate) add_space_prefix: bool,
}

/// A candidate merge: higher score first, then the leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(Reverse(self.left).cmp(&Reverse(other.left)))
    }
}

impl Spm {
    pub(crate) fn new(
        scores: Vec<f32>,
        vocab: &Vocab,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Self, TokenizerError> {
        let mut table = [0u32; 256];
        let mut complete = true;
        for (b, slot) in table.iter_mut().enumerate() {
            match vocab.id(&format!("<0x{b:02X}>")) {
                Some(id) => *slot = id,
                None => complete = false,
            }
        }
        let byte_token = complete.then_some(table);
        if byte_token.is_none() && unk.is_none() {
            return Err(TokenizerError::NoFallback);
        }
        Ok(Spm {
            scores,
            byte_token,
            unk,
            add_space_prefix,
        })
    }

    /// Encodes one fragment of ordinary text. `prefix_space` adds the leading "▁" that
    /// SentencePiece gives text at the start of the input or right after a special token.
    pub(crate) fn encode(
        &self,
        text: &str,
        prefix_space: bool,
        vocab: &Vocab,
        types: &[TokenType],
        out: &mut Vec<u32>,
    ) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if prefix_space && self.add_space_prefix {
            escaped.push(SPACE);
        }
        escaped.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
        let s = escaped.as_str();

        // Symbols are byte ranges of `s`, linked as a list; merging extends the left one.
        struct Symbol {
            start: usize,
            len: usize,
            prev: usize,
            next: usize,
        }
        const NONE: usize = usize::MAX;
        let mut syms: Vec<Symbol> = Vec::with_capacity(s.len());
        for (i, c) in s.char_indices() {
            let k = syms.len();
            syms.push(Symbol {
                start: i,
                len: c.len_utf8(),
                prev: if k == 0 { NONE } else { k - 1 },
                next: k + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = NONE;
        }

        // Only ordinary pieces are merge results: SentencePiece never builds control, byte or
        // user-defined pieces out of text.
        let bigram = |syms: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            if left == NONE || right == NONE {
                return None;
            }
            let (start, len) = (syms[left].start, syms[left].len + syms[right].len);
            let id = vocab.id(&s[start..start + len])? as usize;
            (types.get(id) == Some(&TokenType::Normal)).then(|| Bigram {
                score: self.scores[id],
                left,
                right,
                len,
            })
        };
        let mut heap = BinaryHeap::new();
        for i in 1..syms.len() {
            heap.extend(bigram(&syms, i - 1, i));
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            // Stale when either side has merged since this bigram was queued.
            if syms[l].len == 0
                || syms[r].len == 0
                || syms[l].len + syms[r].len != b.len
                || syms[l].next != r
            {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if syms[r].next != NONE {
                let after = syms[r].next;
                syms[after].prev = l;
            }
            heap.extend(bigram(&syms, syms[l].prev, l));
            heap.extend(bigram(&syms, l, syms[l].next));
        }

        let mut i = if syms.is_empty() { NONE } else { 0 };
        while i != NONE {
            let piece = &s[syms[i].start..syms[i].start + syms[i].len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => self.fallback(piece, out),
            }
            i = syms[i].next;
        }
    }

    /// A character the vocabulary lacks: its UTF-8 bytes as `<0xXX>` tokens, else one unknown token.
    fn fallback(&self, piece: &str, out: &mut Vec<u32>) {
        match (&self.byte_token, self.unk) {
            (Some(table), _) => out.extend(piece.bytes().map(|b| table[b as usize])),
            (None, Some(unk)) => out.push(unk),
            (None, None) => {}
        }
    }
}

/// The byte a `<0xXX>` token stands for.
pub(crate) fn byte_of(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[(&str, f32)]) -> (Spm, Vocab, Vec<TokenType>) {
        let mut tokens = Vec::new();
        let mut scores = Vec::new();
        let mut types = Vec::new();
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(TokenType::Byte);
        }
        for &(p, s) in pieces {
            tokens.push(p.to_string());
            scores.push(s);
            types.push(TokenType::Normal);
        }
        let vocab = Vocab::new(&tokens).unwrap();
        (Spm::new(scores, &vocab, None, true).unwrap(), vocab, types)
    }

    #[test]
    fn merges_follow_scores_and_unknown_characters_become_bytes() {
        let (spm, ids, types) = vocab(&[
            ("▁", -1.0),
            ("a", -1.0),
            ("b", -1.0),
            ("▁a", -3.0),
            ("ab", -2.0),
            ("▁ab", -4.0),
        ]);
        let mut out = Vec::new();
        spm.encode("ab é", true, &ids, &types, &mut out);
        // "ab" (-2) merges before "▁a" (-3); "▁ab" then joins "▁" + "ab".
        let e = "é".as_bytes();
        let id = |t| ids.id(t).unwrap();
        assert_eq!(out, [id("▁ab"), id("▁"), e[0] as u32, e[1] as u32]);
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(byte_of("<0x0A>"), Some(10));
        assert_eq!(byte_of("<0xFF>"), Some(255));
        assert_eq!(byte_of("<0x1>"), None);
        assert_eq!(byte_of("0x41"), None);
    }
}
