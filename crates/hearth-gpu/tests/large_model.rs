//! The generated models (see `hearth_fixtures::large_model`: real widths and vocabularies,
//! random weights, Q4_K_M) on the GPU against the CPU reference, with a binding limit small
//! enough that their embedding and head are split across buffers as on many real devices.

mod common;

use std::time::Instant;

use hearth_core::gguf::{GgufFile, MappedFile};
use hearth_core::model::{CpuModel, ModelSpec, Products};
use hearth_core::quant::GgmlType;
use hearth_fixtures::large_model::{self, Shape};
use hearth_gpu::{Gpu, GpuModel, GpuOptions};

const TOLERANCE: f32 = 1e-4;
const GREEDY: usize = 4;

/// Writes `shape` with `n_layer` layers, checks that its header gives back the spec it was
/// written from and hands the file to `check`; then compares the GPU's logits after `tokens`
/// and its greedy continuation with the CPU reference's. Returns the CPU's logits after the
/// prompt and after each greedy token.
fn matches_cpu(
    test: &str,
    shape: Shape,
    n_layer: usize,
    tokens: &[u32],
    check: impl FnOnce(&GgufFile<MappedFile>, &Gpu),
) -> Option<Vec<Vec<f32>>> {
    let gpu = common::gpu(&GpuOptions {
        plain: false,
        max_binding: Some(32 << 20),
        ..Default::default()
    })?;
    let started = Instant::now();
    let dir = hearth_fixtures::scratch_dir(test);
    let path = dir.join(format!("{}.q4_k_m.gguf", shape.name()));
    let source = shape.tokenizer_source();
    let spec = shape.spec(n_layer, large_model::n_vocab(&source).unwrap());
    large_model::write(&path, &spec, &source, 7).unwrap();
    eprintln!(
        "{test}: written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let file = GgufFile::open(MappedFile::open(&path).unwrap()).unwrap();
    assert_eq!(ModelSpec::from_gguf(&file.header).unwrap(), spec);
    check(&file, &gpu);

    let t = Instant::now();
    let mut cpu = CpuModel::load(&file, &mut |_, _| {}).unwrap();
    cpu.set_products(Products::Reference);
    let mut cache = cpu.new_state(tokens.len() + GREEDY);
    let want = cpu.forward(&mut cache, tokens).unwrap();
    let mut cpu_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut model = pollster::block_on(GpuModel::load(
        &gpu,
        &file,
        tokens.len() + GREEDY,
        &mut |_, _| {},
    ))
    .unwrap();
    let got = pollster::block_on(model.forward(tokens)).unwrap();
    let mut gpu_s = t.elapsed().as_secs_f64();
    let diff = hearth_fixtures::relative_diff(&got, &want);
    eprintln!("{test}: gpu-cpu {diff:.2e}");
    assert!(diff < TOLERANCE, "logits differ by {diff:.2e}");

    // Greedy continuations, the GPU reading back token ids only.
    let t = Instant::now();
    model.truncate(0);
    let mut id = pollster::block_on(model.forward_greedy(tokens, None)).unwrap();
    gpu_s += t.elapsed().as_secs_f64();
    let mut want_id = hearth_fixtures::argmax(&want) as u32;
    let mut logits = vec![want];
    for step in 0..GREEDY {
        assert_eq!(id, want_id, "greedy step {step}");
        let t = Instant::now();
        id = pollster::block_on(model.forward_greedy(&[id], None)).unwrap();
        gpu_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let next = cpu.forward(&mut cache, &[want_id]).unwrap();
        cpu_s += t.elapsed().as_secs_f64();
        want_id = hearth_fixtures::argmax(&next) as u32;
        logits.push(next);
    }
    drop((model, file));
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "{test}: {:.1} s in all (cpu {cpu_s:.1} s, gpu {gpu_s:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Some(logits)
}

#[test]
fn large_generated_model_matches_cpu() {
    let tokens = [9707, 11, 1879, 0, 151643, 42];
    matches_cpu("large-model", Shape::Qwen2, 2, &tokens, |file, gpu| {
        // Real shapes: the tied head is Q6_K and larger than one binding.
        let embd = file.header.tensor("token_embd.weight").unwrap();
        assert_eq!(
            (embd.ty, embd.dims.clone()),
            (GgmlType::Q6_K, vec![1024, 151936])
        );
        assert!(embd.n_bytes > 3 * gpu.max_binding, "the head is not split");
        assert_eq!(
            file.header.tensor("blk.0.ffn_up.weight").unwrap().ty,
            GgmlType::Q4_K
        );
    });
}

/// Qwen3.5-0.8B's widths (hidden 1024, heads of 256, 16 delta-net heads of 128, its 248,320
/// tokens) with 4 of its 24 layers, three delta net and one gated attention: drawing all 24
/// and running them on a software adapter would add minutes. The full model is the
/// benchmark's.
#[test]
fn qwen35_shaped_model_matches_cpu() {
    let tokens = [9419, 11, 1814, 0, 248044, 42, 3000, 248320 - 1];
    let logits = matches_cpu(
        "qwen35-shaped",
        Shape::Qwen35_0_8B,
        4,
        &tokens,
        |file, gpu| {
            let h = &file.header;
            let embd = h.tensor("token_embd.weight").unwrap();
            assert_eq!(
                (embd.ty, embd.dims.clone()),
                (GgmlType::Q6_K, vec![1024, 248320])
            );
            assert!(embd.n_bytes > 3 * gpu.max_binding, "the head is not split");
            assert_eq!(h.tensor("blk.3.attn_q.weight").unwrap().dims, [1024, 4096]);
            // The decay rates as drawn: -exp(U(-2, 0)).
            let a = h.tensor("blk.0.ssm_a").unwrap();
            assert_eq!((a.ty, a.dims.clone()), (GgmlType::F32, vec![16]));
            let bytes = file.tensor_bytes(a).unwrap();
            for v in bytes.chunks_exact(4) {
                let v = f32::from_le_bytes(v.try_into().unwrap());
                assert!((-1.0..=-(-2.0f32).exp()).contains(&v), "ssm_a {v}");
            }
        },
    );
    let Some(logits) = logits else { return };
    // Activations stay O(1): the logits are finite and spread, and each new token moves them.
    for (step, l) in logits.iter().enumerate() {
        assert!(l.iter().all(|v| v.is_finite()), "step {step}");
        let mean = l.iter().sum::<f32>() / l.len() as f32;
        let sd = (l.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / l.len() as f32).sqrt();
        assert!(
            (0.1..10.0).contains(&sd),
            "step {step}: logits' deviation {sd}"
        );
    }
    for pair in logits.windows(2) {
        let moved = hearth_fixtures::relative_diff(&pair[1], &pair[0]);
        assert!(moved > 0.05, "a new token moved the logits by {moved:.2e}");
    }
}
