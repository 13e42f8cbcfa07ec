//! `hearth tokenize`, `generate --prompt` and `chat` run as a user runs them, on the committed
//! tokenizer and model fixtures.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use hearth_core::chat::{ChatTemplate, Message};
use hearth_core::gguf::Gguf;
use hearth_core::tokenizer::Tokenizer;
use hearth_fixtures::{scratch_dir as scratch, unpack};

fn hearth(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok_stdout(args: &[&str], stdin: &str) -> String {
    let out = hearth(args, stdin);
    assert!(
        out.status.success(),
        "hearth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap()
}

#[test]
fn tokenize_json_matches_hugging_face() {
    let dir = scratch("tokenize");
    let vocab = unpack("tokenizers/llama3.gguf.gz", &dir);
    let m = vocab.to_str().unwrap();
    // (text, --no-special, ids): special-token text is that token, with or without it.
    for (text, no_special, ids) in [
        ("Hello, world!", false, &[128000, 9906, 11, 1917, 0][..]),
        ("Hello, world!", true, &[9906, 11, 1917, 0]),
        ("<|eot_id|>hi", true, &[128009, 6151]),
    ] {
        let mut args = vec!["tokenize", "--model", m, "--text", text, "--json"];
        if no_special {
            args.push("--no-special");
        }
        let out = ok_stdout(&args, "");
        assert_eq!(json(&out), serde_json::json!({ "tokens": ids }), "{text}");
    }
    let out = ok_stdout(&["tokenize", "--model", m, "--text", "Hello"], "");
    assert_eq!(
        out,
        "  128000  \"<|begin_of_text|>\"\n    9906  \"Hello\"\n"
    );
}

/// Output into a pipe whose reader has gone (`hearth tokenize ... | head`) ends the program as
/// the closed pipe's signal ends other tools: no panic and its backtrace on stderr.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    let dir = scratch("closed-pipe");
    let vocab = unpack("tokenizers/llama3.gguf.gz", &dir);
    let text = "word ".repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "tokenize",
            "--model",
            vocab.to_str().unwrap(),
            "--text",
            &text,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !out.status.success(),
        "20000 lines cannot all have been written"
    );
}

#[test]
fn bad_options_are_clear_errors() {
    let dir = scratch("errors");
    let vocab = unpack("tokenizers/llama2.gguf.gz", &dir);
    let m = vocab.to_str().unwrap();
    let out = hearth(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "hi",
            "--temperature",
            "-1",
        ],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("temperature must be a finite number >= 0"),
        "{err}"
    );
    let out = hearth(
        &["generate", "--model", m, "--prompt", "hi", "--tokens", "1"],
        "",
    );
    assert!(!out.status.success(), "--prompt and --tokens together");
}

/// The model's chat template rendered for `messages`, as `hearth chat` sends it.
fn rendered(model: &Path, messages: &[Message]) -> String {
    let bytes = std::fs::read(model).unwrap();
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let tokenizer = Tokenizer::from_gguf(&header).unwrap();
    ChatTemplate::from_gguf(&header, &tokenizer)
        .unwrap()
        .render(messages, true)
        .unwrap()
}

#[test]
fn chat_streams_replies_that_match_generate_on_the_rendered_conversation() {
    let dir = scratch("chat");
    let model = unpack("models/qwen2-tiny.q8_0.gguf.gz", &dir);
    let m = model.to_str().unwrap();
    let out = ok_stdout(
        &["chat", "--model", m, "--max-tokens", "5"],
        "Hello!\n\nHow are you?\n",
    );

    // Each reply is what `generate` continues the rendered conversation so far with.
    let mut messages = vec![Message::new("user", "Hello!")];
    let mut expected = String::new();
    for next in ["How are you?", ""] {
        let prompt = rendered(&model, &messages);
        let gen = json(&ok_stdout(
            &[
                "generate",
                "--model",
                m,
                "--prompt",
                &prompt,
                "--max-tokens",
                "5",
                "--json",
            ],
            "",
        ));
        let reply = gen["text"].as_str().unwrap().to_string();
        expected.push_str(&reply);
        expected.push('\n');
        messages.push(Message::new("assistant", reply));
        messages.push(Message::new("user", next));
    }
    assert_eq!(out, expected);
}

#[test]
fn a_hostile_chat_template_is_a_clear_error_not_a_hang() {
    let dir = scratch("hostile-template");
    let model = unpack("models/llama-spm.q8_0.gguf.gz", &dir);
    for (name, template, why) in [
        (
            "loops",
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            "used up its fuel",
        ),
        (
            "recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursed deeper than",
        ),
    ] {
        let bytes = hearth_fixtures::with_metadata(
            &std::fs::read(&model).unwrap(),
            &[(
                "tokenizer.chat_template",
                hearth_core::gguf::Value::String(template.into()),
            )],
        );
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let start = std::time::Instant::now();
        let out = hearth(
            &[
                "chat",
                "--model",
                path.to_str().unwrap(),
                "--backend",
                "cpu",
            ],
            "Hello\n",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        // Load and all: the render itself takes a fraction of a second of CPU time (see
        // hearth-core's chat_budget tests); this machine may be busy.
        assert!(
            start.elapsed().as_secs() < 10,
            "{name}: {:?}",
            start.elapsed()
        );
        for needle in ["the chat template of", "the chat template was stopped", why] {
            assert!(
                stderr.contains(needle),
                "{name}: {needle:?} missing from {stderr}"
            );
        }
        assert!(out.stdout.is_empty(), "{name}: no reply is printed");
    }
}
