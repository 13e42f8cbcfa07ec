//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): GPT-2's byte-to-character map, then merges
//! by rank, as Hugging Face `tokenizers` applies them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::pretokenize::PreTokenizer;
use super::vocab::Vocab;
use super::TokenizerError;

/// The highest code point GPT-2's byte map uses (byte 0xAD maps to U+0143).
const MAX_BYTE_CHAR: usize = 0x143;

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes stand
/// for themselves, the rest are shifted past U+00FF in byte order.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    table
}

pub(crate) struct Bpe {
    pub(crate) pre: PreTokenizer,
    byte_char: [char; 256],
    /// Indexed by code point: the byte a character stands for.
    char_byte: Vec<Option<u8>>,
    /// The token of each single byte.
    byte_token: [u32; 256],
    merges: Merges,
}

/// The merges grouped by their left token: those of token `l` are at `starts[l]..starts[l + 1]`
/// in `right` (ascending) and `result`. Half the memory of a `HashMap` of the pairs; a lookup is
/// one index and a binary search among a token's few merges.
struct Merges {
    starts: Vec<u32>,
    right: Vec<u32>,
    /// (rank, merged token).
    result: Vec<(u32, u32)>,
}

impl Merges {
    /// From `[left, right, rank, merged]` entries with ids below `n_vocab`; a pair listed twice
    /// takes its last rank, as a map filled in rank order would.
    fn new(mut pairs: Vec<[u32; 4]>, n_vocab: usize) -> Self {
        pairs.sort_unstable();
        pairs.dedup_by(|later, kept| {
            let same = later[..2] == kept[..2];
            if same {
                *kept = *later;
            }
            same
        });
        let mut starts = vec![0u32; n_vocab + 1];
        for p in &pairs {
            starts[p[0] as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        Merges {
            starts,
            right: pairs.iter().map(|p| p[1]).collect(),
            result: pairs.iter().map(|p| (p[2], p[3])).collect(),
        }
    }

    /// (rank, merged token) of the pair `(left, right)`.
    fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let start = self.starts[left as usize] as usize;
        let end = self.starts[left as usize + 1] as usize;
        let at = self.right[start..end].binary_search(&right).ok()?;
        Some(self.result[start + at])
    }
}

impl Bpe {
    pub(crate) fn new(
        pre: PreTokenizer,
        vocab: &Vocab,
        merges: &[String],
    ) -> Result<Self, TokenizerError> {
        let byte_char = byte_chars();
        let mut char_byte = vec![None; MAX_BYTE_CHAR + 1];
        let mut byte_token = [0u32; 256];
        for (b, &c) in byte_char.iter().enumerate() {
            char_byte[c as usize] = Some(b as u8);
            byte_token[b] = vocab
                .id(c.encode_utf8(&mut [0; 4]))
                .ok_or(TokenizerError::MissingByte(b as u8))?;
        }
        let mut pairs = Vec::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, merge) in merges.iter().enumerate() {
            let bad = |reason| TokenizerError::BadMerge {
                index: rank,
                merge: merge.clone(),
                reason,
            };
            // The left part is at least one character, so a merge of a space-like token still splits.
            let first = merge.chars().next().map_or(0, char::len_utf8);
            let split = merge[first..]
                .find(' ')
                .map(|i| i + first)
                .ok_or_else(|| bad("it has no space"))?;
            let (left, right) = (&merge[..split], &merge[split + 1..]);
            let id = |part: &str| {
                vocab
                    .id(part)
                    .ok_or_else(|| bad("it names a token not in the vocabulary"))
            };
            let (l, r) = (id(left)?, id(right)?);
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = vocab
                .id(&joined)
                .ok_or_else(|| bad("its result is not in the vocabulary"))?;
            let rank = u32::try_from(rank).map_err(|_| bad("there are too many merges"))?;
            pairs.push([l, r, rank, merged]);
        }
        Ok(Bpe {
            pre,
            byte_char,
            char_byte,
            byte_token,
            merges: Merges::new(pairs, vocab.len()),
        })
    }

    /// Encodes one fragment of ordinary text (no special tokens in it).
    pub(crate) fn encode(&self, text: &str, vocab: &Vocab, out: &mut Vec<u32>) {
        let text = self.pre.normalize(text);
        for word in self.pre.split(&text) {
            if self.pre.ignore_merges() {
                let mapped: String = word.bytes().map(|b| self.byte_char[b as usize]).collect();
                if let Some(id) = vocab.id(&mapped) {
                    out.push(id);
                    continue;
                }
            }
            self.merge_word(word.as_bytes(), out);
        }
    }

