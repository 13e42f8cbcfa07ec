//! Each kernel against the CPU reference, over shapes that are not multiples of the block,
//! unit or workgroup sizes: f32 results within 1e-4 of the reference's largest magnitude.

mod common;

use hearth_core::model::cpu::ops;
use hearth_core::model::QTensor;
use hearth_core::quant::{quantize, GgmlType};
use hearth_gpu::kernels::{
    self, uniform, AttnParams, Kernels, NormParams, Output, RopeParams, Step, Steps,
};
use hearth_gpu::weights::GpuMatrix;
use hearth_gpu::{Gpu, GpuOptions};

const TOLERANCE: f32 = 1e-4;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(label: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        worst <= TOLERANCE * scale,
        "{label}: max |diff| {worst:e} over max |value| {scale:e}"
    );
}

struct Bench {
    gpu: Gpu,
    k: Kernels,
    steps: Steps,
}

impl Bench {
    fn new(options: &GpuOptions) -> Option<Self> {
        let gpu = common::gpu(options)?;
        let k = Kernels::new(&gpu);
        let steps = Steps::new(&gpu, &k, 1);
        Some(Bench { gpu, k, steps })
    }

    fn run(&self, step: Step, launches: &[kernels::Dispatch]) {
        self.steps.write(&self.gpu, &[step]);
        kernels::submit(&self.gpu, &self.steps, launches);
    }

    fn read(&self, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
        pollster::block_on(self.gpu.read_f32(b, n)).unwrap()
    }
}

fn step(pos: u32, token: u32) -> Step {
    Step {
        pos,
        token,
        row: 0,
        count: 1,
    }
}

/// A quantized `rows` x `cols` matrix, with columns that fit the type's blocks.
fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QTensor {
    QTensor {
        ty,
        rows,
        cols,
        data: quantize(ty, &values(rows * cols, seed)).unwrap(),
    }
}

fn cols_for(ty: GgmlType) -> usize {
    match ty.block_size() {
        1 => 45,
        32 => 32 * 5,
        _ => 256 * 3,
    }
}

/// Row widths that give matvec each of its lane counts (1, 4 and 16 threads per row) where
/// the type's blocks allow it.
fn widths_for(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![45, 161, 613],
        32 => vec![32, 32 * 5, 32 * 19],
        _ => vec![256, 256 * 3],
    }
}

fn check_matvec(b: &Bench, gpu: &Gpu, ty: GgmlType, cols: usize, label: &str) {
    let rows = 37;
    let w = matrix(ty, rows, cols, ty.id() as u64);
    let m = GpuMatrix::upload(gpu, label, ty, rows, cols, &w.data).unwrap();
    let x = values(cols, 7);
    let bias = values(rows, 8);
    let prev = values(rows, 9);
    let mut want = vec![0.0; rows];
    w.matmul(&x, Some(&bias), &mut want);
    let xb = kernels::storage_f32(gpu, &x);
    let bb = kernels::storage_f32(gpu, &bias);

    // Store with bias.
    let y = kernels::scratch(gpu, rows);
    let l =
        b.k.product_launches(gpu, &m, 1, &xb, &y, Some(&bb), Output::Store, 0)
            .unwrap();
    b.run(step(0, 0), &l);
    assert_close(&format!("{label} store"), &b.read(&y, rows), &want);

    // Residual add, without bias.
    let mut plain = vec![0.0; rows];
    w.matmul(&x, None, &mut plain);
    let y = kernels::storage_f32(gpu, &prev);
    let l =
        b.k.product_launches(gpu, &m, 1, &xb, &y, None, Output::Add, 0)
            .unwrap();
    b.run(step(0, 0), &l);
    let added: Vec<f32> = prev.iter().zip(&plain).map(|(p, v)| p + v).collect();
    assert_close(&format!("{label} add"), &b.read(&y, rows), &added);

    // SiLU gate over the previous output.
    let y = kernels::storage_f32(gpu, &prev);
    let l =
        b.k.product_launches(gpu, &m, 1, &xb, &y, None, Output::SiluGate, 0)
            .unwrap();
    b.run(step(0, 0), &l);
    let gated: Vec<f32> = prev
        .iter()
        .zip(&plain)
        .map(|(p, v)| p / (1.0 + (-p).exp()) * v)
        .collect();
    assert_close(&format!("{label} silu gate"), &b.read(&y, rows), &gated);

    // Written at position 3 of a cache with rows + 2 values per position.
    let stride = rows + 2;
    let y = kernels::scratch(gpu, stride * 5);
    let l =
        b.k.product_launches(gpu, &m, 1, &xb, &y, None, Output::Store, stride)
            .unwrap();
    b.run(step(3, 0), &l);
    let got = b.read(&y, stride * 5);
    assert_close(
        &format!("{label} at position"),
        &got[3 * stride..3 * stride + rows],
        &plain,
    );
    assert!(
        got[..3 * stride].iter().all(|&v| v == 0.0),
        "{label}: wrote outside its row"
    );
}

