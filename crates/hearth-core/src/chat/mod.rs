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

mod budget;
mod guard;
pub mod tools;

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, StringInput, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State};

pub use budget::{Budget, MAX_NESTING};
pub use minijinja::Value as TemplateValue;

use budget::{check_printable, count_output, over_budget, OUTPUT_CAP, OVER_BUDGET};

use crate::gguf::Gguf;
use crate::tokenizer::Tokenizer;

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

/// Python's string, dict and list methods (minijinja-contrib's pycompat), with `str.format`
/// paying for its padding first, and arguments that are lists or mappings checked as
/// [`guard::check_method`] says (at most `cap` bytes of text where they are printed).
fn python_method(
    state: &mut State,
    value: &TemplateValue,
    method: &str,
    args: &[TemplateValue],
    cap: usize,
) -> Result<TemplateValue, Error> {
    if let (Some(format), "format") = (value.as_str(), method) {
        state.consume_fuel(budget::format_padding_bound(format) / 64)?;
    }
    guard::check_method(state, value, method, args, cap)?;
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Prints values as Python's `str` does where it differs from minijinja, after checking that
/// a list or mapping can be printed at all (at most `cap` items), and counts the text against
/// the output cap of `cap` bytes.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &TemplateValue,
    cap: usize,
) -> Result<(), Error> {
    check_printable(state, value, cap)?;
    let text = match value.kind() {
        ValueKind::None => "None".to_string(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => python_float(f),
            Err(_) => escaped(state, value)?,
        },
        _ => match value.as_str() {
            // Written as it is: counted without a copy.
            Some(s) if value.is_safe() || matches!(state.auto_escape(), AutoEscape::None) => {
                count_output(state, s.len(), cap)?;
                return minijinja::escape_formatter(out, state, value);
            }
            _ => escaped(state, value)?,
        },
    };
    count_output(state, text.len(), cap)?;
    out.write_str(&text).map_err(Error::from)
}

/// What minijinja's formatter writes for `value`.
fn escaped(state: &mut State, value: &TemplateValue) -> Result<String, Error> {
    let mut text = String::new();
    let mut out = minijinja::machinery::make_string_output(&mut text);
    minijinja::escape_formatter(&mut out, state, value)?;
    drop(out);
    Ok(text)
}

/// Python's `repr` of a float: shortest round-trip digits, exponent form outside 1e-4..1e16.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!(
            "{first}{frac}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    };
    format!("{sign}{body}")
}

/// The `tojson` filter of `transformers`: Python's `json.dumps` with `ensure_ascii=False`.
/// Its text may be at most `cap` bytes (the output cap: a larger one could not be rendered).
fn tojson(
    state: &State,
    value: &TemplateValue,
    kwargs: Kwargs,
    cap: usize,
) -> Result<TemplateValue, Error> {
    let indent: Option<TemplateValue> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    // Writing JSON is slower than printing: the items are paid for, and counted, first.
    check_printable(state, value, cap)?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => {
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                if n > cap {
                    return Err(over_budget(format!(
                        "tojson: an indent of {n} passes the output cap"
                    )));
                }
                Some(" ".repeat(n))
            }
            (_, Some(s)) => Some(s.to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be a number or a string",
                ))
            }
        },
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            ))
        }
        // Python drops the space after "," when indenting, where it would end a line.
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let mut out = String::new();
    let opts = JsonOptions {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
        cap,
    };
    write_json(&mut out, value, &opts, 0)?;
    // The engine charges the result's bytes as it charges any string's; writing them walked
    // the value, which costs a fuel per 16 bytes more.
    state.consume_fuel(out.len() as u64 / 16)?;
    Ok(TemplateValue::from_safe_string(out))
}

struct JsonOptions {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
    /// Most bytes of text.
    cap: usize,
}

fn write_json(
    out: &mut String,
    v: &TemplateValue,
    o: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_NESTING {
        return Err(over_budget(format!(
            "tojson: a value nested deeper than {MAX_NESTING} levels"
        )));
    }
    check_cap(out, o)?;
    // The cap is checked after each level of indent, since an indent may be long.
    let newline = |out: &mut String, depth: usize| -> Result<(), Error> {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
                check_cap(out, o)?;
            }
        }
        Ok(())
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => out.push_str(&python_float(f64::try_from(v.clone())?)),
        ValueKind::String => json_string(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<TemplateValue> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1)?;
                write_json(out, item, o, depth + 1)?;
            }
            newline(out, depth)?;
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<TemplateValue> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1)?;
                match key.as_str() {
                    Some(k) => json_string(out, k, o.ensure_ascii),
                    None => json_string(out, &key.to_string(), o.ensure_ascii),
                }
                out.push_str(&o.key_sep);
                write_json(out, &v.get_item(key)?, o, depth + 1)?;
            }
            newline(out, depth)?;
            out.push('}');
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a {kind} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

fn check_cap(out: &str, o: &JsonOptions) -> Result<(), Error> {
    if out.len() > o.cap {
        return Err(over_budget(format!(
            "tojson: the text passed the output cap of {} bytes",
            o.cap
        )));
    }
    Ok(())
}

