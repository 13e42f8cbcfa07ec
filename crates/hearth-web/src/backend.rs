//! Choosing WebGPU only where it computes right: the start-up self-test. The two backends
//! themselves are [`hearth_gpu::Backend`].

use std::io;

use hearth_core::gguf::{write_gguf, GgufFile, TensorToWrite, Value};
use hearth_core::model::tensor::Use;
use hearth_core::model::{CpuModel, ModelSpec, Products};
use hearth_core::quant::{quantize, GgmlType};
use hearth_gpu::{Gpu, GpuModel, GpuOptions};

use crate::error::WebError;

/// Opens the WebGPU device and checks that it computes a small model's logits as the CPU
/// reference does, with `ty` for the matrices (the model's own weight type where it can be
/// made), so a driver that gets answers silently wrong is never used. Unless `software` is
/// allowed, a software adapter is refused: the CPU engine is faster than WebGPU run on the CPU.
pub async fn open_checked_gpu(ty: GgmlType, software: bool) -> Result<Gpu, WebError> {
    let gpu = Gpu::new(&GpuOptions::default()).await?;
    if !software && gpu.is_software() {
        let why = format!(
            "the WebGPU adapter is a software renderer ({}); the CPU engine is faster",
            gpu.describe()
        );
        gpu.device.destroy();
        return Err(WebError::NoGpu(why));
    }
    match self_test(&gpu, ty).await {
        Ok(()) => Ok(gpu),
        Err(e) => {
            // What the test allocated is freed now, not when the garbage collector runs.
            gpu.device.destroy();
            Err(e)
        }
    }
}

/// Runs the probe model on `gpu` and on the CPU; fails unless the logits agree.
async fn self_test(gpu: &Gpu, ty: GgmlType) -> Result<(), WebError> {
    let file = GgufFile::open(probe_model(ty)).map_err(|e| WebError::Internal(e.to_string()))?;
    let mut cpu = CpuModel::load(&file, &mut |_, _| {})?;
    cpu.set_products(Products::Reference);
    let tokens = [1, 7, 30, 2];
    let want = cpu.forward(&mut cpu.new_state(tokens.len()), &tokens)?;
    let mut model = GpuModel::load(gpu, &file, tokens.len(), &mut |_, _| {}).await?;
    let got = model.forward(&tokens).await?;
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if got.len() != want.len() || worst.is_nan() || worst > 2e-2 * scale {
        return Err(WebError::Gpu(format!(
            "the WebGPU self-test failed on {}: logits differ from the CPU's by {worst} (scale {scale})",
            gpu.describe()
        )));
    }
    Ok(())
}

/// A one-layer llama model with deterministic weights, as a GGUF file in memory.
fn probe_model(ty: GgmlType) -> Vec<u8> {
    const E: u64 = 256;
    const VOCAB: u64 = 64;
    const FF: u64 = 256;
    const HEADS: u64 = 4;
    let meta = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(E as u32)),
        ("llama.feed_forward_length", Value::U32(FF as u32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(16)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let kv = E / HEADS * 2;
    let shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![E, VOCAB]),
        ("output_norm.weight".into(), vec![E]),
        ("output.weight".into(), vec![E, VOCAB]),
        ("blk.0.attn_norm.weight".into(), vec![E]),
        ("blk.0.attn_q.weight".into(), vec![E, E]),
        ("blk.0.attn_k.weight".into(), vec![E, kv]),
        ("blk.0.attn_v.weight".into(), vec![E, kv]),
        ("blk.0.attn_output.weight".into(), vec![E, E]),
        ("blk.0.ffn_norm.weight".into(), vec![E]),
        ("blk.0.ffn_gate.weight".into(), vec![E, FF]),
        ("blk.0.ffn_up.weight".into(), vec![E, FF]),
        ("blk.0.ffn_down.weight".into(), vec![FF, E]),
    ];
    let mut seed = 0x2545_f491_u32;
    let data: Vec<(GgmlType, Vec<u8>)> = shapes
        .iter()
        .map(|(_, dims)| {
            let n: u64 = dims.iter().product();
            if dims.len() == 1 {
                let ones: Vec<f32> = vec![1.0; n as usize];
                return (GgmlType::F32, bytes_of(&ones));
            }
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed as f32 / u32::MAX as f32 - 0.5) * 0.2
                })
                .collect();
            match quantize(ty, &values) {
                Ok(q) => (ty, q),
                Err(_) => (GgmlType::F32, bytes_of(&values)),
            }
        })
        .collect();
    let tensors: Vec<TensorToWrite> = shapes
        .iter()
        .zip(&data)
        .map(|((name, dims), (ty, _))| TensorToWrite {
            name: name.clone(),
            dims: dims.clone(),
            ty: *ty,
        })
        .collect();
    let mut out = Vec::new();
    write_gguf::<io::Error>(&mut out, &meta, &tensors, |i| Ok(data[i].1.clone()))
        .expect("the probe model's shapes are whole blocks");
    out
}

fn bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The most common type among a model's matrices (what its quantization is called by).
pub fn matrix_type(file_header: &hearth_core::gguf::Gguf, spec: &ModelSpec) -> GgmlType {
    let mut counts: Vec<(GgmlType, u64)> = Vec::new();
    for (id, _) in spec.expected_tensors() {
        if id.role.usage() != Use::Matrix {
            continue;
        }
        if let Some(t) = file_header.tensor(&id.name()) {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += t.n_elements(),
                None => counts.push((t.ty, t.n_elements())),
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map_or(GgmlType::F32, |(ty, _)| ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_model_loads_on_the_cpu() {
        for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_K] {
            let file = GgufFile::open(probe_model(ty)).unwrap();
            let model = CpuModel::load(&file, &mut |_, _| {}).unwrap();
            let logits = model.forward(&mut model.new_state(4), &[1, 2, 3]).unwrap();
            assert_eq!(logits.len(), 64);
            assert!(logits.iter().all(|v| v.is_finite()));
            assert!(logits.iter().any(|&v| v != logits[0]));
        }
    }
}