#[test]
fn matvec_every_format() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    for ty in GgmlType::DECODED {
        for cols in widths_for(ty) {
            check_matvec(&b, &b.gpu, ty, cols, &format!("{ty} x{cols}"));
        }
    }
}

/// Matrices split into many buffers by a small binding limit, on the plainest path.
#[test]
fn matvec_split_and_plain() {
    let Some(b) = Bench::new(&GpuOptions {
        plain: true,
        max_binding: None,
        ..Default::default()
    }) else {
        return;
    };
    let mut small = b.gpu.clone();
    small.max_binding = 1024;
    for ty in [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let m = GpuMatrix::upload(
            &small,
            "split",
            ty,
            37,
            cols_for(ty),
            &matrix(ty, 37, cols_for(ty), 1).data,
        )
        .unwrap();
        assert!(m.parts.len() > 1, "{ty}: not split");
        check_matvec(&b, &small, ty, cols_for(ty), &format!("{ty} split"));
    }
}

#[test]
fn embedding_rows_of_every_format() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    for ty in GgmlType::DECODED {
        let (rows, cols) = (11, cols_for(ty));
        let w = matrix(ty, rows, cols, 3);
        let m = GpuMatrix::upload(&b.gpu, "embd", ty, rows, cols, &w.data).unwrap();
        let out = kernels::scratch(&b.gpu, cols);
        let launches = b.k.embed_launches(&b.gpu, &m, &out).unwrap();
        for token in [0, 5, rows - 1] {
            let (_, _, l) = &launches[0];
            b.run(step(0, token as u32), std::slice::from_ref(l));
            let mut want = vec![0.0; cols];
            w.row(token, &mut want);
            assert_close(&format!("{ty} row {token}"), &b.read(&out, cols), &want);
        }
    }
}

fn rms_norm_ref(x: &mut [f32], w: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v = *v * scale * w;
    }
}

#[test]
fn rms_norm_rows() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let (n, rows, eps) = (301, 3, 1e-5);
    let x = values(n * rows, 1);
    let w = values(n, 2);
    let (xb, wb, out) = (
        kernels::storage_f32(&b.gpu, &x),
        kernels::storage_f32(&b.gpu, &w),
        kernels::scratch(&b.gpu, n * rows),
    );
    let params = NormParams {
        n: n as u32,
        eps,
        step_row: 0,
        _pad: 0,
    };
    // Over a chunk of `rows` tokens.
    b.run(
        Step {
            count: rows as u32,
            ..step(0, 0)
        },
        &[b.k.rms_norm_launch(&b.gpu, params, rows, &xb, &wb, &out)],
    );
    let mut want = x.clone();
    for row in want.chunks_exact_mut(n) {
        rms_norm_ref(row, &w, eps);
    }
    assert_close("rms norm", &b.read(&out, n * rows), &want);
}

