//! What a request asks for, as the JS side passes it: the chat's messages, the generation's
//! options, and the output format they imply (OpenAI's `response_format`, or a reply held to
//! the `tools` under `tool_choice`). Formats, tools and tool-call arguments arrive as JSON
//! text, so schemas keep their integers exact.

use hearth_core::chat::tools::{self, Function, ToolChoice, ToolSyntax};
use hearth_core::constrain::{ConstraintError, Format};
use hearth_core::sampling::{SamplingError, SamplingOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::WebError;

/// One generation as the package asks for it: the fields of core's generation options
/// (`hearth_core::sampling::GenerateOptions`, which the session makes of them) with the output
/// format and tools beside them.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GenerateRequest {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampling: SamplingOptions,
    /// OpenAI's `response_format`, as JSON text.
    pub response_format: Option<String>,
    /// OpenAI's `tools` (as JSON text), rendered by the chat template too.
    pub tools: Option<String>,
    /// OpenAI's `tool_choice`, as JSON text.
    pub tool_choice: Option<String>,
    /// OpenAI's `parallel_tool_calls`: whether a reply may make more than one call.
    pub parallel_tool_calls: bool,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            max_tokens: 256,
            stop: Vec::new(),
            sampling: SamplingOptions::default(),
            response_format: None,
            tools: None,
            tool_choice: None,
            parallel_tool_calls: true,
        }
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> WebError {
    WebError::BadRequest(format!("invalid {what}: {e}"))
}

/// OpenAI's `response_format`, with Hearth's grammar and regex formats beside its own.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        json_schema: JsonSchema,
    },
    /// A Lark grammar (llguidance's dialect).
    Grammar {
        grammar: String,
    },
    Regex {
        regex: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchema {
    /// Named in errors; OpenAI requires it.
    name: String,
    /// For the model in OpenAI's API; the schema alone holds the output here.
    #[serde(default, rename = "description")]
    _description: Option<serde::de::IgnoredAny>,
    /// Absent: any JSON value.
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

/// The output format a request holds its reply to.
pub struct Held {
    pub format: Format,
    /// What the format came from, for errors ("the JSON schema \"person\"").
    pub name: String,
    /// Set where the reply may hold tool calls, to be read back in this syntax.
    pub tools: Option<ToolSyntax>,
}

impl GenerateRequest {
    /// The format the reply is held to, if any. `syntax` is how the model's chat template asks
    /// for tool calls (`None`: it takes no tools).
    pub fn held(&self, syntax: Option<ToolSyntax>) -> Result<Option<Held>, WebError> {
        let tools = self.tool_request(syntax)?;
        let format = match &self.response_format {
            Some(json) => response_format(json)?,
            None => None,
        };
        match (tools, format) {
            (Some(_), Some(_)) => Err(WebError::BadRequest(
                "response_format cannot be combined with tools unless tool_choice is \"none\""
                    .into(),
            )),
            (Some(held), None) | (None, Some(held)) => Ok(Some(held)),
            (None, None) => Ok(None),
        }
    }

    fn tool_request(&self, syntax: Option<ToolSyntax>) -> Result<Option<Held>, WebError> {
        let functions = match &self.tools {
            Some(json) => functions(json)?,
            None => Vec::new(),
        };
        let choice = match &self.tool_choice {
            Some(json) => tool_choice(json)?,
            None => ToolChoice::Auto,
        };
        if functions.is_empty() && choice == ToolChoice::Auto {
            return Ok(None);
        }
        let Some(syntax) = syntax else {
            return Err(WebError::BadRequest(
                "the model's chat template takes no tools".into(),
            ));
        };
        let format = tools::reply_format(syntax, &functions, &choice, self.parallel_tool_calls)
            .map_err(|e| WebError::BadRequest(e.to_string()))?;
        Ok(format.map(|format| Held {
            format,
            name: "the tools".into(),
            tools: Some(syntax),
        }))
    }
}

fn response_format(json: &str) -> Result<Option<Held>, WebError> {
    let format: ResponseFormat =
        serde_json::from_str(json).map_err(|e| bad("response_format", e))?;
    let (format, name) = match format {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => (Format::JsonObject, "the response format".into()),
        ResponseFormat::JsonSchema { json_schema } => (
            Format::JsonSchema {
                schema: json_schema
                    .schema
                    .unwrap_or_else(|| Value::Object(Default::default())),
                strict: json_schema.strict.unwrap_or(false),
            },
            format!("the JSON schema {:?}", json_schema.name),
        ),
        ResponseFormat::Grammar { grammar } => (Format::Lark(grammar), "the grammar".into()),
        ResponseFormat::Regex { regex } => (Format::Regex(regex), "the regex".into()),
    };
    Ok(Some(Held {
        format,
        name,
        tools: None,
    }))
}

/// OpenAI's `tools`: `[{ type: "function", function: { name, description, parameters } }]`.
fn functions(json: &str) -> Result<Vec<Function>, WebError> {
    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    enum Tool {
        Function { function: Function },
    }
    let tools: Vec<Tool> = serde_json::from_str(json).map_err(|e| bad("tools", e))?;
    Ok(tools
        .into_iter()
        .map(|Tool::Function { function }| function)
        .collect())
}

/// OpenAI's `tool_choice`: "auto", "none", "required" or `{ type: "function", function: { name } }`.
fn tool_choice(json: &str) -> Result<ToolChoice, WebError> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Choice {
        Word(String),
        Function { function: Named },
    }
    let choice: Choice = serde_json::from_str(json).map_err(|e| bad("tool_choice", e))?;
    Ok(match choice {
        Choice::Word(w) => match w.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(bad("tool_choice", format!("{w:?}"))),
        },
        Choice::Function { function } => ToolChoice::Function(function.name),
    })
}

