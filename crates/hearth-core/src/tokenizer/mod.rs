//! Tokenizers built from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Two models: byte-level BPE (`gpt2`, with the pre-tokenizer `tokenizer.ggml.pre` names) and
//! SentencePiece-style BPE with scores and byte fallback (`llama`). Token ids are those Hugging
//! Face `tokenizers` gives for the same vocabulary.
//!
//! Special tokens: control (type 3), user-defined (4) and unknown (2) tokens are matched in the
//! input text, longest first at the leftmost position, before any other processing, as Hugging
//! Face matches its added tokens; [`Tokenizer::encode_with`] can restrict that to user-defined
//! tokens, so text from a user never turns into control tokens. In Phi-3's SentencePiece
//! vocabulary the chat tokens also swallow the whitespace after them, as its `tokenizer.json`
//! (`rstrip`) has them do.
//!
//! Decoding follows Hugging Face's `decode`: special tokens show as their text unless skipped,
//! and a SentencePiece decode drops the one leading space that encoding added. Bytes that do not
//! form UTF-8 become U+FFFD as `String::from_utf8_lossy` replaces them (one per invalid sequence;
//! Hugging Face's SentencePiece decoder gives one per byte there), so a streamed decode can emit
//! each character as soon as it is complete and still equal the whole decode.

mod bpe;
pub mod pretokenize;
mod spm;
mod vocab;

use std::collections::HashMap;

use crate::gguf::{Array, Gguf};
use bpe::Bpe;
use pretokenize::PreTokenizer;
use spm::Spm;
use vocab::Vocab;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenizerError {
    #[error("metadata key {0:?} is missing or has the wrong type")]
    MissingKey(&'static str),
    #[error("metadata key {0:?} has the wrong type")]
    WrongType(&'static str),
    #[error("tokenizer model {0:?} is not supported (supported: gpt2 for byte-level BPE, llama for SentencePiece)")]
    UnsupportedModel(String),
    #[error("pre-tokenizer {0:?} is not supported (supported: {sup})", sup = pretokenize::SUPPORTED)]
    UnsupportedPreTokenizer(String),
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("the vocabulary has {0} tokens, more than 32-bit token ids can number")]
    VocabTooLarge(usize),
    #[error("the vocabulary's texts take {0} bytes, more than 32-bit offsets can address")]
    VocabTextTooLarge(usize),
    #[error("{key} has {got} entries but the vocabulary has {want} tokens")]
    LengthMismatch {
        key: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{key} = {id} is outside the vocabulary of {n_vocab} tokens")]
    IdOutOfRange {
        key: &'static str,
        id: u64,
        n_vocab: usize,
    },
    #[error("token {id} has type {ty}, which is not a GGUF token type (0 to 6)")]
    BadTokenType { id: usize, ty: i64 },
    #[error("merge {index} ({merge:?}) is malformed: {reason}")]
    BadMerge {
        index: usize,
        merge: String,
        reason: &'static str,
    },
    #[error("the vocabulary has no token for byte 0x{0:02X}, which byte-level BPE needs")]
    MissingByte(u8),
    #[error("the vocabulary has neither all 256 <0xXX> byte tokens nor an unknown token")]
    NoFallback,
    #[error("tokenizer.ggml.add_bos_token is set but there is no tokenizer.ggml.bos_token_id")]
    NoBos,
    #[error("tokenizer.ggml.add_eos_token is set but there is no tokenizer.ggml.eos_token_id")]
    NoEos,
    #[error("the pre-tokenizer pattern does not compile: {0}")]
    Regex(String),
}

/// GGUF's token types (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_gguf(ty: i64) -> Option<Self> {
        Some(match ty {
            // 0 is "undefined", which llama.cpp treats as normal.
            0 | 1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }

    /// Tokens that are matched in input text as a whole.
    fn is_special(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }

    /// Tokens that `skip_special` leaves out of decoded text (Hugging Face's special tokens).
    fn is_skippable(self) -> bool {
        matches!(self, TokenType::Control | TokenType::Unknown)
    }
}

enum Model {
    Bpe(Box<Bpe>),
    Spm(Box<Spm>),
}

/// Texts of the tokens llama.cpp ends generation at, when the file does not name them.
const END_OF_GENERATION: [&str; 13] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

/// Of those, the ones that end a chat turn, in order of preference for [`Tokenizer::eot`].
const END_OF_TURN: [&str; 8] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "_<EOT>",
    "<|endoftext|>",
    "<end_of_utterance>",
];

/// Special tokens grouped by first byte, longest first, for leftmost-longest matching. Their
/// texts stay in the vocabulary (Gemma 3 has some 6,000 special tokens).
struct SpecialMatcher {
    by_first_byte: HashMap<u8, Vec<Special>>,
}

struct Special {
    id: u32,
    ty: TokenType,
    /// The token swallows the whitespace after it (Hugging Face's `rstrip`).
    rstrip: bool,
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

impl SpecialMatcher {
    fn new(vocab: &Vocab, types: &[TokenType], rstrip: impl Fn(&str) -> bool) -> Self {
        let mut by_first_byte: HashMap<u8, Vec<Special>> = HashMap::new();
        for (id, (text, &ty)) in vocab.iter().zip(types).enumerate() {
            if ty.is_special() && !text.is_empty() {
                by_first_byte
                    .entry(text.as_bytes()[0])
                    .or_default()
                    .push(Special {
                        id: id as u32,
                        ty,
                        rstrip: rstrip(text),
                    });
            }
        }
        let len = |s: &Special| vocab.token(s.id).map_or(0, str::len);
        for list in by_first_byte.values_mut() {
            list.sort_by(|a, b| len(b).cmp(&len(a)).then(a.id.cmp(&b.id)));
        }
        SpecialMatcher { by_first_byte }
    }

    fn split<'a>(&self, vocab: &Vocab, text: &'a str, control: bool) -> Vec<Fragment<'a>> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let found = self.by_first_byte.get(&bytes[i]).and_then(|list| {
                list.iter().find_map(|s| {
                    let t = vocab.token(s.id)?;
                    ((control || s.ty == TokenType::UserDefined) && text[i..].starts_with(t))
                        .then_some((s, t.len()))
                })
            });
            match found {
                Some((s, len)) => {
                    if start < i {
                        out.push(Fragment::Text(&text[start..i]));
                    }
                    out.push(Fragment::Token(s.id));
                    i += len;
                    if s.rstrip {
                        let rest = &text[i..];
                        i += rest.len() - rest.trim_start().len();
                    }
                    start = i;
                }
                // Tokens are UTF-8 and match only where a character starts, so stepping bytes is safe.
                None => i += 1,
            }
        }
        if start < bytes.len() {
            out.push(Fragment::Text(&text[start..]));
        }
        out
    }
}

