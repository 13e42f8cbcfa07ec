//! Tool calls: the syntax a chat template asks for them in, the output format that holds a
//! reply to it (arguments valid against each tool's JSON schema), and the calls read back out.

use serde_json::{json, Value};

use crate::constrain::{json_options, Format};

/// How a model writes a tool call, known from its chat template's instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolSyntax {
    /// Qwen2.5, Qwen3 and other Hermes-style templates: each call is
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, after any text.
    Hermes,
    /// Llama 3.1 and later: the whole reply is `{"name": ..., "parameters": {...}}`.
    LlamaJson,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

impl ToolSyntax {
    /// The syntax `template` (a chat template's source) asks for; `None` where it takes no
    /// tools.
    pub fn of_template(template: &str) -> Option<Self> {
        if template.contains(HERMES_OPEN) {
            Some(ToolSyntax::Hermes)
        } else if template.contains("\"parameters\": dictionary of argument name") {
            Some(ToolSyntax::LlamaJson)
        } else {
            None
        }
    }

    fn arguments_key(self) -> &'static str {
        match self {
            ToolSyntax::Hermes => "arguments",
            ToolSyntax::LlamaJson => "parameters",
        }
    }
}

/// A function the model may call (OpenAI's `{type: "function", function: {...}}`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Function {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The arguments' JSON schema; absent: any object.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// OpenAI's `tool_choice`.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// Text or calls, as the model chooses.
    Auto,
    /// Text only: the tools are shown to the model, and nothing is held to them.
    None,
    /// One or more calls.
    Required,
    /// Calls of this function only.
    Function(String),
}

/// A call read back from a reply.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ToolError {
    #[error("tool_choice names {0:?}, which is not among the tools")]
    UnknownFunction(String),
    #[error("tool_choice {0:?} needs at least one tool")]
    NoTools(&'static str),
    #[error("the tool name {0:?} is not a plain identifier")]
    BadName(String),
}

/// The output format of a reply that may (`Auto`) or must call `tools`, one call or (with
/// `parallel`) several; `None` where nothing is held (`ToolChoice::None`, or `Auto` without
/// tools).
pub fn reply_format(
    syntax: ToolSyntax,
    tools: &[Function],
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Option<Format>, ToolError> {
    let chosen: Vec<&Function> = match choice {
        ToolChoice::None => return Ok(None),
        ToolChoice::Auto if tools.is_empty() => return Ok(None),
        ToolChoice::Required if tools.is_empty() => return Err(ToolError::NoTools("required")),
        ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Function(name) => {
            let f = tools.iter().filter(|f| &f.name == name).collect::<Vec<_>>();
            if f.is_empty() {
                return Err(ToolError::UnknownFunction(name.clone()));
            }
            f
        }
    };
    for f in &chosen {
        let plain = !f.name.is_empty()
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !plain {
            return Err(ToolError::BadName(f.name.clone()));
        }
    }
    let key = syntax.arguments_key();
    // "name" first: properties come out in the order the schema lists them.
    let calls: Vec<Value> = chosen
        .iter()
        .map(|f| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": f.name},
                    key: f.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
                },
                "required": ["name", key],
                "additionalProperties": false,
            })
        })
        .collect();
    let body = json!({"anyOf": calls, "x-guidance": json_options(false)});
    let auto = *choice == ToolChoice::Auto;
    let lark = match syntax {
        ToolSyntax::Hermes => {
            let text = r"TEXT: /(?s:.+)/ & ~/(?s:.*)<tool_call>(?s:.*)/";
            let start = if auto {
                "start: TEXT | calls | TEXT calls"
            } else {
                "start: calls"
            };
            let more = if parallel { "(\"\\n\" call)*" } else { "" };
            format!(
                "{start}\ncalls: call {more}\ncall: \"{HERMES_OPEN}\\n\" body \"\\n{HERMES_CLOSE}\"\nbody: %json {body}\n{text}\n"
            )
        }
        ToolSyntax::LlamaJson => {
            // A reply that is not a call is text that does not open a JSON object.
            let start = if auto {
                "start: TEXT | body"
            } else {
                "start: body"
            };
            format!("{start}\nbody: %json {body}\nTEXT: /[^{{](?s:.*)/\n")
        }
    };
    Ok(Some(Format::Lark(lark)))
}