/// An OpenAI-style message; `content` has been flattened to text by the JS side.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    role: String,
    content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<MessageToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// A call in an assistant message, as the template sees it: `arguments` as an object (the
/// JSON text OpenAI's clients send, parsed), as templates format them with `tojson`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MessageToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: CalledFunction,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CalledFunction {
    name: String,
    #[serde(deserialize_with = "json_text")]
    arguments: Value,
}

/// JSON text parsed; text that is not JSON stays a string.
fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let text = String::deserialize(d)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The `tools` a template renders: OpenAI's list as given.
pub fn template_tools(json: &str) -> Result<Value, WebError> {
    serde_json::from_str(json).map_err(|e| bad("tools", e))
}

impl From<SamplingError> for WebError {
    fn from(e: SamplingError) -> Self {
        match e {
            SamplingError::NanLogit(_) => WebError::Gpu(e.to_string()),
            SamplingError::Constraint(ConstraintError::Matcher(_)) => {
                WebError::Internal(e.to_string())
            }
            other => WebError::BadRequest(other.to_string()),
        }
    }
}

impl From<ConstraintError> for WebError {
    fn from(e: ConstraintError) -> Self {
        SamplingError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(format: Option<&str>, tools: Option<&str>, choice: Option<&str>) -> GenerateRequest {
        GenerateRequest {
            response_format: format.map(str::to_string),
            tools: tools.map(str::to_string),
            tool_choice: choice.map(str::to_string),
            ..Default::default()
        }
    }

    fn error(o: &GenerateRequest, syntax: Option<ToolSyntax>) -> String {
        match o.held(syntax) {
            Err(WebError::BadRequest(m)) => m,
            Err(e) => panic!("not a bad_request: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    const TOOL: &str =
        r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]"#;

    #[test]
    fn formats_and_tools_are_read_or_refused_by_name() {
        let schema = r#"{"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": true}}"#;
        let held = options(Some(schema), None, None)
            .held(None)
            .unwrap()
            .unwrap();
        assert_eq!(held.name, "the JSON schema \"p\"");
        assert!(matches!(
            held.format,
            Format::JsonSchema { strict: true, .. }
        ));
        assert!(options(Some(r#"{"type": "text"}"#), None, None)
            .held(None)
            .unwrap()
            .is_none());
        let tools = options(None, Some(TOOL), Some(r#""required""#));
        let held = tools.held(Some(ToolSyntax::Hermes)).unwrap().unwrap();
        assert_eq!(held.tools, Some(ToolSyntax::Hermes));

        assert!(error(&options(Some(r#"{"type": "yaml"}"#), None, None), None).contains("yaml"));
        assert!(error(
            &options(
                Some(r#"{"type": "json_schema", "json_schema": {}}"#),
                None,
                None
            ),
            None
        )
        .contains("name"));
        assert!(error(&tools, None).contains("takes no tools"));
        assert!(error(
            &options(None, Some(TOOL), Some(r#""sometimes""#)),
            Some(ToolSyntax::Hermes)
        )
        .contains("sometimes"));
        let custom = r#"[{"type": "custom", "custom": {"name": "g"}}]"#;
        assert!(
            error(&options(None, Some(custom), None), Some(ToolSyntax::Hermes)).contains("custom")
        );
        let both = options(Some(r#"{"type": "json_object"}"#), Some(TOOL), None);
        assert!(error(&both, Some(ToolSyntax::Hermes)).contains("cannot be combined"));
    }

    /// Every byte of valid requests flipped, cut or doubled: an answer or a bad_request, never
    /// a panic.
    #[test]
    fn mangled_requests_are_bad_requests_not_panics() {
        let seeds = [
            r#"{"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"a": {"enum": [1, "x"]}}}, "strict": false}}"#,
            r#"{"type": "grammar", "grammar": "start: \"a\""}"#,
            TOOL,
            r#"{"type": "function", "function": {"name": "f"}}"#,
        ];
        let mut tried = 0;
        for seed in seeds {
            let bytes = seed.as_bytes();
            for i in 0..bytes.len() {
                let variants = [
                    [&bytes[..i], &bytes[i + 1..]].concat(),
                    [&bytes[..i], b"\"", &bytes[i..]].concat(),
                    [&bytes[..i], &[bytes[i] ^ 0x21], &bytes[i + 1..]].concat(),
                    bytes[..i].to_vec(),
                ];
                for v in variants {
                    let text = String::from_utf8_lossy(&v).into_owned();
                    for o in [
                        options(Some(&text), None, None),
                        options(None, Some(&text), None),
                        options(None, Some(TOOL), Some(&text)),
                    ] {
                        tried += 1;
                        match o.held(Some(ToolSyntax::Hermes)) {
                            Ok(_) | Err(WebError::BadRequest(_)) => {}
                            Err(e) => panic!("{text}: not a bad_request: {e}"),
                        }
                    }
                }
            }
        }
        assert!(tried > 3000, "{tried}");
    }
}
