//! The CPU's fast matrix products, as ggml's CPU backend takes them: the inputs quantized once
//! per product to 8 bits per 32-value block (ggml's `quantize_row_q8_0`, with the scale kept
//! in f32), each weight row decoded once to 8-bit quants and a scale per block, and integer
//! dot products per block ([`block_sums`]) scaled by both blocks' scales. Formats with such a
//! decoding: Q8_0 and Q4_0; the others take the reference product.

use half::f16;

use super::simd::{block_sums, BLOCK};
use crate::quant::GgmlType;

/// Decodes one row of blocks into its quants (`BLOCK` a block) and one scale per block.
pub type RowDecoder = fn(&[u8], &mut [i8], &mut [f32]);

/// The row decoding of format `ty`, where it has a fast product.
pub fn row_decoder(ty: GgmlType) -> Option<RowDecoder> {
    match ty {
        GgmlType::Q8_0 => Some(decode_q8_0),
        GgmlType::Q4_0 => Some(decode_q4_0),
        _ => None,
    }
}

fn decode_q8_0(src: &[u8], q: &mut [i8], d: &mut [f32]) {
    for ((b, q), d) in src
        .chunks_exact(34)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
    {
        *d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (q, &v) in q.iter_mut().zip(&b[2..]) {
            *q = v as i8;
        }
    }
}

/// Element `j` and `j + 16` share a byte: low nibble, then high nibble, each offset by 8.
fn decode_q4_0(src: &[u8], q: &mut [i8], d: &mut [f32]) {
    for ((b, q), d) in src
        .chunks_exact(18)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
    {
        *d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (lo, hi) = q.split_at_mut(BLOCK / 2);
        for ((lo, hi), &v) in lo.iter_mut().zip(hi).zip(&b[2..]) {
            *lo = (v & 0x0F) as i8 - 8;
            *hi = (v >> 4) as i8 - 8;
        }
    }
}

/// Values quantized per block of `BLOCK`: `value ≈ q * d` of its block.
pub struct Quantized {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
}

/// `x` (a whole number of blocks) quantized as ggml's `quantize_row_q8_0` does: each block's
/// largest magnitude maps to 127, the others round to nearest, ties away from zero.
pub fn quantize(x: &[f32]) -> Quantized {
    let mut q = vec![0; x.len()];
    let mut d = vec![0.0; x.len() / BLOCK];
    for ((x, q), d) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in q.iter_mut().zip(x) {
            *q = (v * inv).round() as i8;
        }
    }
    Quantized { q, d }
}

/// `out[t][r] = dot(row r, x[t]) (+ bias[r])` for the `x.len() / cols` inputs, with `rows`
/// rows of `cols` values in `data`, decoded by `decode`. The inputs are quantized once, and
/// each row is decoded once for all of them.
pub fn matmul(
    decode: RowDecoder,
    data: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let n = x.len() / cols;
    let blocks = cols / BLOCK;
    let row_bytes = data.len() / rows;
    let xq = quantize(x);
    let mut wq = vec![0; cols];
    let mut wd = vec![0.0; blocks];
    let mut sums = vec![0; blocks];
    for (r, row) in data.chunks_exact(row_bytes).enumerate() {
        decode(row, &mut wq, &mut wd);
        let b = bias.map_or(0.0, |b| b[r]);
        for t in 0..n {
            block_sums(&wq, &xq.q[t * cols..(t + 1) * cols], &mut sums);
            let xd = &xq.d[t * blocks..(t + 1) * blocks];
            let dot: f32 = sums
                .iter()
                .zip(&wd)
                .zip(xd)
                .map(|((&s, &dw), &dx)| s as f32 * (dw * dx))
                .sum();
            out[t * rows + r] = dot + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::model::weights::QTensor;
    use crate::quant::{dequantize, quantize as encode};

    const FAST: [GgmlType; 2] = [GgmlType::Q8_0, GgmlType::Q4_0];

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QTensor {
        QTensor {
            ty,
            rows,
            cols,
            data: encode(ty, &values(rows * cols, seed)).unwrap(),
        }
    }

    /// The quants times their block's scale are exactly what ggml's dequantizer gives.
    #[test]
    fn row_decoding_matches_the_dequantizer() {
        for ty in FAST {
            let m = matrix(ty, 1, 7 * BLOCK, 3);
            let (mut q, mut d) = (vec![0; m.cols], vec![0.0; m.cols / BLOCK]);
            row_decoder(ty).unwrap()(&m.data, &mut q, &mut d);
            let got: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, &q)| f32::from(q) * d[i / BLOCK])
                .collect();
            let mut want = vec![0.0; m.cols];
            dequantize(ty, &m.data, &mut want).unwrap();
            assert_eq!(got, want, "{ty}");
        }
        assert!(row_decoder(GgmlType::F32).is_none());
    }

    /// Quantized inputs lie within half a step of the values, and a block's largest magnitude
    /// is 127 steps.
    #[test]
    fn inputs_quantize_to_within_half_a_step() {
        let mut x = values(5 * BLOCK, 9);
        x[BLOCK..2 * BLOCK].fill(0.0);
        let xq = quantize(&x);
        for (b, x) in x.chunks_exact(BLOCK).enumerate() {
            let d = xq.d[b];
            let q = &xq.q[b * BLOCK..(b + 1) * BLOCK];
            for (&v, &q) in x.iter().zip(q) {
                assert!((v - f32::from(q) * d).abs() <= d / 2.0 * (1.0 + 1e-6));
            }
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(
                q.iter().map(|q| q.unsigned_abs()).max().unwrap(),
                if amax > 0.0 { 127 } else { 0 }
            );
        }
    }

    /// The fast product against the reference over odd shapes and token counts, for each
    /// format with a kernel. Each input value is off by at most half its block's step
    /// (`amax / 254`), so output `r` may differ by `sum over blocks of sum |w| * amax / 254`,
    /// taken from the decoded weights, plus f32 rounding (1e-5 of `sum |w| |x|`).
    #[test]
    fn fast_products_match_the_reference_within_input_rounding() {
        for ty in FAST {
            for (rows, blocks) in [(1, 1), (7, 3), (13, 5), (33, 2), (5, 9)] {
                let cols = blocks * BLOCK;
                let m = matrix(ty, rows, cols, rows as u64 * 31 + blocks as u64);
                let w = m.to_f32();
                let bias = values(rows, 5);
                for n in [1, 3, 17] {
                    let x = values(n * cols, n as u64 + 100);
                    let mut got = vec![0.0; n * rows];
                    m.matmul(&x, Some(&bias), &mut got);
                    let mut want = vec![0.0; n * rows];
                    m.matmul_reference(&x, Some(&bias), &mut want);
                    for t in 0..n {
                        let x = &x[t * cols..(t + 1) * cols];
                        for r in 0..rows {
                            let w = &w[r * cols..(r + 1) * cols];
                            let (mut bound, mut size) = (0.0, 0.0);
                            for (w, x) in w.chunks_exact(BLOCK).zip(x.chunks_exact(BLOCK)) {
                                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                                bound += w.iter().map(|w| w.abs()).sum::<f32>() * amax / 254.0;
                                size += w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum::<f32>();
                            }
                            let (g, e) = (got[t * rows + r], want[t * rows + r]);
                            assert!(
                                (g - e).abs() <= bound + 1e-5 * size,
                                "{ty} {rows}x{cols}, {n} inputs, [{t}][{r}]: {g} vs {e} (bound {bound})"
                            );
                        }
                    }
                }
            }
        }
    }
}