/// Whether the special token `text` of a Phi-3 SentencePiece vocabulary swallows the whitespace
/// after it. Microsoft's `tokenizer.json` for Phi-3 and Phi-3.5 mini gives every added token but
/// `<unk>`, `<s>` and `<|endoftext|>` `rstrip`, `</s>` included; GGUF has no key for it, so it
/// goes by the architecture, where llama.cpp goes by `general.name` (which newer files spell
/// "Phi 3.5 Mini Instruct", and llama.cpp then strips nothing).
fn phi3_rstrip(text: &str) -> bool {
    !matches!(text, "<unk>" | "<s>" | "<|endoftext|>")
}

/// A tokenizer: the vocabulary, its model and its special tokens.
pub struct Tokenizer {
    vocab: Vocab,
    types: Vec<TokenType>,
    model: Model,
    specials: SpecialMatcher,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    stop: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// An optional token id key; present but out of range is an error.
fn optional_id(
    gguf: &Gguf,
    key: &'static str,
    n_vocab: usize,
) -> Result<Option<u32>, TokenizerError> {
    let Some(value) = gguf.get(key) else {
        return Ok(None);
    };
    // Some converters write -1 for "none".
    let Some(id) = value.as_u64() else {
        return match value.as_f64() {
            Some(v) if v < 0.0 => Ok(None),
            _ => Err(TokenizerError::WrongType(key)),
        };
    };
    if id >= n_vocab as u64 {
        return Err(TokenizerError::IdOutOfRange { key, id, n_vocab });
    }
    Ok(Some(id as u32))
}

fn optional_bool(gguf: &Gguf, key: &'static str, default: bool) -> Result<bool, TokenizerError> {
    match gguf.get(key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or(TokenizerError::WrongType(key)),
    }
}

fn array<'g>(gguf: &'g Gguf, key: &'static str) -> Result<Option<&'g Array>, TokenizerError> {
    match gguf.get(key) {
        None => Ok(None),
        Some(v) => v.as_array().map(Some).ok_or(TokenizerError::WrongType(key)),
    }
}

fn check_len(key: &'static str, got: usize, want: usize) -> Result<(), TokenizerError> {
    if got == want {
        Ok(())
    } else {
        Err(TokenizerError::LengthMismatch { key, got, want })
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF header describes.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, TokenizerError> {
        const TOKENS: &str = "tokenizer.ggml.tokens";
        const TYPES: &str = "tokenizer.ggml.token_type";
        let tokens = array(gguf, TOKENS)?
            .ok_or(TokenizerError::MissingKey(TOKENS))?
            .as_strings()
            .ok_or(TokenizerError::WrongType(TOKENS))?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        let vocab = Vocab::new(tokens)?;
        let types = match array(gguf, TYPES)? {
            None => vec![TokenType::Normal; n],
            Some(a) => {
                let raw = a.to_i64s().ok_or(TokenizerError::WrongType(TYPES))?;
                check_len(TYPES, raw.len(), n)?;
                raw.iter()
                    .enumerate()
                    .map(|(id, &ty)| {
                        TokenType::from_gguf(ty).ok_or(TokenizerError::BadTokenType { id, ty })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let model_name = gguf
            .get_str("tokenizer.ggml.model")
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let unk = optional_id(gguf, "tokenizer.ggml.unknown_token_id", n)?;
        let (model, default_add_bos) = match model_name {
            "gpt2" => {
                const PRE: &str = "tokenizer.ggml.pre";
                const MERGES: &str = "tokenizer.ggml.merges";
                let pre =
                    PreTokenizer::new(gguf.get_str(PRE).ok_or(TokenizerError::MissingKey(PRE))?)?;
                let merges = array(gguf, MERGES)?
                    .ok_or(TokenizerError::MissingKey(MERGES))?
                    .as_strings()
                    .ok_or(TokenizerError::WrongType(MERGES))?;
                (Model::Bpe(Box::new(Bpe::new(pre, &vocab, merges)?)), false)
            }
            "llama" => {
                const SCORES: &str = "tokenizer.ggml.scores";
                let scores = array(gguf, SCORES)?
                    .ok_or(TokenizerError::MissingKey(SCORES))?
                    .as_f32s()
                    .ok_or(TokenizerError::WrongType(SCORES))?
                    .to_vec();
                check_len(SCORES, scores.len(), n)?;
                let add_space_prefix =
                    optional_bool(gguf, "tokenizer.ggml.add_space_prefix", true)?;
                (
                    Model::Spm(Box::new(Spm::new(scores, &vocab, unk, add_space_prefix)?)),
                    true,
                )
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };

        let bos = optional_id(gguf, "tokenizer.ggml.bos_token_id", n)?;
        let eos = optional_id(gguf, "tokenizer.ggml.eos_token_id", n)?;
        let pad = optional_id(gguf, "tokenizer.ggml.padding_token_id", n)?;
        let eom = optional_id(gguf, "tokenizer.ggml.eom_token_id", n)?;
        let add_bos = optional_bool(gguf, "tokenizer.ggml.add_bos_token", default_add_bos)?;
        let add_eos = optional_bool(gguf, "tokenizer.ggml.add_eos_token", false)?;
        if add_bos && bos.is_none() {
            return Err(TokenizerError::NoBos);
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::NoEos);
        }
        let special_id = |text: &str| vocab.id(text).filter(|&id| types[id as usize].is_special());
        let eot = match optional_id(gguf, "tokenizer.ggml.eot_token_id", n)? {
            Some(id) => Some(id),
            None => END_OF_TURN.iter().find_map(|t| special_id(t)),
        };
        let mut stop: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        stop.extend(END_OF_GENERATION.iter().filter_map(|t| special_id(t)));
        stop.sort_unstable();
        stop.dedup();

        let phi3 = model_name == "llama"
            && (gguf.get_str("general.architecture") == Some("phi3")
                || gguf.get_str("general.name").is_some_and(|n| {
                    let n = n.to_lowercase();
                    n.contains("phi3") || n.contains("phi-3")
                }));
        let specials = SpecialMatcher::new(&vocab, &types, |t| phi3 && phi3_rstrip(t));
        Ok(Tokenizer {
            vocab,
            types,
            model,
            specials,
            bos,
            eos,
            eot,
            unk,
            pad,
            stop,
            add_bos,
            add_eos,
        })
    }

    /// Encodes `text`, recognising special-token text in it as those tokens, as Hugging Face
    /// does. `add_special` adds BOS/EOS as the file asks (`add_special_tokens` in Hugging Face).
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with(text, add_special, true)
    }

    /// As [`encode`](Self::encode); with `parse_special` false, control tokens' text in `text`
    /// is encoded as ordinary text (user-defined tokens such as `<think>` are still matched).
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let fragments = self.specials.split(&self.vocab, text, parse_special);
        match &self.model {
            Model::Bpe(bpe) => {
                for f in fragments {
                    match f {
                        Fragment::Text(t) => bpe.encode(t, &self.vocab, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm(spm) => {
                // SentencePiece adds its leading space to text at the start and after each special token.
                let mut after_special = true;
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            spm.encode(t, after_special, &self.vocab, &self.types, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Encodes `text` as the continuation of earlier text: no BOS, no SentencePiece leading
    /// space, control tokens' text as plain text.
    pub(crate) fn encode_continuation(&self, text: &str) -> Vec<u32> {
        match &self.model {
            Model::Spm(spm) => {
                let mut out = Vec::new();
                spm.encode(text, false, &self.vocab, &self.types, &mut out);
                out
            }
            Model::Bpe(_) => self.encode_with(text, false, false),
        }
    }

    /// Decodes ids to text, special tokens shown (Hugging Face's `skip_special_tokens=False`).
    /// Ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, false)
    }

    /// Decodes ids to text; with `skip_special`, control and unknown tokens are left out.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> String {
        let mut d = self.stream_decoder(skip_special);
        let mut text = String::new();
        for &id in ids {
            text.push_str(&d.push(id));
        }
        text.push_str(&d.finish());
        text
    }

    /// A decoder that turns ids into text one at a time.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            text: TextDecoder::new(skip_special),
        }
    }

    /// Appends the bytes token `id` stands for.
    pub(crate) fn token_bytes(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) {
        let (Some(text), Some(&ty)) = (self.vocab.token(id), self.types.get(id as usize)) else {
            return;
        };
        match ty {
            TokenType::Unused => {}
            _ if skip_special && ty.is_skippable() => {}
            TokenType::Byte => match spm::byte_of(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            _ => match &self.model {
                Model::Bpe(bpe) => bpe.token_bytes(text, out),
                Model::Spm(_) => {
                    for c in text.chars() {
                        let c = if c == spm::SPACE { ' ' } else { c };
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
            },
        }
    }

    /// The text one token stands for on its own, leading space included, special tokens shown;
    /// a token that is part of a character shows as U+FFFD.
    pub fn piece(&self, id: u32) -> String {
        let mut bytes = Vec::new();
        self.token_bytes(id, false, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether decoding drops one leading space (the one SentencePiece encoding adds).
    fn strips_leading_space(&self) -> bool {
        matches!(&self.model, Model::Spm(spm) if spm.add_space_prefix)
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The vocabulary's text for `id` (byte-level or "▁" escaped, as stored).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.token(id)
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub fn model_name(&self) -> &'static str {
        match self.model {
            Model::Bpe(_) => "gpt2",
            Model::Spm(_) => "llama",
        }
    }

    /// The byte-level pre-tokenizer's name; `None` for SentencePiece.
    pub fn pre_tokenizer(&self) -> Option<&'static str> {
        match &self.model {
            Model::Bpe(bpe) => Some(bpe.pre.name()),
            Model::Spm(_) => None,
        }
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token of chat models (`<|eot_id|>`, `<|im_end|>`, ...), named by the file
    /// or found by its text.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generation ends at `id`: EOS, EOT, EOM and the other end-of-generation control
    /// tokens llama.cpp recognises by their text.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.binary_search(&id).is_ok()
    }

    /// Every id [`is_stop`](Self::is_stop) accepts, ascending.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop
    }
}

/// Turns ids into text as they arrive. Text comes out as soon as it is complete UTF-8, never
/// half a character; the pieces [`push`](Self::push) and [`finish`](Self::finish) return join to
/// exactly what [`Tokenizer::decode_with`] gives for the same ids.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    text: TextDecoder,
}

impl StreamDecoder<'_> {
    /// Adds one token and returns the text it completes (often empty mid-character).
    pub fn push(&mut self, id: u32) -> String {
        self.text.push(self.tokenizer, id)
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        self.text.finish()
    }
}

/// A [`StreamDecoder`]'s state without the tokenizer, for a holder that shares the tokenizer
/// (the generator): each call is given it.
pub struct TextDecoder {
    skip_special: bool,
    /// Bytes not yet returned: at most an incomplete UTF-8 sequence.
    pending: Vec<u8>,
    /// No byte has been seen yet (the SentencePiece leading space is still to drop).
    at_start: bool,
}

impl TextDecoder {
    pub fn new(skip_special: bool) -> Self {
        TextDecoder {
            skip_special,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Adds one token of `tokenizer` and returns the text it completes.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        tokenizer.token_bytes(id, self.skip_special, &mut self.pending);
        if self.at_start && !self.pending.is_empty() {
            self.at_start = false;
            if self.pending[0] == b' ' && tokenizer.strips_leading_space() {
                self.pending.remove(0);
            }
        }
        let mut out = String::new();
        let mut done = 0;
        loop {
            match std::str::from_utf8(&self.pending[done..]) {
                Ok(s) => {
                    out.push_str(s);
                    done = self.pending.len();
                    break;
                }
                Err(e) => {
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[done..done + e.valid_up_to()],
                    ));
                    done += e.valid_up_to();
                    match e.error_len() {
                        // Bytes that can never become valid: one U+FFFD, as from_utf8_lossy does.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            done += len;
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..done);
        out
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests;
