//! The matrix kernels (a decode step's matvec, a prompt chunk's matmul) and embedding rows, for
//! every block format, against the reference's products and rows.

use hearth_core::model::QTensor;
use hearth_core::quant::{quantize, GgmlType};
use hearth_gpu::kernels::{self, Output};
use hearth_gpu::weights::GpuMatrix;
use hearth_gpu::{Gpu, GpuOptions};

use super::{close, step, values, Bench, Checked};

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

fn ensure(ok: bool, what: String) -> Checked {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

/// A decode step's product on `gpu` (whose binding limit may split the matrix).
pub fn matvec(b: &Bench, gpu: &Gpu, ty: GgmlType, cols: usize, label: &str) -> Checked {
    let rows = 37;
    let w = matrix(ty, rows, cols, ty.id() as u64);
    let m = GpuMatrix::upload(gpu, label, ty, rows, cols, &w.data).unwrap();
    let x = values(cols, 7);
    let bias = values(rows, 8);
    let prev = values(rows, 9);
    let mut want = vec![0.0; rows];
    w.matmul_reference(&x, Some(&bias), &mut want);
    let xb = kernels::storage_f32(gpu, &x);
    let bb = kernels::storage_f32(gpu, &bias);
    let launch = |y, bias, mode, stride| {
        b.k.product_launches(gpu, &m, 1, &xb, y, bias, mode, (stride, 0))
            .unwrap()
    };

    // Store with bias.
    let y = kernels::scratch(gpu, rows);
    b.run(step(0, 1), &launch(&y, Some(&bb), Output::Store, 0));
    close(&format!("{label} store"), &b.read(&y, rows), &want)?;

    // Residual add, without bias.
    let mut plain = vec![0.0; rows];
    w.matmul_reference(&x, None, &mut plain);
    let y = kernels::storage_f32(gpu, &prev);
    b.run(step(0, 1), &launch(&y, None, Output::Add, 0));
    let added: Vec<f32> = prev.iter().zip(&plain).map(|(p, v)| p + v).collect();
    close(&format!("{label} add"), &b.read(&y, rows), &added)?;

    // SiLU gate over the previous output.
    let y = kernels::storage_f32(gpu, &prev);
    b.run(step(0, 1), &launch(&y, None, Output::SiluGate, 0));
    let gated: Vec<f32> = prev
        .iter()
        .zip(&plain)
        .map(|(p, v)| hearth_core::model::cpu::ops::silu(*p) * v)
        .collect();
    close(&format!("{label} silu gate"), &b.read(&y, rows), &gated)?;

    // Product times the previous output.
    let y = kernels::storage_f32(gpu, &prev);
    b.run(step(0, 1), &launch(&y, None, Output::Mul, 0));
    let multiplied: Vec<f32> = prev.iter().zip(&plain).map(|(p, v)| p * v).collect();
    close(&format!("{label} multiply"), &b.read(&y, rows), &multiplied)?;

    // GELU of the product with its bias, over a wide range of inputs (the tanh's tails).
    let y = kernels::storage_f32(gpu, &prev);
    b.run(step(0, 1), &launch(&y, Some(&bb), Output::Gelu, 0));
    let gelu: Vec<f32> = want
        .iter()
        .map(|v| hearth_core::model::cpu::ops::gelu(*v))
        .collect();
    close(&format!("{label} gelu"), &b.read(&y, rows), &gelu)?;

    // Written at position 3 of a cache with rows + 2 values per position.
    let stride = rows + 2;
    let y = kernels::scratch(gpu, stride * 5);
    b.run(step(3, 1), &launch(&y, None, Output::Store, stride));
    let got = b.read(&y, stride * 5);
    close(
        &format!("{label} at position"),
        &got[3 * stride..3 * stride + rows],
        &plain,
    )?;
    ensure(
        got[..3 * stride].iter().all(|&v| v == 0.0),
        format!("{label}: wrote outside its row"),
    )
}

/// A prompt chunk's product: each token's row as the CPU computes it, including into a KV
/// cache at the chunk's positions.
pub fn matmul(b: &Bench, gpu: &Gpu, ty: GgmlType, cols: usize, label: &str) -> Checked {
    let rows = 37;
    // 13 tokens: a full tile of 8 and part of a second.
    let tokens = 13;
    let w = matrix(ty, rows, cols, ty.id() as u64 + 5);
    let m = GpuMatrix::upload(gpu, label, ty, rows, cols, &w.data).unwrap();
    let x = values(tokens * cols, 11);
    let bias = values(rows, 12);
    let mut want = vec![0.0; tokens * rows];
    for t in 0..tokens {
        w.matmul_reference(
            &x[t * cols..(t + 1) * cols],
            Some(&bias),
            &mut want[t * rows..(t + 1) * rows],
        );
    }
    let xb = kernels::storage_f32(gpu, &x);
    let bb = kernels::storage_f32(gpu, &bias);
    let chunk = step(3, tokens as u32);
    let launch = |y, stride| {
        b.k.product_launches(gpu, &m, 64, &xb, y, Some(&bb), Output::Store, (stride, 0))
            .unwrap()
    };

    let y = kernels::scratch(gpu, tokens * rows);
    b.run(chunk, &launch(&y, 0));
    close(&format!("{label} rows"), &b.read(&y, tokens * rows), &want)?;

    // Into a cache of rows + 2 values per position, from position 3 on.
    let stride = rows + 2;
    let cache = kernels::scratch(gpu, stride * (3 + tokens + 1));
    b.run(chunk, &launch(&cache, stride));
    let got = b.read(&cache, stride * (3 + tokens + 1));
    for t in 0..tokens {
        let at = (3 + t) * stride;
        close(
            &format!("{label} position {t}"),
            &got[at..at + rows],
            &want[t * rows..(t + 1) * rows],
        )?;
    }
    ensure(
        got[..3 * stride]
            .iter()
            .chain(&got[(3 + tokens) * stride..])
            .all(|&v| v == 0.0),
        format!("{label}: wrote outside the chunk"),
    )
}

pub fn embed(b: &Bench, ty: GgmlType, label: &str) -> Checked {
    let (rows, cols) = (11, cols_for(ty));
    let w = matrix(ty, rows, cols, 3);
    let m = GpuMatrix::upload(&b.gpu, "embd", ty, rows, cols, &w.data).unwrap();
    let out = kernels::scratch(&b.gpu, cols);
    let launches =
        b.k.embed_launches(&b.gpu, &m, 1.0, &out, Output::Store)
            .unwrap();
    for token in [0, 5, rows - 1] {
        let (_, _, l) = &launches[0];
        let mut s = step(0, 1);
        s.token = token as u32;
        b.run(s, std::slice::from_ref(l));
        let mut want = vec![0.0; cols];
        w.row(token, &mut want);
        close(&format!("{label} row {token}"), &b.read(&out, cols), &want)?;
    }
    Ok(())
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
        matvec(&b, &small, ty, cols_for(ty), &format!("{ty} split")).unwrap();
    }
}
