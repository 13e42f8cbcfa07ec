//! The layer kernels (RMS norm, rope, attention, the delta net's recurrence) against the CPU
//! reference's operations (`hearth_core::model::cpu::ops`).

use hearth_core::model::cpu::ops;
use hearth_core::model::{DeltaNet, Rope, RopeStyle};
use hearth_gpu::kernels::{self, uniform, AttnParams, NormParams, RopeParams};

use super::{close, step, values, Bench, Checked};

pub fn rms_norm(b: &Bench, label: &str) -> Checked {
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
        add: 0,
        centred: 0,
        _pad: [0; 3],
    };
    // Over a chunk of `rows` tokens.
    b.run(
        step(0, rows as u32),
        &[b.k.rms_norm_launch(&b.gpu, params, rows, &xb, &wb, &out)],
    );
    let mut want = x.clone();
    ops::rms_norm_rows(&mut want, n, &w, eps);
    close(label, &b.read(&out, n * rows), &want)?;

    // LayerNorm: the bias after the weight, rows with a mean far from 0.
    let x: Vec<f32> = x.iter().map(|v| v + 3.0).collect();
    let wb: Vec<f32> = w.iter().chain(&values(n, 3)).copied().collect();
    let (xb, wbb) = (
        kernels::storage_f32(&b.gpu, &x),
        kernels::storage_f32(&b.gpu, &wb),
    );
    let params = NormParams {
        centred: 1,
        ..params
    };
    b.run(
        step(0, rows as u32),
        &[b.k.rms_norm_launch(&b.gpu, params, rows, &xb, &wbb, &out)],
    );
    let mut want = x.clone();
    for row in want.chunks_exact_mut(n) {
        ops::layer_norm(row, &w, &wb[n..], eps);
    }
    close(
        &format!("{label} layer norm"),
        &b.read(&out, n * rows),
        &want,
    )
}

/// Rope over 18 of each head's 24 dimensions, with per-frequency divisors and linear scaling,
/// at positions 35 to 37 of a cache in one launch; with no style, no rope (no table, no rotated
/// dimension).
pub fn rope(b: &Bench, style: Option<RopeStyle>, head_norm: bool, label: &str) -> Checked {
    let (head_dim, heads, max_ctx, first, tokens) = (24, 3, 40, 35, 3);
    let rope = style.map(|style| Rope {
        dim: 18,
        base: 10000.0,
        style,
        freq_scale: 0.25,
        freqs: true,
        long_rope: None,
    });
    let freqs: Vec<f32> = (0..9).map(|i| 1.0 + i as f32 * 0.5).collect();
    let angles = |r: &Rope, p| r.cos_sin(p, Some(&freqs)).collect::<Vec<_>>();
    let tb = rope.map(|r| {
        let table: Vec<f32> = (0..max_ctx).flat_map(|p| angles(&r, p)).flatten().collect();
        kernels::storage_f32(&b.gpu, &table)
    });
    let norm = values(head_dim, 4);
    let nb = kernels::storage_f32(&b.gpu, &norm);
    // Heads at positions `first..first + tokens` of a cache laid out with `stride` values per
    // position.
    let stride = heads * head_dim + 5;
    let data = values(stride * max_ctx, 5);
    let db = kernels::storage_f32(&b.gpu, &data);
    let params = RopeParams {
        head_dim: head_dim as u32,
        rope_dim: rope.map_or(0, |r| r.dim as u32),
        neox: (style == Some(RopeStyle::Neox)) as u32,
        has_norm: 0,
        eps: 1e-6,
        pos_stride: stride as u32,
        row_stride: 0,
        pos_ring: 0,
    };
    let (norm_b, table_b) = (head_norm.then_some(&nb), tb.as_ref());
    let l =
        b.k.rope_launch(&b.gpu, params, (heads, tokens), &db, norm_b, table_b);
    b.run(step(first as u32, tokens as u32), &[l]);
    let mut want = data.clone();
    for pos in first..first + tokens {
        let at = pos * stride;
        for head in want[at..at + heads * head_dim].chunks_exact_mut(head_dim) {
            if head_norm {
                ops::rms_norm(head, &norm, 1e-6);
            }
            if let Some(r) = &rope {
                ops::rope(head, r, &angles(r, pos));
            }
        }
    }
    close(label, &b.read(&db, data.len()), &want)
}

/// Grouped-query attention (6 query heads over 2 KV heads): decode steps within and across
/// tiles of 64 positions, then a chunk of 5 tokens in which each sees the positions up to its
/// own. With a sliding window, each sees the last `window` of them, read from a ring of
/// `window + 64` slots that the later positions have wrapped.
pub fn attention(b: &Bench, hd: usize, hdv: usize, window: Option<usize>, label: &str) -> Checked {
    let (n_head, n_kv) = (6, 2);
    let max_ctx = window.map_or(150, |w| w + 64);
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
            window: window.unwrap_or(0) as u32,
            scale,
            ring: max_ctx as u32,
            _pad: [0; 3],
        },
    );
    // Query row `t` over positions 0..=pos, or the window's last ones; position p in slot
    // p % max_ctx.
    let reference = |t: usize, pos: usize| {
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let slot = |i: usize| (first + i) % max_ctx;
        let mut want = vec![0.0; n_head * hdv];
        for (h, out) in want.chunks_exact_mut(hdv).enumerate() {
            let kv = h / (n_head / n_kv);
            ops::attend(
                &q[(t * n_head + h) * hd..][..hd],
                pos + 1 - first,
                |i| &kc[slot(i) * k_dim + kv * hd..][..hd],
                |i| &vc[slot(i) * v_dim + kv * hdv..][..hdv],
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
            (&params, hd, hdv),
            n_head,
            tokens,
            [&bufs[0], &bufs[1], &bufs[2], &out],
        )
    };
    let decode = launch(1);
    // A ring also wraps more than once.
    let far = window.map(|_| 300);
    for pos in [0, 63, 64, 130].into_iter().chain(far) {
        b.run(step(pos as u32, 1), std::slice::from_ref(&decode));
        close(
            &format!("{label} at {pos}"),
            &b.read(&out, n_head * hdv),
            &reference(0, pos),
        )?;
    }
    b.run(step(61, 5), &[launch(8)]);
    let got = b.read(&out, 5 * n_head * hdv);
    for t in 0..5 {
        close(
            &format!("{label}, chunk token {t}"),
            &got[t * n_head * hdv..(t + 1) * n_head * hdv],
            &reference(t, 61 + t),
        )?;
    }
    Ok(())
}

/// Runs `d` over runs of tokens as the plans bind them (one token: a decode step; more: a
/// prompt chunk of up to 64 rows) and compares every output and the final states with the
/// reference's token steps.
pub fn delta_net(b: &Bench, d: &DeltaNet, runs: &[usize], label: &str) -> Checked {
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
        let mut l = vec![b
            .k
            .conv_launch(gpu, (cd, d.conv_kernel, true), [&qkv_b, &conv_b, &cs_b])];
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
        b.run(step(first as u32, n as u32), launches);
        close(
            &format!("{label}: tokens {first}..{}", first + n),
            &b.read(&out_b, n * vd),
            &want[first * vd..(first + n) * vd],
        )?;
        first += n;
    }
    close(
        &format!("{label}: delta state"),
        &b.read(&ds_b, d.delta_state_len()),
        &delta_state,
    )?;
    close(
        &format!("{label}: conv state"),
        &b.read(&cs_b, d.conv_state_len()),
        &conv_state,
    )
}