#[test]
fn rope_both_styles_with_and_without_head_norm() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let (head_dim, rope_dim, heads, max_ctx, pos) = (24, 18, 3, 40, 37);
    let freqs: Vec<f32> = (0..rope_dim / 2).map(|i| 1.0 + i as f32 * 0.5).collect();
    let scale = 0.25;
    let mut table = Vec::new();
    for p in 0..max_ctx {
        for (i, f) in freqs.iter().enumerate() {
            let theta = 10000f64.powf(-2.0 * i as f64 / rope_dim as f64) / *f as f64;
            let angle = p as f64 * scale * theta;
            table.extend([angle.cos() as f32, angle.sin() as f32]);
        }
    }
    let tb = kernels::storage_f32(&b.gpu, &table);
    let norm = values(head_dim, 4);
    let nb = kernels::storage_f32(&b.gpu, &norm);
    for neox in [false, true] {
        for with_norm in [false, true] {
            // Heads at position `pos` of a cache laid out with `stride` values per position.
            let stride = heads * head_dim + 5;
            let data = values(stride * max_ctx, 5);
            let db = kernels::storage_f32(&b.gpu, &data);
            let params = RopeParams {
                head_dim: head_dim as u32,
                rope_dim: rope_dim as u32,
                neox: neox as u32,
                has_norm: 0,
                eps: 1e-6,
                pos_stride: stride as u32,
                row_stride: 0,
                _pad: 0,
            };
            let l =
                b.k.rope_launch(&b.gpu, params, heads, &db, with_norm.then_some(&nb), &tb);
            b.run(step(pos as u32, 0), &[l]);
            let mut want = data.clone();
            for head in
                want[pos * stride..pos * stride + heads * head_dim].chunks_exact_mut(head_dim)
            {
                if with_norm {
                    rms_norm_ref(head, &norm, 1e-6);
                }
                let half = rope_dim / 2;
                for i in 0..half {
                    let (cos, sin) = (table[(pos * half + i) * 2], table[(pos * half + i) * 2 + 1]);
                    let (a, c) = if neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (head[a], head[c]);
                    head[a] = x0 * cos - x1 * sin;
                    head[c] = x0 * sin + x1 * cos;
                }
            }
            let label = format!("rope neox={neox} norm={with_norm}");
            assert_close(&label, &b.read(&db, data.len()), &want);
        }
    }
}

/// Grouped-query attention against the reference op, over heads of every width class the
/// kernel compiles for: value heads of 12, of 256 (Qwen3.5) and of 300 (past 4 per thread).
#[test]
fn attention_grouped_query_over_cache() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    for (hd, hdv) in [(20, 12), (256, 256), (24, 300)] {
        attention_case(&b, hd, hdv);
    }
}

fn attention_case(b: &Bench, hd: usize, hdv: usize) {
    let (n_head, n_kv, max_ctx) = (6, 2, 150);
    let (k_dim, v_dim) = (n_kv * hd, n_kv * hdv);
    // Queries for a chunk of up to 5 tokens.
    let q = values(5 * n_head * hd, 1);
    let kc = values(max_ctx * k_dim, 2);
    let vc = values(max_ctx * v_dim, 3);
    let scale = 1.0 / (hd as f32).sqrt();
    let params = uniform(
        &b.gpu,
        &AttnParams {
            n_head: n_head as u32,
            group: (n_head / n_kv) as u32,
            head_dim: hd as u32,
            head_dim_v: hdv as u32,
            k_dim: k_dim as u32,
            v_dim: v_dim as u32,
            _pad: 0,
            scale,
        },
    );
    // Query row `t` over positions 0..=pos.
    let reference = |t: usize, pos: usize| {
        let mut want = vec![0.0; n_head * hdv];
        for (h, out) in want.chunks_exact_mut(hdv).enumerate() {
            let kv = h / (n_head / n_kv);
            ops::attend(
                &q[(t * n_head + h) * hd..][..hd],
                pos + 1,
                |p| &kc[p * k_dim + kv * hd..][..hd],
                |p| &vc[p * v_dim + kv * hdv..][..hdv],
                scale,
                out,
            );
        }
        want
    };
    let bufs = [&q, &kc, &vc].map(|v| kernels::storage_f32(&b.gpu, v));
    let out = kernels::scratch(&b.gpu, 5 * n_head * hdv);
    let launch = |tokens| {
        b.k.attention_launch(
            &b.gpu,
            (&params, hdv),
            n_head,
            tokens,
            [&bufs[0], &bufs[1], &bufs[2], &out],
        )
    };
    // Decode steps, within and across tiles of 64 positions.
    let decode = launch(1);
    for pos in [0, 63, 64, 130] {
        b.run(step(pos as u32, 0), std::slice::from_ref(&decode));
        assert_close(
            &format!("attention {hd}/{hdv} at {pos}"),
            &b.read(&out, n_head * hdv),
            &reference(0, pos),
        );
    }
    // A chunk of 5 tokens from position 61: each sees the positions up to its own.
    b.run(
        Step {
            count: 5,
            ..step(61, 0)
        },
        &[launch(8)],
    );
    let got = b.read(&out, 5 * n_head * hdv);
    for t in 0..5 {
        assert_close(
            &format!("attention {hd}/{hdv}, chunk token {t}"),
            &got[t * n_head * hdv..(t + 1) * n_head * hdv],
            &reference(t, 61 + t),
        );
    }
}

