use serde_json::json;

use super::*;
use crate::chat::ChatTemplate;
use crate::constrain::tests::{generate, tokenizer};
use crate::constrain::Grammars;
use crate::gguf::Gguf;
use crate::sampling::FinishReason;

fn tools() -> Vec<Function> {
    serde_json::from_value(json!([
        {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": false,
            },
        },
        {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": false,
            },
        },
    ]))
    .unwrap()
}

fn qwen3_template() -> (std::sync::Arc<crate::tokenizer::Tokenizer>, ChatTemplate) {
    let tok = tokenizer("qwen3.gguf.gz");
    let path = hearth_fixtures::fixtures_dir().join("tokenizers/qwen3.gguf.gz");
    let bytes = hearth_fixtures::gunzip(&path);
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let template = ChatTemplate::from_gguf(&header, &tok).unwrap();
    (tok, template)
}

/// Every call's arguments are valid against its tool's schema.
fn check_calls(calls: &[ToolCall], allowed: &[&str]) {
    let tools = tools();
    for c in calls {
        assert!(allowed.contains(&c.name.as_str()), "{c:?}");
        let tool = tools.iter().find(|t| t.name == c.name).unwrap();
        let args: Value = serde_json::from_str(&c.arguments).unwrap();
        let validator = jsonschema::validator_for(tool.parameters.as_ref().unwrap()).unwrap();
        assert!(validator.is_valid(&args), "{c:?}");
    }
}

/// Llama 3.1's template (a fixture file of its own) over the Llama 3 vocabulary.
fn llama31_template() -> (std::sync::Arc<crate::tokenizer::Tokenizer>, ChatTemplate) {
    let tok = tokenizer("llama3.gguf.gz");
    let path = hearth_fixtures::fixtures_dir().join("tokenizers/llama3_1.jinja");
    let template =
        ChatTemplate::for_tokenizer(&std::fs::read_to_string(path).unwrap(), &tok).unwrap();
    (tok, template)
}

#[test]
fn the_template_says_how_tools_are_called() {
    let (_, template) = qwen3_template();
    assert_eq!(template.tool_syntax(), Some(ToolSyntax::Hermes));
    assert_eq!(
        llama31_template().1.tool_syntax(),
        Some(ToolSyntax::LlamaJson)
    );
    let path = hearth_fixtures::fixtures_dir().join("tokenizers/llama3.gguf.gz");
    let bytes = hearth_fixtures::gunzip(&path);
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let llama3 = ChatTemplate::from_gguf(&header, &tokenizer("llama3.gguf.gz")).unwrap();
    // Llama 3.0's template has no tool instructions.
    assert_eq!(llama3.tool_syntax(), None);
}

#[test]
fn required_and_named_calls_hold_to_the_tools_schemas() {
    let (tok, _) = qwen3_template();
    let grammars = Grammars::new(tok.clone()).unwrap();
    for syntax in [ToolSyntax::Hermes, ToolSyntax::LlamaJson] {
        for (choice, allowed) in [
            (ToolChoice::Required, vec!["get_weather", "add"]),
            (ToolChoice::Function("add".into()), vec!["add"]),
        ] {
            let format = reply_format(syntax, &tools(), &choice, true)
                .unwrap()
                .unwrap();
            for seed in 0..3 {
                let (text, finish) = generate(&tok, &grammars, &format, seed);
                let (content, calls) = parse_reply(syntax, &text);
                assert!(!calls.is_empty(), "{syntax:?} {choice:?}: {text:?}");
                assert_eq!(content, "", "{text:?}");
                check_calls(&calls, &allowed);
                assert_ne!(finish, FinishReason::Constraint);
            }
        }
    }
}

#[test]
fn without_parallel_calls_a_reply_makes_exactly_one() {
    let (tok, _) = qwen3_template();
    let grammars = Grammars::new(tok.clone()).unwrap();
    let format = reply_format(ToolSyntax::Hermes, &tools(), &ToolChoice::Required, false)
        .unwrap()
        .unwrap();
    for seed in 0..4 {
        let (text, finish) = generate(&tok, &grammars, &format, seed);
        let (_, calls) = parse_reply(ToolSyntax::Hermes, &text);
        assert_eq!(calls.len(), 1, "{text:?}");
        assert_eq!(finish, FinishReason::EndOfGeneration);
    }
}

#[test]
fn auto_allows_text_or_calls_and_any_call_is_valid() {
    let (tok, _) = qwen3_template();
    let grammars = Grammars::new(tok.clone()).unwrap();
    for syntax in [ToolSyntax::Hermes, ToolSyntax::LlamaJson] {
        let format = reply_format(syntax, &tools(), &ToolChoice::Auto, true)
            .unwrap()
            .unwrap();
        for seed in 0..6 {
            let (text, _) = generate(&tok, &grammars, &format, seed);
            let (_, calls) = parse_reply(syntax, &text);
            check_calls(&calls, &["get_weather", "add"]);
            if syntax == ToolSyntax::Hermes && text.contains(HERMES_OPEN) {
                // Once the model opens a call, it is a valid call.
                assert!(!calls.is_empty(), "{text:?}");
            }
        }
    }
    assert_eq!(
        reply_format(ToolSyntax::Hermes, &[], &ToolChoice::Auto, true),
        Ok(None)
    );
    assert_eq!(
        reply_format(ToolSyntax::Hermes, &tools(), &ToolChoice::None, true),
        Ok(None)
    );
}