/// A JSON string literal as Python writes it.
fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime` for the directives chat templates use (dates in UTC).
fn strftime(unix: i64, format: &str) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            other => {
                let d = other.map_or(String::new(), String::from);
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: %{d} is not supported"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(
            source,
            [
                ("bos_token", Some("<s>".into())),
                ("eos_token", Some("</s>".into())),
                ("unk_token", None),
                ("pad_token", None),
            ],
        )
        .unwrap()
    }

    fn render(source: &str) -> String {
        template(source)
            .render(&[Message::new("user", "  hi  ")], true)
            .unwrap()
    }

    #[test]
    fn python_isms_work() {
        assert_eq!(
            render(
                "{{ messages[0].content.strip() }}|{{ messages[0]['content'].startswith('  h') }}"
            ),
            "hi|True"
        );
        assert_eq!(
            render("{{ bos_token }}{{ eos_token }}{{ unk_token is defined }}"),
            "<s></s>False"
        );
        assert_eq!(
            render("{% if tools %}t{% endif %}{{ tools }}|{{ add_generation_prompt }}"),
            "None|True"
        );
        assert_eq!(
            render(
                "{% for m in messages %}{% if loop.first %}{% break %}{% endif %}{% endfor %}ok"
            ),
            "ok"
        );
    }

    #[test]
    fn blocks_are_trimmed_as_transformers_does() {
        assert_eq!(render("{% if true %}\n  a\n{% endif %}\n"), "  a\n");
        assert_eq!(render("  {% if true %}b{% endif %}"), "b");
    }

    #[test]
    fn raise_exception_is_reported_as_the_templates_own_error() {
        let err = template("{{ raise_exception('Roles must alternate') }}")
            .render(&[], true)
            .unwrap_err();
        assert!(
            matches!(&err, ChatError::Raised(m) if m == "Roles must alternate"),
            "{err:?}"
        );
        assert!(matches!(
            ChatTemplate::new("{% if %}", Default::default()),
            Err(ChatError::Syntax(_))
        ));
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let t = template("{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'é\"\\n' | tojson(ensure_ascii=true) }}");
        let x = TemplateValue::from(serde_json_like());
        let out = t
            .render_values(TemplateValue::from(()), false, None, &[("x", x)])
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, 2.5, null, true], \"b\": \"日本\"}|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": \"日本\"\n}|\"\\u00e9\\\"\\n\""
        );
    }

    fn serde_json_like() -> std::collections::BTreeMap<&'static str, TemplateValue> {
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "a",
            TemplateValue::from(vec![
                TemplateValue::from(1),
                TemplateValue::from(2.5),
                TemplateValue::from(()),
                TemplateValue::from(true),
            ]),
        );
        m.insert("b", TemplateValue::from("日本"));
        m
    }

    /// Values nested deep enough to overflow a browser's stack when minijinja drops,
    /// iterates or compares them (about 10,000 levels of lists there) are never built: each of
    /// these ends in a budget error on a 1 MiB stack, which minijinja's recursion over such a
    /// value would overflow.
    #[test]
    fn deep_values_are_refused_on_a_stack_as_small_as_a_browsers() {
        const LOOP: &str = "{% for i in range(60000) %}";
        let cases = [
            "{% set ns = namespace(x=[]) %}{{L}}{% set ns.x = [ns.x] %}{% endfor %}",
            "{% set ns = namespace(x={}) %}{{L}}{% set ns.x = {'a': ns.x} %}{% endfor %}",
            "{% set ns = namespace(x=[1]) %}{{L}}{% set ns.x = ns.x * 1 %}{% endfor %}{{ ns.x | list }}",
            "{% set ns = namespace(x=[1]) %}{{L}}{% set ns.x = ns.x[0:] %}{% endfor %}{{ ns.x | list }}",
            "{% set ns = namespace(x=range(1)) %}{{L}}{% set ns.x = ns.x | chain([]) %}{% endfor %}{{ ns.x | list }}",
            "{% set ns = namespace(x={}) %}{{L}}{% set ns.x = ns.x | chain({}) %}{% endfor %}{{ ns.x | list }}",
            "{% set ns = namespace(x=[1]) %}{{L}}{% set ns.x = ns.x | batch(1) %}{% endfor %}",
            "{% set ns = namespace(l=none) %}{{L}}{% for j in [ns.l] %}{% set ns.l = loop %}{% endfor %}{% endfor %}",
            "{% set h = namespace(n=namespace()) %}{{L}}{% set n = namespace() %}{% set c = h.n %}{% set c.x = n %}{% set h.n = n %}{% endfor %}",
            "{% macro f(x, n) %}{% if n %}{{ f([[[[[[[[[[x]]]]]]]]]], n - 1) }}{% endif %}{% endmacro %}{{ f([], 60000) }}",
        ];
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                for case in cases {
                    let source = case.replace("{{L}}", LOOP);
                    let t = template(&source);
                    let ctx = TemplateValue::from(BTreeMap::from([(
                        "messages",
                        TemplateValue::from(()),
                    )]));
                    let result = t.render_here(ctx);
                    assert!(
                        matches!(result, Err(ChatError::OverBudget(_))),
                        "{source}: {result:?}"
                    );
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn floats_print_as_python_repr() {
        for (x, s) in [
            (18.0, "18.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (123456.789, "123456.789"),
            (-0.0, "-0.0"),
            (2.5e-4, "0.00025"),
        ] {
            assert_eq!(python_float(x), s);
        }
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-23 14:05:09 UTC, a Tuesday.
        assert_eq!(
            strftime(1_721_743_509, "%d %b %Y %H:%M:%S %A %B %y %m %a %%").unwrap(),
            "23 Jul 2024 14:05:09 Tuesday July 24 07 Tue %"
        );
        assert!(strftime(0, "%Q").is_err());
        let mut t = template("{{ strftime_now('%Y-%m-%d') }}");
        t.set_now(0);
        assert_eq!(t.render(&[], false).unwrap(), "1970-01-01");
    }
}
