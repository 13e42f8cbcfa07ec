//! The engine in a browser: WebGPU (SwiftShader in CI) against the CPU reference, on the
//! fixture models. Run with `wasm-bindgen-test-runner` (see scripts and webdriver.json).
#![cfg(target_arch = "wasm32")]

use std::io::Read;

use hearth_core::gguf::GgufFile;
use hearth_core::model::{CpuModel, ModelSpec, Products};
use hearth_web::{open_checked_gpu, Backend};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../../tests/fixtures/models/",
            $name,
            ".gguf.gz"
        ))
    };
}

/// Prefill then one decode step on WebGPU, each compared with the CPU reference's logits.
async fn logits_match_the_cpu(name: &str, gz: &[u8]) {
    let file = GgufFile::open(gunzip(gz)).unwrap();
    let spec = ModelSpec::from_gguf(&file.header).unwrap();
    let tokens: Vec<u32> = (0..12)
        .map(|i| (i * 37 + 5) % spec.n_vocab as u32)
        .collect();
    let mut cpu = CpuModel::load(&file, &mut |_, _| {}).unwrap();
    cpu.set_products(Products::Reference);
    let mut cache = cpu.new_state(tokens.len() + 1);
    let want = cpu.forward(&mut cache, &tokens).unwrap();
    let want_next = cpu.forward(&mut cache, &[3]).unwrap();

    let gpu = open_checked_gpu(hearth_core::quant::GgmlType::F32, true)
        .await
        .unwrap();
    let mut backend = Backend::load_gpu(gpu, &file, tokens.len() + 1, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(backend.name(), "webgpu");
    let got = backend.forward(&tokens).await.unwrap();
    let got_next = backend.forward(&[3]).await.unwrap();
    for (w, g, what) in [(&want, &got, "prefill"), (&want_next, &got_next, "decode")] {
        assert_eq!(w.len(), g.len());
        let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = w
            .iter()
            .zip(g)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 2e-3 * scale,
            "{name} {what}: logits differ by {worst} (scale {scale})"
        );
    }
}

#[wasm_bindgen_test]
async fn q8_0() {
    logits_match_the_cpu("llama-spm.q8_0", fixture!("llama-spm.q8_0")).await;
}

/// F16 weights and llama3's rope scaling.
#[wasm_bindgen_test]
async fn f16_llama3_rope() {
    logits_match_the_cpu("llama3-rope.f16", fixture!("llama3-rope.f16")).await;
}

/// K-quants (Q4_K and Q6_K matrices).
#[wasm_bindgen_test]
async fn q4_k_m() {
    logits_match_the_cpu("llama-kq.q4_k_m", fixture!("llama-kq.q4_k_m")).await;
}

/// Qwen3: per-head q/k norms, and a 151,936-token vocabulary.
#[wasm_bindgen_test]
async fn qwen3_f32() {
    logits_match_the_cpu("qwen3-tiny.f32", fixture!("qwen3-tiny.f32")).await;
}

/// The CPU's fast products against the reference for every block format, here with
/// WebAssembly's simd128 kernels (the fused K-quant ones among them) where built with it.
#[wasm_bindgen_test]
fn cpu_fast_products_match_the_reference() {
    hearth_core::model::cpu::products::testing::fast_products_match_the_reference_within_input_rounding();
}

/// A software adapter (SwiftShader, the browser's fallback adapter) is refused unless allowed,
/// saying why; a hardware one is taken either way.
#[wasm_bindgen_test]
async fn a_software_adapter_is_refused_unless_allowed() {
    let ty = hearth_core::quant::GgmlType::Q8_0;
    let allowed = open_checked_gpu(ty, true).await.unwrap();
    let software = allowed.is_software();
    allowed.device.destroy();
    match open_checked_gpu(ty, false).await {
        Err(e) => {
            assert!(software, "a hardware adapter was refused: {e}");
            assert_eq!(e.code(), "no_webgpu");
            assert!(e.to_string().contains("software renderer"), "{e}");
        }
        Ok(gpu) => assert!(!software, "{} was taken", gpu.describe()),
    }
}