/// Splits a reply into its text and the calls in it. Calls that do not parse stay text.
pub fn parse_reply(syntax: ToolSyntax, reply: &str) -> (String, Vec<ToolCall>) {
    let key = syntax.arguments_key();
    let call = |json: &str| -> Option<ToolCall> {
        let v: Value = serde_json::from_str(json.trim()).ok()?;
        Some(ToolCall {
            name: v.get("name")?.as_str()?.to_string(),
            arguments: v.get(key)?.to_string(),
        })
    };
    match syntax {
        ToolSyntax::Hermes => {
            let Some(at) = reply.find(HERMES_OPEN) else {
                return (reply.to_string(), Vec::new());
            };
            let mut calls = Vec::new();
            let mut rest = &reply[at..];
            while let Some(open) = rest.strip_prefix(HERMES_OPEN) {
                let Some(end) = open.find(HERMES_CLOSE) else {
                    break;
                };
                match call(&open[..end]) {
                    Some(c) => calls.push(c),
                    None => break,
                }
                rest = open[end + HERMES_CLOSE.len()..].trim_start();
            }
            if !rest.is_empty() {
                // Something that is not a call: the reply stays text.
                return (reply.to_string(), Vec::new());
            }
            (reply[..at].trim_end().to_string(), calls)
        }
        // Only a JSON object has a "name": the whole reply is the call.
        ToolSyntax::LlamaJson => match call(reply) {
            Some(c) => (String::new(), vec![c]),
            None => (reply.to_string(), Vec::new()),
        },
    }
}

/// Holds back streamed text that may be the start of a call, so that only the reply's text
/// streams as text.
pub struct ReplyStream {
    syntax: ToolSyntax,
    /// Everything so far.
    reply: String,
    /// How much of `reply` has been given out as text.
    shown: usize,
}

impl ReplyStream {
    pub fn new(syntax: ToolSyntax) -> Self {
        ReplyStream {
            syntax,
            reply: String::new(),
            shown: 0,
        }
    }

    /// Takes the next piece of the reply and returns the text that is surely not a call.
    pub fn push(&mut self, piece: &str) -> String {
        self.reply.push_str(piece);
        let safe = match self.syntax {
            ToolSyntax::Hermes => match self.reply.find(HERMES_OPEN) {
                Some(at) => at,
                // Keep back the longest ending that could start the opening tag.
                None => {
                    let held = (1..HERMES_OPEN.len())
                        .rev()
                        .find(|&n| {
                            self.reply.len() >= n
                                && self.reply.is_char_boundary(self.reply.len() - n)
                                && HERMES_OPEN.starts_with(&self.reply[self.reply.len() - n..])
                        })
                        .unwrap_or(0);
                    self.reply.len() - held
                }
            },
            ToolSyntax::LlamaJson => {
                let start = self.reply.trim_start();
                if start.is_empty() || start.starts_with('{') {
                    self.shown
                } else {
                    self.reply.len()
                }
            }
        };
        let out = self.reply[self.shown..safe.max(self.shown)].to_string();
        self.shown = safe.max(self.shown);
        out
    }

    /// The reply is complete: the text not yet given out, and the calls.
    pub fn finish(self) -> (String, Vec<ToolCall>) {
        let (text, calls) = parse_reply(self.syntax, &self.reply);
        let rest = if calls.is_empty() {
            self.reply[self.shown..].to_string()
        } else {
            text.get(self.shown..).unwrap_or_default().to_string()
        };
        (rest, calls)
    }
}

#[cfg(test)]
mod tests;
