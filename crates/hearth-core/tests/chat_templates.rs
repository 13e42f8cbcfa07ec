//! Chat templates from real tokenizers (Qwen3, Llama 3, Llama 3.1, Llama 2, Gemma 3, Phi-3 and
//! Phi-3.5) and LFM2's, rendered by Hearth and compared with `transformers`'
//! `apply_chat_template` output recorded by tests/fixtures/tokenizers/make_tokenizer_fixtures.py.

use std::io::Read;
use std::path::PathBuf;

use hearth_core::chat::{to_template_value, ChatError, ChatTemplate, Message, TemplateValue};
use hearth_core::gguf::Gguf;
use hearth_core::tokenizer::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers")
}

/// A fixture's tokenizer and template; "llama3_1" is Llama 3.1's template and "lfm2" LFM2's
/// (each its own file) over the Llama 3 vocabulary, "phi3_5" Phi-3.5-mini's over Phi-3's.
fn load(name: &str) -> (Tokenizer, ChatTemplate) {
    let vocabulary = match name {
        "llama3_1" | "lfm2" => Some("llama3"),
        "phi3_5" => Some("phi3"),
        _ => None,
    };
    if let Some(vocabulary) = vocabulary {
        let (tokenizer, _) = load(vocabulary);
        let source = std::fs::read_to_string(fixtures().join(format!("{name}.jinja"))).unwrap();
        let template = ChatTemplate::for_tokenizer(&source, &tokenizer).unwrap();
        return (tokenizer, template);
    }
    let file = std::fs::File::open(fixtures().join(format!("{name}.gguf.gz"))).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap();
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let tokenizer = Tokenizer::from_gguf(&header).unwrap();
    let template = ChatTemplate::from_gguf(&header, &tokenizer).unwrap();
    (tokenizer, template)
}

fn check_template(name: &str) {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("chat_reference.json")).unwrap(),
    )
    .unwrap();
    // A conversation with a "templates" list is rendered only for the templates it names.
    let conversations: Vec<&Value> = reference["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c.get("templates")
                .and_then(Value::as_array)
                .is_none_or(|only| only.iter().any(|t| t == name))
        })
        .collect();
    let expected = reference["templates"][name].as_array().unwrap();
    assert_eq!(conversations.len(), expected.len());
    let (tokenizer, template) = load(name);
    let mut failures = Vec::new();
    for (conv, want) in conversations.iter().zip(expected) {
        let title = conv["name"].as_str().unwrap();
        assert_eq!(
            want["name"], conv["name"],
            "{name}: the reference is out of order"
        );
        let messages = to_template_value(&conv["messages"]);
        let tools = conv.get("tools").map(to_template_value);
        let extra: Vec<(&str, TemplateValue)> = conv
            .get("kwargs")
            .and_then(Value::as_object)
            .map(|kw| {
                kw.iter()
                    .map(|(k, v)| (k.as_str(), to_template_value(v)))
                    .collect()
            })
            .unwrap_or_default();
        let got = template.render_values(
            messages,
            conv["add_generation_prompt"].as_bool().unwrap(),
            tools,
            &extra,
        );
        match (got, want.get("text").and_then(Value::as_str)) {
            (Ok(text), Some(want_text)) => {
                if text != want_text {
                    failures.push(format!(
                        "{name} {title:?}:\n   got {text:?}\n  want {want_text:?}"
                    ));
                    continue;
                }
                let want_ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
                let ids = tokenizer.encode(&text, false);
                if ids != want_ids {
                    failures.push(format!(
                        "{name} {title:?} ids:\n   got {ids:?}\n  want {want_ids:?}"
                    ));
                }
            }
            (Err(ChatError::Raised(msg)), None) => {
                let want_err = want["error"].as_str().unwrap();
                if msg != want_err {
                    failures.push(format!(
                        "{name} {title:?} error:\n   got {msg:?}\n  want {want_err:?}"
                    ));
                }
            }
            (got, _) => failures.push(format!("{name} {title:?}: got {got:?}, want {want}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn qwen3_template_matches_transformers() {
    check_template("qwen3");
}

#[test]
fn llama3_template_matches_transformers() {
    check_template("llama3");
}

#[test]
fn llama3_1_template_with_tools_matches_transformers() {
    check_template("llama3_1");
}

#[test]
fn lfm2_template_with_tools_matches_transformers() {
    check_template("lfm2");
}

#[test]
fn llama2_template_matches_transformers() {
    check_template("llama2");
}

#[test]
fn gemma3_template_matches_transformers() {
    check_template("gemma3");
}

/// The template in llama.cpp's Phi-3-mini vocabulary file (Phi-3-mini-4k-instruct's first one).
#[test]
fn phi3_template_matches_transformers() {
    check_template("phi3");
}

#[test]
fn phi3_5_template_matches_transformers() {
    check_template("phi3_5");
}

#[test]
fn plain_messages_render_like_their_json_form() {
    let (_, template) = load("qwen3");
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
    ];
    let text = template.render(&messages, true).unwrap();
    assert_eq!(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}
