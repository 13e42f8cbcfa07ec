//! Whole models on the GPU against the CPU reference and the PyTorch logits of every fixture:
//! last-position logits as close to PyTorch as the CPU path's, and 32 greedy tokens equal to
//! the CPU backend's.

mod common;

use hearth_core::gguf::GgufFile;
use hearth_core::model::{CpuModel, Products};
use hearth_fixtures::{floats, ids};
use hearth_gpu::{GpuModel, GpuOptions};

/// As the CPU conformance test: a fraction of the reference logits' range.
const TOLERANCE: f32 = 1e-4;
const GREEDY: usize = 32;

/// With `full`, every sequence and a greedy continuation; else the first sequence only.
fn check_fixtures(options: &GpuOptions, full: bool) {
    let Some(gpu) = common::gpu(options) else {
        return;
    };
    let mut failures = Vec::new();
    for f in hearth_fixtures::model_fixtures() {
        let label = format!("{}.{}", f.name, f.ty);
        let file = GgufFile::open(f.gguf_bytes()).unwrap();
        let mut cpu = CpuModel::load(&file, &mut |_, _| {}).unwrap();
        cpu.set_products(Products::Reference);
        let reference: serde_json::Value = f.reference();
        let seqs = reference["sequences"].as_array().unwrap();
        let max_ctx = seqs.iter().map(|s| ids(&s["tokens"]).len()).max().unwrap() + GREEDY + 1;
        let mut model = pollster::block_on(GpuModel::load(&gpu, &file, max_ctx, &mut |_, _| {}))
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        for (s, seq) in seqs
            .iter()
            .enumerate()
            .take(if full { usize::MAX } else { 1 })
        {
            let tokens = ids(&seq["tokens"]);
            let want = floats(&seq["last_logits"]);
            model.truncate(0);
            let got = pollster::block_on(model.forward(&tokens)).unwrap();
            let mut cache = cpu.new_state(max_ctx);
            let cpu_logits = cpu.forward(&mut cache, &tokens).unwrap();
            let gpu_vs_ref = hearth_fixtures::relative_diff(&got, &want);
            let cpu_vs_ref = hearth_fixtures::relative_diff(&cpu_logits, &want);
            let gpu_vs_cpu = hearth_fixtures::relative_diff(&got, &cpu_logits);
            eprintln!(
                "{label} seq {s}: gpu-pytorch {gpu_vs_ref:.2e}, cpu-pytorch {cpu_vs_ref:.2e}, gpu-cpu {gpu_vs_cpu:.2e}"
            );
            if gpu_vs_ref > TOLERANCE.max(cpu_vs_ref) {
                failures.push(format!(
                    "{label} seq {s}: logits differ by {gpu_vs_ref:.2e}"
                ));
            }
            if hearth_fixtures::argmax(&got) != hearth_fixtures::argmax(&cpu_logits) {
                failures.push(format!("{label} seq {s}: top-1 differs from the CPU's"));
            }
            if !full || s > 0 {
                continue;
            }
            // Greedy continuations of both backends, reading back only token ids on the GPU.
            model.truncate(0);
            let mut id = pollster::block_on(model.forward_greedy(&tokens, None)).unwrap();
            let mut want_id = hearth_fixtures::argmax(&cpu_logits) as u32;
            for step in 0..GREEDY {
                if id != want_id {
                    failures.push(format!("{label}: greedy step {step}: {id} != {want_id}"));
                    break;
                }
                if step + 1 < GREEDY {
                    id = pollster::block_on(model.forward_greedy(&[id], None)).unwrap();
                    want_id = hearth_fixtures::argmax(&cpu.forward(&mut cache, &[want_id]).unwrap())
                        as u32;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_matches_cpu_and_pytorch() {
    check_fixtures(&GpuOptions::default(), true);
}

/// The plainest path, and every tensor split into many buffers.
#[test]
fn plain_path_with_split_tensors() {
    let options = GpuOptions {
        plain: true,
        max_binding: Some(64 << 10),
        ..Default::default()
    };
    check_fixtures(&options, false);
}

/// A model over one of the device's limits (here a binding cap lowered on purpose, below one
/// layer's KV cache) is refused as the device's failure, which sends `auto` to the CPU, not
/// as a bad model.
#[test]
fn a_model_over_a_device_limit_is_a_device_failure() {
    let options = GpuOptions {
        max_binding: Some(16 << 10),
        ..Default::default()
    };
    let Some(gpu) = common::gpu(&options) else {
        return;
    };
    // A model whose context (256) holds more positions than the cap.
    let f = &hearth_fixtures::model_fixture("llama-kq.q4_0");
    let file = GgufFile::open(f.gguf_bytes()).unwrap();
    let positions = 1024;
    let err = match pollster::block_on(GpuModel::load(&gpu, &file, positions, &mut |_, _| {})) {
        Ok(_) => panic!("{}: a {positions}-position KV cache fits 16 KiB", f.name),
        Err(e) => e,
    };
    assert!(
        matches!(err, hearth_gpu::GpuError::TooLarge { .. }),
        "{err}"
    );
    assert!(err.is_device_failure(), "{err}");
    // Fewer positions fit.
    pollster::block_on(GpuModel::load(&gpu, &file, 16, &mut |_, _| {})).unwrap();
}

/// Sampling reads back the best TOP_K tokens, not the vocabulary, and draws what the CPU
/// sampler draws from every logit of the same step.
#[test]
fn sampling_from_the_top_list_equals_sampling_from_every_logit() {
    use hearth_core::sampling::{Sampler, SamplingOptions};
    let Some(gpu) = common::gpu(&GpuOptions::default()) else {
        return;
    };
    for label in ["qwen2-tiny.q8_0", "llama-spm.q8_0"] {
        let f = hearth_fixtures::model_fixture(label);
        let file = GgufFile::open(f.gguf_bytes()).unwrap();
        let mut model =
            pollster::block_on(GpuModel::load(&gpu, &file, 64, &mut |_, _| {})).unwrap();
        let opts = SamplingOptions {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.2,
            seed: 3,
            ..Default::default()
        };
        let (mut from_top, mut from_all) = (
            Sampler::new(opts.clone()).unwrap(),
            Sampler::new(opts).unwrap(),
        );
        let (mut token, mut listed) = (1, 0);
        for step in 0..24 {
            let top = pollster::block_on(model.forward_top(&[token], None)).unwrap();
            let logits = pollster::block_on(model.last_logits()).unwrap();
            let want = from_all.sample(&logits).unwrap();
            let got = match from_top.sample_top(&top, logits.len()).unwrap() {
                Some(id) => {
                    listed += 1;
                    id
                }
                None => from_top.sample(&logits).unwrap(),
            };
            assert_eq!(got, want, "{label}: step {step}");
            from_top.accept(got);
            from_all.accept(want);
            token = got;
        }
        assert!(
            listed >= 20,
            "{label}: the list sufficed {listed} times of 24"
        );
    }
}

/// The f16 KV cache (where the device has shader-f16): logits within f16 rounding of the f32
/// path's, the same top token at every fixture's prompts.
#[test]
fn f16_kv_cache_stays_within_its_rounding() {
    /// A fraction of the logits' range: K and V rounded to f16 (11-bit significands).
    const F16_TOLERANCE: f32 = 5e-3;
    let Some(gpu) = common::gpu(&GpuOptions {
        f16_kv: true,
        ..Default::default()
    }) else {
        return;
    };
    if !gpu.paths.f16_kv {
        eprintln!("skipped: the adapter has no shader-f16");
        return;
    }
    let mut worst = 0.0f32;
    for f in hearth_fixtures::model_fixtures() {
        let label = f.label();
        let file = GgufFile::open(f.gguf_bytes()).unwrap();
        let mut cpu = CpuModel::load(&file, &mut |_, _| {}).unwrap();
        cpu.set_products(Products::Reference);
        let reference: serde_json::Value = f.reference();
        let mut model =
            pollster::block_on(GpuModel::load(&gpu, &file, 256, &mut |_, _| {})).unwrap();
        for seq in reference["sequences"].as_array().unwrap() {
            let tokens = ids(&seq["tokens"]);
            model.truncate(0);
            let got = pollster::block_on(model.forward(&tokens)).unwrap();
            let want = cpu
                .forward(&mut cpu.new_state(tokens.len()), &tokens)
                .unwrap();
            let diff = hearth_fixtures::relative_diff(&got, &want);
            worst = worst.max(diff);
            assert!(
                diff < F16_TOLERANCE,
                "{label}: f16 KV logits differ by {diff:.2e}"
            );
        }
    }
    eprintln!("f16 KV cache: worst logits difference {worst:.2e} of the range");
}

/// Prefix reuse on models with recurrent layers (Qwen3.5's delta net, LFM2's short
/// convolution), on both backends: cutting back to where a checkpoint was taken restores the
/// recurrent state exactly, anywhere else falls back to the latest checkpoint before it (or
/// the start), and continuing from what was kept gives the logits of running the whole
/// sequence afresh.
#[test]
fn recurrent_state_continues_from_checkpoints() {
    for label in ["qwen35-tiny.f32", "lfm2-tiny.f32"] {
        continues_from_checkpoints(label);
    }
}

fn continues_from_checkpoints(label: &str) {
    use hearth_gpu::Backend;
    let f = hearth_fixtures::model_fixture(label);
    let file = GgufFile::open(f.gguf_bytes()).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 97 + 5) % 4000).collect();
    let mut backends = vec![Backend::load_cpu(&file, 64, &mut |_, _| {}).unwrap()];
    if let Some(gpu) = common::gpu(&GpuOptions::default()) {
        backends
            .push(pollster::block_on(Backend::load_gpu(gpu, &file, 64, &mut |_, _| {})).unwrap());
    }
    for mut b in backends {
        let name = format!("{label} on {}", b.name());
        let fresh = pollster::block_on(b.forward(&tokens)).unwrap();
        assert_eq!(b.truncate(30), 0, "{name}: no checkpoint yet");
        // A prompt of 12, a checkpoint, 13 more (a reply), another, then the rest.
        pollster::block_on(b.forward(&tokens[..12])).unwrap();
        b.checkpoint();
        pollster::block_on(b.forward(&tokens[12..25])).unwrap();
        b.checkpoint();
        pollster::block_on(b.forward(&tokens[25..])).unwrap();
        for (cut, kept) in [(25, 25), (30, 25), (20, 12), (12, 12), (5, 0)] {
            assert_eq!(b.truncate(cut), kept, "{name}: cut to {cut}");
            assert_eq!(b.positions(), kept);
            let again = pollster::block_on(b.forward(&tokens[kept..])).unwrap();
            let diff = hearth_fixtures::relative_diff(&again, &fresh);
            assert!(
                diff < TOLERANCE,
                "{name}: cut to {cut}: differs by {diff:.2e}"
            );
        }
    }
}
