//! The vocabulary as llguidance sees it: every token's bytes in a trie, and the tokenizer for
//! the text it turns back into tokens.

use std::sync::Arc;

use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv, INVALID_TOKEN};

use crate::tokenizer::Tokenizer;

struct Vocab {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Vocab {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammar text continues the output: SentencePiece must not add its leading space.
        let mut ids = self
            .tokenizer
            .encode_continuation(&String::from_utf8_lossy(s));
        // Text the vocabulary cannot spell is no token at all, not the unknown token.
        if let Some(at) = ids.iter().position(|&id| Some(id) == self.tokenizer.unk()) {
            ids.truncate(at);
        }
        ids
    }
}

/// The environment for `tokenizer`. Special tokens (those that decode to nothing as text) are
/// their text behind llguidance's 0xFF marker, so that text never produces them and grammars
/// can name them; end-of-generation tokens are the tokenizer's.
pub fn env(tokenizer: Arc<Tokenizer>) -> TokEnv {
    let n_vocab = tokenizer.n_vocab();
    let words: Vec<Vec<u8>> = (0..n_vocab as u32)
        .map(|id| {
            let mut bytes = Vec::new();
            tokenizer.token_bytes(id, true, &mut bytes);
            if bytes.is_empty() {
                tokenizer.token_bytes(id, false, &mut bytes);
                if !bytes.is_empty() {
                    bytes.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
                }
            }
            bytes
        })
        .collect();
    let stops = tokenizer.stop_ids();
    let mut info = TokRxInfo::new(
        n_vocab as u32,
        stops.first().copied().unwrap_or(INVALID_TOKEN),
    );
    info.tok_bos = tokenizer.bos();
    info.tok_unk = tokenizer.unk();
    info.tok_pad = tokenizer.pad();
    info.tok_end_of_turn = tokenizer.eot();
    let mut trie = TokTrie::from(&info, &words);
    if !stops.is_empty() {
        trie = trie.with_eos_tokens(stops);
    }
    Arc::new(Vocab { trie, tokenizer })
}
