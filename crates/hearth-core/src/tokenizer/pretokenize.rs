//! Byte-level BPE pre-tokenizers: how text is cut into words before BPE merges, as named by
//! `tokenizer.ggml.pre`.
//!
//! Each is the regex (and normalizer) of the Hugging Face `tokenizer.json` the name stands for.
//! The patterns use look-ahead (`\s+(?!\S)`), so they run on `fancy-regex`.

use std::borrow::Cow;

use fancy_regex::Regex;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::TokenizerError;

/// GPT-2's pattern, also SmolLM's after its digit split.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3: case-insensitive contractions, numbers in groups of up to three digits.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2 (also Qwen2.5 and Qwen3): Llama 3's pattern with single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5: Qwen2's pattern with combining marks (`\p{M}`) kept with their letters and out of
/// the punctuation runs.
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's o200k (also Phi-4-mini's): words are split at case changes (an upper-case run, then
/// lower-case letters), contractions stay with their word, and punctuation runs take a
/// following `/` as well as line breaks.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer names this crate implements, for error messages.
pub const SUPPORTED: &str = "llama-bpe, qwen2, qwen35, smollm, gpt-2, gpt-4o";

/// A named pre-tokenizer.
#[derive(Debug)]
pub struct PreTokenizer {
    name: &'static str,
    regex: Regex,
    /// Every digit is a word of its own before the regex runs (SmolLM's `Digits` step).
    split_digits: bool,
    /// Text is NFC-normalized first (Qwen2's `tokenizer.json` has an NFC normalizer).
    nfc: bool,
    /// A word that is itself in the vocabulary is taken whole, without merges (Llama 3).
    ignore_merges: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer that `tokenizer.ggml.pre` names.
    pub fn new(name: &str) -> Result<Self, TokenizerError> {
        let (name, pattern, split_digits, nfc, ignore_merges) = match name {
            // LFM2's own byte-level BPE splits words as Llama 3's does (llama.cpp maps `lfm2`
            // to the same pre-tokenizer, merges ignored for whole-word tokens).
            "llama-bpe" | "llama3" | "llama-v3" | "lfm2" => {
                ("llama-bpe", LLAMA3, false, false, true)
            }
            "qwen2" => ("qwen2", QWEN2, false, true, false),
            "qwen35" => ("qwen35", QWEN35, false, true, false),
            "smollm" => ("smollm", GPT2, true, false, false),
            "gpt-2" => ("gpt-2", GPT2, false, false, false),
            // llama.cpp gives gpt-4o no ignore_merges; its clean_spaces = false concerns only
            // decoding, where this crate cleans no spaces for any vocabulary.
            "gpt-4o" => ("gpt-4o", GPT4O, false, false, false),
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        };
        // The patterns are constants; a failure here is a bug in this file, reported as an error
        // rather than a panic all the same.
        let regex = Regex::new(pattern).map_err(|e| TokenizerError::Regex(e.to_string()))?;
        Ok(PreTokenizer {
            name,
            regex,
            split_digits,
            nfc,
            ignore_merges,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn ignore_merges(&self) -> bool {
        self.ignore_merges
    }

    /// The normalizer that runs before splitting (NFC for Qwen2; nothing for the others).
    pub fn normalize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            Cow::Owned(text.nfc().collect())
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Cuts already-normalized `text` into words: the regex's matches and any text between them.
    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut words = Vec::new();
        if self.split_digits {
            let mut start = 0;
            for (i, c) in text.char_indices() {
                if c.is_numeric() {
                    self.split_regex(&text[start..i], &mut words);
                    words.push(&text[i..i + c.len_utf8()]);
                    start = i + c.len_utf8();
                }
            }
            self.split_regex(&text[start..], &mut words);
        } else {
            self.split_regex(text, &mut words);
        }
        words
    }

    fn split_regex<'a>(&self, text: &'a str, words: &mut Vec<&'a str>) {
        let mut last = 0;
        for m in self.regex.find_iter(text) {
            match m {
                Ok(m) => {
                    if m.start() > last {
                        words.push(&text[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        words.push(m.as_str());
                    }
                    last = m.end();
                }
                // Only the backtracking limit can fail, on pathological input: the rest of the
                // text then stays one word, which BPE still encodes losslessly.
                Err(_) => break,
            }
        }
        if last < text.len() {
            words.push(&text[last..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str, text: &str) -> Vec<String> {
        PreTokenizer::new(name)
            .unwrap()
            .split(text)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn lfm2_files_name_llama3_s_pre_tokenizer() {
        let pre = PreTokenizer::new("lfm2").unwrap();
        assert_eq!(pre.name(), "llama-bpe");
        assert!(pre.ignore_merges());
        assert_eq!(
            split("lfm2", "Hello 12345!!"),
            ["Hello", " ", "123", "45", "!!"]
        );
    }

    #[test]
    fn digit_grouping_differs_between_llama3_and_qwen2() {
        assert_eq!(split("llama-bpe", "12345"), ["123", "45"]);
        assert_eq!(split("qwen2", "123"), ["1", "2", "3"]);
        assert_eq!(split("gpt-2", "a 12345"), ["a", " 12345"]);
        assert_eq!(split("smollm", "a 123"), ["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn trailing_whitespace_run_leaves_one_space_for_the_next_word() {
        assert_eq!(split("llama-bpe", "a   b"), ["a", "  ", " b"]);
        assert_eq!(split("gpt-2", "a   b  "), ["a", "  ", " b", "  "]);
    }

    #[test]
    fn qwen35_keeps_combining_marks_with_their_letters() {
        // U+0301 (a combining acute) after a letter and after punctuation.
        assert_eq!(split("qwen35", "cafe\u{301}!"), ["cafe\u{301}", "!"]);
        assert_eq!(split("qwen2", "_\u{301}j"), ["_\u{301}", "j"]);
        assert_eq!(split("qwen35", "_\u{301}j"), ["_\u{301}j"]);
    }

    #[test]
    fn qwen2_normalizes_to_nfc() {
        let pre = PreTokenizer::new("qwen2").unwrap();
        assert_eq!(pre.normalize("e\u{301}"), "\u{e9}");
        assert!(matches!(pre.normalize("plain"), Cow::Borrowed(_)));
        assert_eq!(
            PreTokenizer::new("llama-bpe")
                .unwrap()
                .normalize("e\u{301}"),
            "e\u{301}"
        );
    }

    #[test]
    fn gpt4o_splits_at_case_changes_and_keeps_contractions() {
        assert_eq!(
            split("gpt-4o", "camelCaseID HTTPServer don't"),
            ["camel", "Case", "ID", " HTTPServer", " don't"]
        );
        assert_eq!(
            split("gpt-4o", "a/b//\nc 12345"),
            ["a", "/b", "//\n", "c", " ", "123", "45"]
        );
    }

    #[test]
    fn unknown_names_are_rejected_by_name() {
        let err = PreTokenizer::new("deepseek-llm").unwrap_err();
        assert!(err.to_string().contains("deepseek-llm"), "{err}");
        assert!(err.to_string().contains("llama-bpe"), "{err}");
    }
}