#[test]
fn argmax_prefers_the_first_of_equals() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let mut v = values(70001, 9);
    v[40000] = 5.0;
    v[50000] = 5.0;
    v[3] = f32::NAN;
    let vb = kernels::storage_f32(&b.gpu, &v);
    let result = kernels::scratch(&b.gpu, 4);
    let mask = kernels::token_mask(&b.gpu, v.len());
    let argmax = |masked| {
        b.run(
            step(0, 0),
            &[b.k.argmax_launch(&b.gpu, v.len(), &vb, &result, (&mask, masked))],
        );
        b.read(&result, 1)[0].to_bits()
    };
    assert_eq!(argmax(false), 40000);
    // Within a mask: the best of the tokens it allows, as masking every value on the CPU.
    let allowed = |i: usize| i % 3 == 1 && i != 40000 && i != 50000;
    let words = mask_words(v.len(), allowed);
    b.gpu
        .queue
        .write_buffer(&mask, 0, bytemuck::cast_slice(&words));
    let want = (0..v.len())
        .filter(|&i| allowed(i))
        .min_by(|&a, &c| v[c].total_cmp(&v[a]).then(a.cmp(&c)))
        .unwrap();
    assert_eq!(argmax(true), want as u32);
}

/// Which tokens a mask allows.
type Allowed = fn(usize) -> bool;

/// A mask's words: bit `i % 32` of word `i / 32` set where `allowed(i)`.
fn mask_words(n: usize, allowed: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut words = vec![0u32; n.div_ceil(32)];
    for i in (0..n).filter(|&i| allowed(i)) {
        words[i / 32] |= 1 << (i % 32);
    }
    words
}

#[test]
fn top_pairs_equal_a_full_sort() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    // One chunk, fewer values than pairs kept, and several sort stages with ties and -inf.
    for n in [40, 1000, 3001, 151_936] {
        let mut v: Vec<f32> = values(n, n as u64)
            .iter()
            // + 0.0: no -0.0, which the GPU ranks equal to 0.0 and total_cmp below it.
            .map(|x| (x * 8.0).round() + 0.0)
            .collect();
        for i in (0..n).step_by(7) {
            v[i] = f32::NEG_INFINITY;
        }
        v[n / 2] = 100.0;
        let vb = kernels::storage_f32(&b.gpu, &v);
        let mask = kernels::token_mask(&b.gpu, n);
        let top = b.k.top_launches(&b.gpu, n, &vb, &mask);
        // No mask; a mask of every fifth token; one of fewer tokens than pairs kept, whose
        // list ends in masked tokens at -inf.
        let masks: [Option<Allowed>; 3] = [None, Some(|i| i % 5 == 2), Some(|i| i % 997 == 3)];
        for allowed in masks {
            if let Some(allowed) = allowed {
                let words = mask_words(n, allowed);
                b.gpu
                    .queue
                    .write_buffer(&mask, 0, bytemuck::cast_slice(&words));
            }
            let stages: Vec<_> = top.stages(allowed.is_some()).cloned().collect();
            b.run(step(0, 0), &stages);
            let got: Vec<(u32, f32)> = b
                .read(&top.result, 2 * kernels::TOP_K)
                .chunks(2)
                .map(|p| (p[1].to_bits(), p[0]))
                .take_while(|&(id, _)| (id as usize) < n)
                .collect();
            let mut want: Vec<(u32, f32)> = v
                .iter()
                .enumerate()
                .map(|(i, &x)| match allowed {
                    Some(allowed) if !allowed(i) => (i as u32, f32::NEG_INFINITY),
                    _ => (i as u32, x),
                })
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(kernels::TOP_K.min(n));
            assert_eq!(got, want, "n = {n}, masked: {}", allowed.is_some());
        }
    }
}

