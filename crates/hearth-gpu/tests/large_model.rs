//! The generated large model (hidden 1024, Qwen2's 151,936-token vocabulary, Q4_K_M; see
//! `hearth_fixtures::large_model`) on the GPU against the CPU reference, with a binding limit
//! small enough that its embedding and head are split across buffers as on many real devices.

mod common;

use hearth_core::gguf::{Gguf, GgufFile, MappedFile};
use hearth_core::model::CpuModel;
use hearth_core::quant::GgmlType;
use hearth_fixtures::large_model::{self, Shape};
use hearth_gpu::{GpuModel, GpuOptions};

const TOLERANCE: f32 = 1e-4;
const GREEDY: usize = 4;

#[test]
fn large_generated_model_matches_cpu() {
    let Some(gpu) = common::gpu(&GpuOptions {
        plain: false,
        max_binding: Some(32 << 20),
        ..Default::default()
    }) else {
        return;
    };
    let dir = hearth_fixtures::scratch_dir("large-model");
    let path = dir.join("large.q4_k_m.gguf");
    let source = hearth_fixtures::model_fixture("qwen2-tiny.q8_0").gguf_bytes();
    let header = Gguf::parse(&source, source.len() as u64).unwrap();
    large_model::write(&path, &header, &Shape::default(), 7).unwrap();
    let file = GgufFile::open(MappedFile::open(&path).unwrap()).unwrap();

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

    let tokens = [9707, 11, 1879, 0, 151643, 42];
    let cpu = CpuModel::load(&file, &mut |_, _| {}).unwrap();
    let mut cache = cpu.new_state(tokens.len() + GREEDY);
    let want = cpu.forward(&mut cache, &tokens).unwrap();
    let mut model = pollster::block_on(GpuModel::load(
        &gpu,
        &file,
        tokens.len() + GREEDY,
        &mut |_, _| {},
    ))
    .unwrap();
    let got = pollster::block_on(model.forward(&tokens)).unwrap();
    let diff = hearth_fixtures::relative_diff(&got, &want);
    eprintln!("large model: gpu-cpu {diff:.2e}");
    assert!(diff < TOLERANCE, "logits differ by {diff:.2e}");

    // Greedy continuations, the GPU reading back token ids only.
    model.truncate(0);
    let mut id = pollster::block_on(model.forward_greedy(&tokens)).unwrap();
    let mut want_id = hearth_fixtures::argmax(&want) as u32;
    for step in 0..GREEDY {
        assert_eq!(id, want_id, "greedy step {step}");
        id = pollster::block_on(model.forward_greedy(&[id])).unwrap();
        want_id = hearth_fixtures::argmax(&cpu.forward(&mut cache, &[want_id]).unwrap()) as u32;
    }
    drop((model, file));
    std::fs::remove_dir_all(&dir).unwrap();
}