    /// Applies merges lowest rank first, leftmost first among equal ranks.
    fn merge_word(&self, bytes: &[u8], out: &mut Vec<u32>) {
        struct Symbol {
            id: u32,
            prev: usize,
            next: usize,
            alive: bool,
        }
        const NONE: usize = usize::MAX;
        let n = bytes.len();
        let mut syms: Vec<Symbol> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Symbol {
                id: self.byte_token[b as usize],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                alive: true,
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let pair = |syms: &[Symbol], left: usize| {
            let right = syms[left].next;
            if right == NONE {
                return None;
            }
            self.merges
                .get(syms[left].id, syms[right].id)
                .map(|(rank, merged)| Reverse((rank, left, merged)))
        };
        for i in 0..n.saturating_sub(1) {
            heap.extend(pair(&syms, i));
        }
        while let Some(Reverse((_, left, merged))) = heap.pop() {
            // Entries go stale when a neighbour merges first; skip those whose pair changed.
            if !syms[left].alive || pair(&syms, left).is_none_or(|Reverse((_, _, m))| m != merged) {
                continue;
            }
            let right = syms[left].next;
            syms[left].id = merged;
            syms[right].alive = false;
            let after = syms[right].next;
            syms[left].next = after;
            if after != NONE {
                syms[after].prev = left;
            }
            let before = syms[left].prev;
            if before != NONE {
                heap.extend(pair(&syms, before));
            }
            heap.extend(pair(&syms, left));
        }
        out.extend(syms.iter().filter(|s| s.alive).map(|s| s.id));
    }

    /// The bytes a token's text stands for. Text with a character outside the byte map (added
    /// tokens such as `<|im_end|>` are stored as plain text) is taken as UTF-8, as Hugging
    /// Face's ByteLevel decoder does.
    pub(crate) fn token_bytes(&self, text: &str, out: &mut Vec<u8>) {
        let start = out.len();
        for c in text.chars() {
            match self.char_byte.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    out.truncate(start);
                    out.extend_from_slice(text.as_bytes());
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        let t = byte_chars();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], '\u{143}');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    fn tiny(merges: &[&str], pre: &str) -> (Bpe, Vocab) {
        let mut tokens: Vec<String> = byte_chars().iter().map(char::to_string).collect();
        for m in merges {
            let merged = m.replace(' ', "");
            if !tokens.contains(&merged) {
                tokens.push(merged);
            }
        }
        let vocab = Vocab::new(&tokens).unwrap();
        let merges: Vec<String> = merges.iter().map(|s| s.to_string()).collect();
        (
            Bpe::new(PreTokenizer::new(pre).unwrap(), &vocab, &merges).unwrap(),
            vocab,
        )
    }

    fn id(vocab: &Vocab, text: &str) -> u32 {
        vocab.id(text).unwrap()
    }

    #[test]
    fn merges_apply_by_rank_not_position() {
        // "b c" outranks "a b", so "abc" becomes a + bc, not ab + c.
        let (bpe, ids) = tiny(&["b c", "a b"], "gpt-2");
        let mut out = Vec::new();
        bpe.encode("abc", &ids, &mut out);
        assert_eq!(out, [id(&ids, "a"), id(&ids, "bc")]);
    }

    #[test]
    fn a_repeated_merge_takes_its_last_rank() {
        // "a b" listed again after "b c" ranks below it, so "abc" becomes a + bc.
        let (bpe, ids) = tiny(&["a b", "b c", "a b"], "gpt-2");
        let mut out = Vec::new();
        bpe.encode("abc", &ids, &mut out);
        assert_eq!(out, [id(&ids, "a"), id(&ids, "bc")]);
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        let (bpe, ids) = tiny(&["a a"], "gpt-2");
        let mut out = Vec::new();
        bpe.encode("aaa", &ids, &mut out);
        assert_eq!(out, [id(&ids, "aa"), id(&ids, "a")]);
    }

    #[test]
    fn malformed_merges_are_errors() {
        let (_, ids) = tiny(&[], "gpt-2");
        for (merge, reason) in [
            ("ab", "no space"),
            ("a zz", "not in the vocabulary"),
            ("a b", "result"),
        ] {
            let err = Bpe::new(
                PreTokenizer::new("gpt-2").unwrap(),
                &ids,
                &[merge.to_string()],
            )
            .err()
            .unwrap();
            assert!(err.to_string().contains(reason), "{merge}: {err}");
        }
    }
}