/// The prompt kernel: a chunk of tokens through one matrix, each token's row as the matvec
/// kernel (and the CPU) computes it, including into a KV cache at the chunk's positions.
#[test]
fn matmul_over_a_chunk_equals_one_product_per_token() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let gpu = &b.gpu;
    let rows = 37;
    for ty in GgmlType::DECODED {
        for cols in widths_for(ty) {
            // 13 tokens: a full tile of 8 and part of a second.
            let tokens = 13;
            let label = format!("{ty} x{cols}");
            let w = matrix(ty, rows, cols, ty.id() as u64 + 5);
            let m = GpuMatrix::upload(gpu, &label, ty, rows, cols, &w.data).unwrap();
            let x = values(tokens * cols, 11);
            let bias = values(rows, 12);
            let mut want = vec![0.0; tokens * rows];
            for t in 0..tokens {
                w.matmul(
                    &x[t * cols..(t + 1) * cols],
                    Some(&bias),
                    &mut want[t * rows..(t + 1) * rows],
                );
            }
            let xb = kernels::storage_f32(gpu, &x);
            let bb = kernels::storage_f32(gpu, &bias);
            let chunk = Step {
                count: tokens as u32,
                ..step(3, 0)
            };

            let y = kernels::scratch(gpu, tokens * rows);
            let l =
                b.k.product_launches(gpu, &m, 64, &xb, &y, Some(&bb), Output::Store, 0)
                    .unwrap();
            b.run(chunk, &l);
            assert_close(&format!("{label} rows"), &b.read(&y, tokens * rows), &want);

            // Into a cache of rows + 2 values per position, from position 3 on.
            let stride = rows + 2;
            let cache = kernels::scratch(gpu, stride * (3 + tokens + 1));
            let l =
                b.k.product_launches(gpu, &m, 64, &xb, &cache, Some(&bb), Output::Store, stride)
                    .unwrap();
            b.run(chunk, &l);
            let got = b.read(&cache, stride * (3 + tokens + 1));
            for t in 0..tokens {
                let at = (3 + t) * stride;
                assert_close(
                    &format!("{label} position {t}"),
                    &got[at..at + rows],
                    &want[t * rows..(t + 1) * rows],
                );
            }
            assert!(
                got[..3 * stride]
                    .iter()
                    .chain(&got[(3 + tokens) * stride..])
                    .all(|&v| v == 0.0),
                "{label}: wrote outside the chunk"
            );
        }
    }
}

/// The delta-net kernels (convolution, delta rule and gated norm) against the reference's
/// token step, over key and value heads of different widths and counts, from a state that is
/// not zero: a prompt chunk of 37 tokens in the chunked form (two whole sub-chunks and part of
/// a third where a sub-chunk is 16 rows), a decode step token by token, then a second chunk of
/// 3 tokens that continues from the state the step left.
#[test]
fn delta_net_kernels_over_chunks_and_steps() {
    use hearth_core::model::DeltaNet;
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let shapes = [
        // (key heads, value heads, key width, value width)
        (2, 6, 24, 20),
        (2, 4, 128, 128),
        (1, 2, 256, 64),
    ];
    for (n_k, n_v, dk, dv) in shapes {
        let d = DeltaNet {
            n_k_heads: n_k,
            n_v_heads: n_v,
            head_k_dim: dk,
            head_v_dim: dv,
            conv_kernel: 4,
        };
        delta_net_over_chunks_and_steps(&b, &d, &[37, 1, 3]);
    }
}

