//! Output held to a format: a JSON schema, any JSON object, a Lark grammar or a regex.
//!
//! [`Grammars`] is built once per tokenizer (a trie of every token's bytes); each request
//! compiles its format into a [`Constraint`], which yields before every token the
//! [`TokenMask`] of tokens that keep the output a prefix of something the format accepts, and
//! follows the tokens chosen. The engine is `llguidance`: its masks cost tens of microseconds,
//! and its parser limits (lexer fuel, Earley items per token, grammar size) bound the work an
//! untrusted schema or grammar can cause, per compile and per token.

mod vocab;

use std::sync::Arc;

use llguidance::api::{ParserLimits, StopReason, TopLevelGrammar};
use llguidance::{ParserFactory, TokenParser};
use serde_json::{json, Value};

use crate::tokenizer::Tokenizer;

/// Longest schema or grammar text accepted, before any compiling.
pub const MAX_FORMAT_BYTES: usize = 1 << 20;

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// JSON valid against `schema`. `strict` refuses a schema with keywords the engine cannot
    /// enforce; without it they are ignored (the output is then held to the rest).
    JsonSchema { schema: Value, strict: bool },
    /// A grammar in llguidance's Lark dialect (also takes GBNF-style `::=` rules).
    Lark(String),
    /// A regular expression the whole output matches.
    Regex(String),
}

/// llguidance's options for JSON (a schema's `x-guidance`): compact, with the separators of
/// Python's json.dumps, since whitespace allowed anywhere is a place a weak model can loop;
/// `lenient` ignores schema keywords that cannot be enforced instead of refusing them.
pub fn json_options(lenient: bool) -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": lenient,
    })
}

impl Format {
    fn grammar(&self) -> Result<TopLevelGrammar, ConstraintError> {
        let size = match self {
            Format::JsonObject => 0,
            Format::JsonSchema { schema, .. } => schema.to_string().len(),
            Format::Lark(text) | Format::Regex(text) => text.len(),
        };
        if size > MAX_FORMAT_BYTES {
            return Err(ConstraintError::TooLarge(size));
        }
        Ok(match self {
            Format::JsonObject => TopLevelGrammar::from_json_schema(json!({
                "type": "object",
                "x-guidance": json_options(false),
            })),
            Format::JsonSchema { schema, strict } => {
                let Value::Object(map) = schema else {
                    return Err(ConstraintError::Compile(
                        "a JSON schema must be an object".into(),
                    ));
                };
                let mut map = map.clone();
                map.insert("x-guidance".into(), json_options(!strict));
                TopLevelGrammar::from_json_schema(Value::Object(map))
            }
            Format::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            Format::Regex(text) => TopLevelGrammar::from_regex(text),
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConstraintError {
    #[error("the output format is {0} bytes; at most {MAX_FORMAT_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the output format cannot be used: {0}")]
    Compile(String),
    #[error("the output format allows no token at all")]
    NothingAllowed,
    #[error("constrained decoding stopped: {0}")]
    Matcher(String),
}

/// The formats' shared half for one tokenizer: its vocabulary as llguidance sees it.
pub struct Grammars {
    factory: ParserFactory,
    n_vocab: usize,
}

impl Grammars {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, ConstraintError> {
        let n_vocab = tokenizer.n_vocab();
        let env = vocab::env(tokenizer);
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Compile(e.to_string()))?;
        factory.quiet();
        *factory.limits_mut() = ParserLimits {
            // The error names the problem; the grammar text can be large.
            verbose_errors: false,
            ..ParserLimits::default()
        };
        Ok(Grammars { factory, n_vocab })
    }

    /// Compiles `format`; an error names what is wrong with it.
    pub fn compile(&self, format: &Format) -> Result<Constraint, ConstraintError> {
        let mut parser = self
            .factory
            .create_parser(format.grammar()?)
            .map_err(|e| ConstraintError::Compile(e.to_string()))?;
        parser.start_without_prompt();
        let mut constraint = Constraint {
            parser,
            allowed: TokenMask::none(self.n_vocab),
        };
        constraint.allowed = constraint.compute_mask()?;
        if constraint.allowed.is_empty() {
            return Err(ConstraintError::NothingAllowed);
        }
        Ok(constraint)
    }
}

/// One generation's position in its format, and the tokens it allows next.
pub struct Constraint {
    parser: TokenParser,
    allowed: TokenMask,
}

fn matcher_error(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Matcher(e.to_string())
}

impl Constraint {
    /// The tokens allowed next: end-of-generation tokens where the output may end here, none
    /// where the format has reached a dead end (text no token spells) or is complete.
    pub fn allowed(&self) -> &TokenMask {
        &self.allowed
    }

    fn compute_mask(&mut self) -> Result<TokenMask, ConstraintError> {
        let n_vocab = self.allowed.n_vocab;
        match self.parser.compute_mask() {
            Ok(vob) => {
                let mut words = vob.as_slice().to_vec();
                words.resize(n_vocab.div_ceil(32), 0);
                Ok(TokenMask { words, n_vocab })
            }
            Err(_) if self.parser.stop_reason() == StopReason::NoExtensionBias => {
                Ok(TokenMask::none(n_vocab))
            }
            Err(e) => Err(matcher_error(e)),
        }
    }

    /// Follows the token chosen (one [`Constraint::allowed`] allowed), and finds the tokens
    /// allowed after it.
    pub fn accept(&mut self, token: u32) -> Result<(), ConstraintError> {
        let backtrack = self.parser.consume_token(token).map_err(matcher_error)?;
        if backtrack != 0 {
            return Err(matcher_error("the format asked to take tokens back"));
        }
        self.parser.check_stop().map_err(matcher_error)?;
        self.allowed = if self.is_complete() {
            TokenMask::none(self.allowed.n_vocab)
        } else {
            self.compute_mask()?
        };
        Ok(())
    }

    /// Whether the output is whole: the format allows nothing more, or it took an
    /// end-of-generation token where it could end.
    pub fn is_complete(&self) -> bool {
        matches!(
            self.parser.stop_reason(),
            StopReason::NoExtension | StopReason::EndOfSentence
        )
    }
}

/// One bit per token of the vocabulary: set where the token is allowed.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenMask {
    words: Vec<u32>,
    n_vocab: usize,
}

impl TokenMask {
    /// No token of `n_vocab` allowed.
    fn none(n_vocab: usize) -> Self {
        TokenMask {
            words: vec![0; n_vocab.div_ceil(32)],
            n_vocab,
        }
    }

    pub fn allows(&self, id: u32) -> bool {
        (id as usize) < self.n_vocab && self.words[id as usize / 32] >> (id % 32) & 1 == 1
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The bits, token `i` at bit `i % 32` of word `i / 32`.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Sets the logit of every token not allowed to -inf (tokens past the vocabulary too).
    pub fn apply(&self, logits: &mut [f32]) {
        for (id, l) in logits.iter_mut().enumerate() {
            if !self.allows(id as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