#[test]
fn bad_tool_requests_are_refused() {
    assert_eq!(
        reply_format(
            ToolSyntax::Hermes,
            &tools(),
            &ToolChoice::Function("nope".into()),
            true
        ),
        Err(ToolError::UnknownFunction("nope".into()))
    );
    assert_eq!(
        reply_format(ToolSyntax::Hermes, &[], &ToolChoice::Required, true),
        Err(ToolError::NoTools("required"))
    );
    let quoted: Vec<Function> = serde_json::from_value(json!([{"name": "a\"b"}])).unwrap();
    assert_eq!(
        reply_format(ToolSyntax::Hermes, &quoted, &ToolChoice::Auto, true),
        Err(ToolError::BadName("a\"b".into()))
    );
}

/// The assistant turn (between `open` and `close`) of transformers' rendering of the "tool
/// call" conversation through `template`.
fn reference_turn(template: &str, open: &str, close: &str) -> String {
    let reference: Value = serde_json::from_slice(
        &std::fs::read(hearth_fixtures::fixtures_dir().join("tokenizers/chat_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let rendered = reference["templates"][template]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "tool call")
        .unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    let after = rendered.split(open).nth(1).unwrap();
    after.split(close).next().unwrap().to_string()
}

#[test]
fn calls_in_the_templates_own_rendering_parse_back() {
    // transformers' rendering of an assistant tool call through Qwen3's template.
    let turn = reference_turn("qwen3", "<|im_start|>assistant\n", "<|im_end|>");
    let (content, calls) = parse_reply(ToolSyntax::Hermes, &format!("Let me check.\n{turn}"));
    assert_eq!(content, "Let me check.");
    assert_eq!(
        calls,
        [ToolCall {
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris","unit":"celsius"}"#.into(),
        }]
    );
    // And through Llama 3.1's: its assistant turn is the call's JSON.
    let turn = reference_turn(
        "llama3_1",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
    );
    assert_eq!(
        parse_reply(ToolSyntax::LlamaJson, &turn),
        (
            String::new(),
            vec![ToolCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris","unit":"celsius"}"#.into(),
            }]
        )
    );
    // A call that does not parse leaves the reply as text.
    let broken = "<tool_call>\n{\"name\": \"x\"\n</tool_call>";
    assert_eq!(
        parse_reply(ToolSyntax::Hermes, broken),
        (broken.into(), vec![])
    );
    assert_eq!(
        parse_reply(
            ToolSyntax::LlamaJson,
            r#"{"name": "add", "parameters": {"a": 1, "b": 2}}"#
        ),
        (
            String::new(),
            vec![ToolCall {
                name: "add".into(),
                arguments: r#"{"a":1,"b":2}"#.into()
            }]
        )
    );
}

#[test]
fn only_the_replys_text_streams_as_text() {
    let reply =
        "Sure: <tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>";
    let mut stream = ReplyStream::new(ToolSyntax::Hermes);
    let shown: String = reply.chars().map(|c| stream.push(&c.to_string())).collect();
    assert_eq!(shown, "Sure: ");
    let (rest, calls) = stream.finish();
    assert_eq!((rest.as_str(), calls.len()), ("", 1));

    // Text that only looked like the start of a call comes out at the end.
    let mut stream = ReplyStream::new(ToolSyntax::Hermes);
    assert_eq!(stream.push("a <tool"), "a ");
    assert_eq!(stream.push("box"), "<toolbox");
    assert_eq!(stream.push(" <tool_"), " ");
    assert_eq!(stream.finish(), ("<tool_".into(), vec![]));

    let mut stream = ReplyStream::new(ToolSyntax::LlamaJson);
    assert_eq!(stream.push(" {\"name\": \"add\", "), "");
    assert_eq!(stream.push("\"parameters\": {}}"), "");
    assert_eq!(stream.finish().1.len(), 1);
    let mut stream = ReplyStream::new(ToolSyntax::LlamaJson);
    assert_eq!(stream.push("Hi {"), "Hi {");
}

/// A call generated under the format, read back, and given to the template as the assistant's
/// message renders as exactly the text the model wrote: the next turn's prompt repeats it, so
/// its cache is reused.
#[test]
fn a_generated_call_renders_back_as_the_template_writes_it() {
    let tools: Vec<Function> = serde_json::from_value(json!([{
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "pattern": "^[a-z]{1,8}$"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": false,
        },
    }]))
    .unwrap();
    let openai_tools = json!([{"type": "function", "function": {
        "name": "get_weather", "parameters": tools[0].parameters,
    }}]);
    for (tok, template) in [qwen3_template(), llama31_template()] {
        let syntax = template.tool_syntax().unwrap();
        let grammars = Grammars::new(tok.clone()).unwrap();
        let choice = ToolChoice::Function("get_weather".into());
        let format = reply_format(syntax, &tools, &choice, false)
            .unwrap()
            .unwrap();
        for seed in 0..3 {
            let (text, _) = generate(&tok, &grammars, &format, seed);
            let (_, calls) = parse_reply(syntax, &text);
            let arguments: Value = serde_json::from_str(&calls[0].arguments).unwrap();
            let messages = json!([
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": calls[0].name, "arguments": arguments}},
                ]},
            ]);
            let rendered = template
                .render_values(
                    crate::chat::to_template_value(&messages),
                    false,
                    Some(crate::chat::to_template_value(&openai_tools)),
                    &[],
                )
                .unwrap();
            assert!(
                rendered.contains(&text),
                "{syntax:?}: {text:?} not in {rendered}"
            );
        }
    }
}