/// Runs `d` over runs of tokens as the plans bind them (one token: a decode step; more: a
/// prompt chunk of up to 64 rows) and compares every output and the final states with the
/// reference.
fn delta_net_over_chunks_and_steps(b: &Bench, d: &hearth_core::model::DeltaNet, runs: &[usize]) {
    let label = format!(
        "{}x{} heads of {}x{}",
        d.n_k_heads, d.n_v_heads, d.head_k_dim, d.head_v_dim
    );
    let (cd, vd, nv, eps) = (d.conv_dim(), d.value_dim(), d.n_v_heads, 1e-6);
    let tokens: usize = runs.iter().sum();
    let chunk = 64;
    let qkv = values(tokens * cd, 11);
    let z = values(tokens * vd, 12);
    let beta = values(tokens * nv, 13);
    let alpha = values(tokens * nv, 14);
    let conv_w: Vec<f32> = values(cd * d.conv_kernel, 15)
        .iter()
        .map(|v| v * 0.5)
        .collect();
    let dt = values(nv, 16);
    let a: Vec<f32> = values(nv, 17).iter().map(|v| -(v.abs() + 0.1)).collect();
    let norm: Vec<f32> = values(d.head_v_dim, 18)
        .iter()
        .map(|v| 1.0 + v * 0.3)
        .collect();
    let mut conv_state = values(d.conv_state_len(), 19);
    let mut delta_state: Vec<f32> = values(d.delta_state_len(), 20)
        .iter()
        .map(|v| v * 0.2)
        .collect();
    let params: Vec<f32> = [&dt[..], &a, &norm].concat();

    let gpu = &b.gpu;
    let [conv_b, params_b, cs_b, ds_b] =
        [&conv_w, &params, &conv_state, &delta_state].map(|v| kernels::storage_f32(gpu, v));
    let [qkv_b, z_b, beta_b, alpha_b, out_b] =
        [cd, vd, nv, nv, vd].map(|n| kernels::scratch(gpu, chunk * n));
    let wy = kernels::scratch(gpu, kernels::delta_records_len(d, chunk));
    let launches = |rows| {
        let mut l = vec![b.k.conv_launch(gpu, d, [&qkv_b, &conv_b, &cs_b])];
        l.extend(
            b.k.delta_launches(
                gpu,
                d,
                eps,
                rows,
                [
                    &qkv_b, &z_b, &beta_b, &alpha_b, &params_b, &ds_b, &out_b, &wy,
                ],
            )
            .unwrap(),
        );
        l
    };
    let (chunk_launches, step_launches) = (launches(chunk), launches(1));
    let tables = ops::DeltaTables {
        conv: &conv_w,
        dt: &dt,
        a: &a,
        norm: &norm,
        eps,
    };
    let mut want_qkv = qkv.clone();
    let mut want = vec![0.0; tokens * vd];
    for t in 0..tokens {
        ops::delta_net_token(
            d,
            &tables,
            (&mut conv_state, &mut delta_state),
            &mut want_qkv[t * cd..(t + 1) * cd],
            [
                &z[t * vd..(t + 1) * vd],
                &beta[t * nv..(t + 1) * nv],
                &alpha[t * nv..(t + 1) * nv],
            ],
            &mut want[t * vd..(t + 1) * vd],
        );
    }
    let mut first = 0;
    for &n in runs {
        // The run's rows from row 0, as the plans lay them out.
        for (buf, v, w) in [
            (&qkv_b, &qkv, cd),
            (&z_b, &z, vd),
            (&beta_b, &beta, nv),
            (&alpha_b, &alpha, nv),
        ] {
            gpu.queue
                .write_buffer(buf, 0, bytemuck::cast_slice(&v[first * w..(first + n) * w]));
        }
        let launches = if n == 1 {
            &step_launches
        } else {
            &chunk_launches
        };
        b.run(
            Step {
                count: n as u32,
                ..step(first as u32, 0)
            },
            launches,
        );
        assert_close(
            &format!("{label}: tokens {first}..{}", first + n),
            &b.read(&out_b, n * vd),
            &want[first * vd..(first + n) * vd],
        );
        first += n;
    }
    assert_close(
        &format!("{label}: delta state"),
        &b.read(&ds_b, d.delta_state_len()),
        &delta_state,
    );
    assert_close(
        &format!("{label}: conv state"),
        &b.read(&cs_b, d.conv_state_len()),
        &conv_state,
    );
}
