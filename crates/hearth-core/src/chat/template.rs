//! [`ChatTemplate`]: a template compiled with its checks (see [`super::guard`]), the
//! environment it renders in (the functions, filters and printing `transformers` gives it,
//! bounded by its [`Budget`]), and the errors of a render told apart.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, StringInput};
use minijinja::{Environment, Error, ErrorKind, State};

use super::budget::{self, check_printable, Budget, OUTPUT_CAP, OVER_BUDGET};
use super::python::{python_formatter, python_method, strftime};
use super::tojson::tojson;
use super::{guard, to_template_value, tools, ChatError, Message, TemplateValue, TEMPLATE_KEY};
use crate::gguf::Gguf;
use crate::tokenizer::Tokenizer;

/// A parsed chat template with the special-token texts it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    syntax: SyntaxConfig,
    specials: Vec<(&'static str, String)>,
    now: Option<i64>,
    budget: Budget,
    tool_syntax: Option<tools::ToolSyntax>,
}

/// Marks an error raised by the template itself, to tell it from a rendering bug.
const RAISED: &str = "raise_exception: ";

/// The template's name in errors.
const NAME: &str = "chat";

impl ChatTemplate {
    /// The template of a GGUF file, with its special tokens' texts from `tokenizer`.
    pub fn from_gguf(gguf: &Gguf, tokenizer: &Tokenizer) -> Result<Self, ChatError> {
        let source = gguf.get_str(TEMPLATE_KEY).ok_or(ChatError::NoTemplate)?;
        Self::for_tokenizer(source, tokenizer)
    }

