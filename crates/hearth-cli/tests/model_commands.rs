//! `hearth inspect`, `logits`, `generate` and `quantize` run as a user runs them, on the
//! committed fixtures, checked against the fixtures' PyTorch references.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_fixtures::{model_fixture, scratch_dir as scratch};

/// Decompresses a model fixture into the test's own scratch directory.
fn unpack(label: &str, scratch: &Path) -> PathBuf {
    hearth_fixtures::unpack(&format!("models/{label}.gguf.gz"), scratch)
}

fn reference(label: &str) -> serde_json::Value {
    model_fixture(label).reference()
}

fn hearth(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .unwrap();
    out
}

fn ok_stdout(args: &[&str]) -> String {
    let out = hearth(args);
    assert!(
        out.status.success(),
        "hearth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn joined(ids: &serde_json::Value) -> String {
    let ids: Vec<String> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    ids.join(",")
}

#[test]
fn inspect_describes_the_model() {
    let dir = scratch("inspect");
    let model = unpack("qwen3-tiny.q8_0", &dir);
    let text = ok_stdout(&["inspect", model.to_str().unwrap()]);
    for needle in [
        "architecture:  qwen3",
        "Q8_0 x",
        "tokenizer:     gpt2",
        "pre-tokenizer qwen2",
        "<|im_start|>",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn logits_json_matches_pytorch() {
    let dir = scratch("logits-cpu");
    let model = unpack("llama3-rope.f32", &dir);
    check_logits_json("cpu", &model, "llama3-rope.f32");
}

#[test]
fn gpu_backend_logits_match_pytorch() {
    let probe = hearth(&[
        "logits",
        "--backend",
        "gpu",
        "--model",
        "/nonexistent",
        "--tokens",
        "1",
    ]);
    if String::from_utf8_lossy(&probe.stderr).contains("no WebGPU adapter") {
        assert!(
            std::env::var_os("HEARTH_REQUIRE_GPU").is_none(),
            "HEARTH_REQUIRE_GPU is set but there is no adapter"
        );
        eprintln!("skipped: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
        return;
    }
    let dir = scratch("logits-gpu");
    let model = unpack("llama3-rope.f32", &dir);
    check_logits_json("gpu", &model, "llama3-rope.f32");
}

/// `hearth logits --json` of `model` on `backend` against the PyTorch reference of the
/// fixture `label`.
fn check_logits_json(backend: &str, model: &Path, label: &str) {
    let seq = &reference(label)["sequences"][0];
    let out = ok_stdout(&[
        "logits",
        "--backend",
        backend,
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        &joined(&seq["tokens"]),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["tokens"], seq["tokens"]);
    let got: Vec<f64> = json["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = seq["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let range = want.iter().cloned().fold(f64::MIN, f64::max)
        - want.iter().cloned().fold(f64::MAX, f64::min);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * range, "{g} vs {w}");
    }
    let top = json["top"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    assert_eq!(
        top[0][0], seq["greedy"][0],
        "top-1 is the first greedy token"
    );
    let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(
        logits.windows(2).all(|w| w[0] >= w[1]),
        "top is sorted: {logits:?}"
    );
}

#[test]
fn generate_json_is_the_greedy_continuation() {
    let dir = scratch("generate");
    let model = unpack("qwen2-tiny.q8_0", &dir);
    let seq = &reference("qwen2-tiny.q8_0")["sequences"][1];
    let out = ok_stdout(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        &joined(&seq["tokens"]),
        "--max-tokens",
        "32",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(json["tokens"], seq["tokens"]);
    let got = json["generated"].as_array().unwrap();
    assert_eq!(got.len(), 32);
    // Equal up to the first near-tie of the reference, if any.
    let gaps = seq["greedy_gaps"].as_array().unwrap();
    for (i, (g, w)) in got
        .iter()
        .zip(seq["greedy"].as_array().unwrap())
        .enumerate()
    {
        if g != w {
            assert!(gaps[i].as_f64().unwrap() < 1e-3, "step {i}: {g} != {w}");
            break;
        }
    }
}

/// Fixture `name` quantized to Q8_0 by `hearth quantize` in `test`'s scratch directory: the
/// file, and what `hearth inspect` says of it.
fn quantized_q8(test: &str, name: &str) -> (PathBuf, String) {
    let dir = scratch(test);
    let model = unpack(name, &dir);
    let out = dir.join("q8.gguf");
    ok_stdout(&[
        "quantize",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q8_0",
    ]);
    let text = ok_stdout(&["inspect", out.to_str().unwrap()]);
    (out, text)
}

#[test]
fn quantize_writes_a_model_that_runs() {
    let (out, text) = quantized_q8("quantize", "llama-spm.f32");
    assert!(text.contains("Q8_0 x"), "{text}");
    let seq = &reference("llama-spm.f32")["sequences"][0];
    // The reference products: the weights' quantization alone, with f32 activations.
    let json = ok_stdout(&[
        "logits",
        "--model",
        out.to_str().unwrap(),
        "--tokens",
        &joined(&seq["tokens"]),
        "--backend",
        "cpu-reference",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        json["top"][0][0], seq["greedy"][0],
        "Q8_0 keeps this model's top-1"
    );
}

/// SmolLM3's layers without rope are named as such, and its F32 file quantized to Q8_0 holds
/// the blocks of the converter's Q8_0 file: that file's PyTorch reference holds for it.
#[test]
fn smollm3_layer_kinds_and_quantize() {
    let (out, text) = quantized_q8("smollm3", "smollm3-tiny.f32");
    let attention = "attention: 4 heads, 2 key/value heads, head dim 16";
    for needle in [
        "architecture:  smollm3".to_string(),
        format!("layers 0-2: {attention}; rope Norm over 16 dims, base 10000; feed-forward 128"),
        format!("layers 3: {attention}; no rope (NoPE); feed-forward 128"),
        "Q8_0 x".to_string(),
        "pre-tokenizer llama-bpe".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    check_logits_json("cpu-reference", &out, "smollm3-tiny.q8_0");
}

/// Gemma 3's local (sliding-window) and global layers are named as such, and its F32 file
/// quantized to Q8_0 holds the blocks of the converter's Q8_0 file: that file's PyTorch
/// reference holds for it.
#[test]
fn gemma3_layer_kinds_and_quantize() {
    let (out, text) = quantized_q8("gemma3", "gemma3-tiny.f32");
    let heads = "4 heads, 2 key/value heads, head dim 32, Q/K norm";
    let ffn = "feed-forward 128 (GeGLU); post-norms";
    for needle in [
        "architecture:  gemma3".to_string(),
        format!(
            "layers 0-4: local attention (window 8): {heads}; rope Neox over 32 dims, base 10000; {ffn}"
        ),
        format!(
            "layers 5: global attention: {heads}; rope Neox over 32 dims, base 1000000, linear scaling 4; {ffn}"
        ),
        "Q8_0 x".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    check_logits_json("cpu-reference", &out, "gemma3-tiny.q8_0");
}

/// Phi-3's partial rope with LongRoPE and its fused feed-forward block are named as such, and
/// its F32 file quantized to Q8_0 (the fused tensors too) holds the blocks of the converter's
/// Q8_0 file: that file's PyTorch reference holds for it.
#[test]
fn phi3_layer_kinds_and_quantize() {
    let (out, text) = quantized_q8("phi3", "phi3-tiny.f32");
    for needle in [
        "architecture:  phi3",
        "every layer: attention: 4 heads, 2 key/value heads, head dim 16, fused QKV; rope Neox \
         over 12 dims, base 10000, LongRoPE (long factors past 4096 positions, attention factor 1.19",
        "; feed-forward 128 (fused gate|up)",
        "Q8_0 x",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    check_logits_json("cpu-reference", &out, "phi3-tiny.q8_0");
}

/// LFM2's convolution and attention layers are named as such, and its F32 file quantized to
/// Q8_0 (the convolution kernels stay F32) holds the blocks of the converter's Q8_0 file.
#[test]
fn lfm2_layer_kinds_and_quantize() {
    let (out, text) = quantized_q8("lfm2", "lfm2-tiny.f32");
    for needle in [
        "architecture:  lfm2",
        "layers 0, 2-3: gated short convolution: 64 channels, kernel 3; feed-forward 128",
        "layers 1, 4: attention: 4 heads, 2 key/value heads, head dim 16, Q/K norm; \
         rope Neox over 16 dims, base 1000000; feed-forward 128",
        "Q8_0 x",
        "pre-tokenizer llama-bpe",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    check_logits_json("cpu-reference", &out, "lfm2-tiny.q8_0");
}

/// GPT-2's layer kinds are named, its learned positions stay F32 as llama.cpp leaves them, and
/// its F32 file quantized to Q8_0 holds the blocks of the converter's Q8_0 file: that file's
/// PyTorch reference holds for it.
#[test]
fn gpt2_layer_kinds_and_quantize() {
    let (out, text) = quantized_q8("gpt2", "gpt2-tiny.f32");
    for needle in [
        "architecture:  gpt2",
        "every layer: attention: 4 heads, 4 key/value heads, head dim 8, QKV bias, fused QKV, \
         output bias; learned positions; GELU feed-forward 128",
        "Q8_0 x",
        "pre-tokenizer gpt-2",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let all = ok_stdout(&["inspect", out.to_str().unwrap(), "--all"]);
    assert!(
        all.lines()
            .any(|l| l.contains("position_embd.weight") && l.contains("F32")),
        "{all}"
    );
    check_logits_json("cpu-reference", &out, "gpt2-tiny.q8_0");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = scratch("bad");
    let not_gguf = dir.join("notes.txt");
    std::fs::write(&not_gguf, "just some text, not a model").unwrap();
    let out = hearth(&["inspect", not_gguf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));

    let model = unpack("llama-spm.q8_0", &dir);
    let out = hearth(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "1,999999",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the vocabulary"));

    let truncated = dir.join("truncated.gguf");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = hearth(&["inspect", truncated.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("past the end"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
