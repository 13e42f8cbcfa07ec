//! Chat templates: the Jinja template in `tokenizer.chat_template`, rendered with minijinja set
//! up the way Hugging Face `transformers` renders it (`apply_chat_template`):
//!
//! * `trim_blocks` and `lstrip_blocks` on, a single trailing newline of the template dropped;
//! * Python string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...) through
//!   minijinja-contrib's pycompat;
//! * `raise_exception(msg)`, `strftime_now(fmt)`, and a `tojson` filter that writes what
//!   Python's `json.dumps` writes (`", "` and `": "` separators, non-ASCII kept);
//! * `none`, `true` and `false` print as `None`, `True` and `False`, as Python prints them;
//! * the variables `messages`, `add_generation_prompt`, `tools` and `documents` (none unless
//!   given), and the special-token texts `bos_token`, `eos_token`, `unk_token`, `pad_token`
//!   where the file names those tokens.
//!
//! Mappings are iterated in key order, so `tojson` of a mapping sorts its keys where Python
//! keeps insertion order.
//!
//! Rendering runs under a [`Budget`]: the template is untrusted code from the model file. It is
//! compiled with checks minijinja does not make (see `guard`).
//!
//! The parts: `template` ([`ChatTemplate`]: compiling, the render's environment, its errors),
//! `python` (Python's methods, printing and `strftime`), `tojson` (the filter), `budget` (the
//! bounds of a render and the walks that pay for values), `guard` (the compiled template's
//! checks), and [`tools`] (tool calls). This module holds the conversation's types and the
//! errors.

mod budget;
mod guard;
mod python;
mod template;
mod tojson;
pub mod tools;

use minijinja::value::Serde;

pub use budget::{Budget, MAX_NESTING};
pub use minijinja::Value as TemplateValue;
pub use template::ChatTemplate;

const TEMPLATE_KEY: &str = "tokenizer.chat_template";

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the model has no chat template ({TEMPLATE_KEY} is missing)")]
    NoTemplate,
    #[error("the chat template does not parse: {0}")]
    Syntax(String),
    /// The template's own `raise_exception`, such as "Conversation roles must alternate".
    #[error("the chat template refused the conversation: {0}")]
    Raised(String),
    #[error("rendering the chat template failed: {0}")]
    Render(String),
    /// The template needed more work or memory than a render may use: a broken or hostile
    /// template, since real ones use a small part of the [`Budget`].
    #[error("the chat template was stopped: {0}; a template this costly is broken or hostile")]
    OverBudget(String),
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Any serializable value (a `serde_json::Value` conversation, say) as a template value.
pub fn to_template_value<T: serde::Serialize>(value: &T) -> TemplateValue {
    TemplateValue::from(Serde(value))
}