    /// Parses `source` with the special tokens' texts from `tokenizer`.
    pub fn for_tokenizer(source: &str, tokenizer: &Tokenizer) -> Result<Self, ChatError> {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .map(str::to_string)
        };
        Self::new(
            source,
            [
                ("bos_token", text(tokenizer.bos())),
                ("eos_token", text(tokenizer.eos())),
                ("unk_token", text(tokenizer.unk())),
                ("pad_token", text(tokenizer.pad())),
            ],
        )
    }

    /// Parses `source`; `specials` are the variables such as `("bos_token", Some("<s>"))`.
    pub fn new(
        source: &str,
        specials: [(&'static str, Option<String>); 4],
    ) -> Result<Self, ChatError> {
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(describe(&e)))?;
        guard::check_source(source, &syntax).map_err(ChatError::OverBudget)?;
        guard::compile(NAME, source, &syntax).map_err(|e| compile_error(&e))?;
        let env = Environment::new();
        let specials = specials
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let mut template = ChatTemplate {
            tool_syntax: tools::ToolSyntax::of_template(source),
            env,
            source: source.to_string(),
            syntax,
            specials,
            now: None,
            budget: Budget::default(),
        };
        template.set_budget(Budget::default());
        Ok(template)
    }

    /// Replaces the default [`Budget`] of each render.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
        self.env.set_fuel(Some(budget.fuel));
        self.env.set_recursion_limit(budget.recursion);
        let cap = budget.max_output;
        guard::install(&mut self.env, cap);
        self.env
            .set_unknown_method_callback(move |state, value, method, args| {
                python_method(state, value, method, args, cap)
            });
        self.env.add_function(
            "raise_exception",
            move |state: &State, msg: &TemplateValue| -> Result<TemplateValue, Error> {
                check_printable(state, msg, cap)?;
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{RAISED}{msg}"),
                ))
            },
        );
        self.env.add_filter(
            "tojson",
            move |state: &State, value: &TemplateValue, kwargs: Kwargs| {
                tojson(state, value, kwargs, cap)
            },
        );
        // Printing recurses over lists and mappings: checked first (see `check_printable`).
        self.env
            .set_formatter(move |out, state, value| python_formatter(out, state, value, cap));
        self.env
            .add_filter("string", move |state: &State, value: &TemplateValue| {
                check_printable(state, value, cap)?;
                minijinja::filters::string(state, value)
            });
        self.env.add_filter(
            "join",
            move |state: &mut State,
                  value: &TemplateValue,
                  joiner: Option<StringInput<'_>>,
                  attribute: Option<&str>,
                  kwargs: Kwargs| {
                check_printable(state, value, cap)?;
                minijinja::filters::join(state, value, joiner, attribute, kwargs)
            },
        );
    }

    /// How the template asks for tool calls; `None` where it takes no tools.
    pub fn tool_syntax(&self) -> Option<tools::ToolSyntax> {
        self.tool_syntax
    }

    /// Fixes what `strftime_now` sees as the current time (seconds since 1970, UTC). Without
    /// it the system clock is used, where there is one.
    pub fn set_now(&mut self, unix_seconds: i64) {
        self.now = Some(unix_seconds);
    }

    /// Renders a conversation of plain messages.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_values(
            to_template_value(&messages),
            add_generation_prompt,
            None,
            &[],
        )
    }

    /// Renders any conversation (messages with tool calls, reasoning, ...), with `tools` and
    /// extra variables such as `enable_thinking`.
    pub fn render_values(
        &self,
        messages: TemplateValue,
        add_generation_prompt: bool,
        tools: Option<TemplateValue>,
        extra: &[(&str, TemplateValue)],
    ) -> Result<String, ChatError> {
        // Later entries win: extra variables override the special tokens, as in transformers.
        let mut ctx: BTreeMap<&str, TemplateValue> = self
            .specials
            .iter()
            .map(|(k, v)| (*k, TemplateValue::from(v.as_str())))
            .collect();
        ctx.extend(extra.iter().cloned());
        ctx.insert("messages", messages);
        ctx.insert(
            "add_generation_prompt",
            TemplateValue::from(add_generation_prompt),
        );
        ctx.insert("tools", tools.unwrap_or(TemplateValue::from(())));
        ctx.insert("documents", TemplateValue::from(()));
        let now = self.now.or_else(system_now);
        let cap = self.budget.max_output;
        ctx.insert(
            "strftime_now",
            TemplateValue::from_function(
                move |state: &State, format: &TemplateValue| -> Result<String, Error> {
                    check_printable(state, format, cap)?;
                    let now = now.ok_or_else(|| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            "strftime_now: the current time is unknown (set it with set_now)",
                        )
                    })?;
                    strftime(now, &format.to_string())
                },
            ),
        );
        budget::with_render_stack(|| self.render_here(TemplateValue::from(ctx)))
            .map_err(|e| ChatError::Render(format!("no thread to render on: {e}")))?
    }

    /// Renders with `ctx` as the context, on this thread.
    fn render_here(&self, ctx: TemplateValue) -> Result<String, ChatError> {
        // Compiled for each render: the instructions borrow the source.
        let compiled =
            guard::compile(NAME, &self.source, &self.syntax).map_err(|e| compile_error(&e))?;
        // The context, and whatever the template built from it, is dropped in here too.
        guard::eval(&self.env, &compiled, ctx).map_err(|e| self.classify(&e))
    }

    /// Tells the template's own refusals and budget overruns from other render errors.
    fn classify(&self, e: &Error) -> ChatError {
        let detail = e.detail().unwrap_or_default();
        let b = &self.budget;
        if let Some(msg) = detail.strip_prefix(RAISED) {
            ChatError::Raised(msg.to_string())
        } else if e.kind() == ErrorKind::OutOfFuel {
            ChatError::OverBudget(format!(
                "it used up its fuel ({} steps, or 64 bytes of data each){}",
                b.fuel,
                line_of(e)
            ))
        } else if detail.starts_with(OUTPUT_CAP) {
            ChatError::OverBudget(format!("its output passed {} bytes", b.max_output))
        } else if detail == "recursion limit exceeded" {
            ChatError::OverBudget(format!(
                "it recursed deeper than {} levels{}",
                b.recursion,
                line_of(e)
            ))
        } else if let Some(msg) = detail.strip_prefix(OVER_BUDGET) {
            ChatError::OverBudget(format!("{msg}{}", line_of(e)))
        } else {
            ChatError::Render(describe(e))
        }
    }
}

/// A template that does not compile: a syntax error, or too costly to compile.
fn compile_error(e: &Error) -> ChatError {
    match e.detail().and_then(|d| d.strip_prefix(OVER_BUDGET)) {
        Some(msg) => ChatError::OverBudget(format!("{msg}{}", line_of(e))),
        None => ChatError::Syntax(describe(e)),
    }
}

fn line_of(e: &Error) -> String {
    e.line().map(|l| format!(" (line {l})")).unwrap_or_default()
}

#[cfg(not(target_arch = "wasm32"))]
fn system_now() -> Option<i64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    i64::try_from(since.as_secs()).ok()
}

/// wasm32-unknown-unknown has no clock; the embedder sets one with [`ChatTemplate::set_now`].
#[cfg(target_arch = "wasm32")]
fn system_now() -> Option<i64> {
    None
}

/// An error's message without minijinja's source listing, with the causes it wraps.
fn describe(e: &Error) -> String {
    let mut msg = match e.detail() {
        Some(d) => d.to_string(),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests;
