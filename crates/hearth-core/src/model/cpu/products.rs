//! The CPU's fast matrix products, as ggml's CPU backend takes them: the inputs quantized once
//! per product to 8 bits per 32-value block (ggml's `quantize_row_q8_0`, with the scale kept
//! in f32), each weight row decoded once to 8-bit quants with a scale and an offset per block
//! of 32, and integer dot products per block ([`block_sums`]) scaled by both blocks' scales,
//! plus each offset times its input block's sum. Formats with such a decoding: Q8_0, Q4_0,
//! Q4_1, Q5_0, Q5_1 and Q4_K; the others take the reference product.

use half::f16;

use super::simd::{block_sums, BLOCK};
use crate::quant::{scale_min_k4, GgmlType, QK_K};

/// Decodes one row into its quants (`BLOCK` a block), and per block a scale and an offset:
/// value = quant * scale + offset.
pub type RowDecoder = fn(&[u8], &mut [i8], &mut [f32], &mut [f32]);

/// The row decoding of format `ty`, where it has a fast product.
pub fn row_decoder(ty: GgmlType) -> Option<RowDecoder> {
    match ty {
        GgmlType::Q8_0 => Some(decode_q8_0),
        GgmlType::Q4_0 => Some(decode_q4_0),
        GgmlType::Q4_1 => Some(decode_q4_1),
        GgmlType::Q5_0 => Some(decode_q5_0),
        GgmlType::Q5_1 => Some(decode_q5_1),
        GgmlType::Q4_K => Some(decode_q4_k),
        _ => None,
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 32-element formats: `bytes` a block, decoded by `block` into quants, returning the
/// block's scale and offset.
fn decode_blocks(
    src: &[u8],
    bytes: usize,
    (q, d, o): (&mut [i8], &mut [f32], &mut [f32]),
    block: impl Fn(&[u8], &mut [i8]) -> (f32, f32),
) {
    for (((b, q), d), o) in src
        .chunks_exact(bytes)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
        .zip(o.iter_mut())
    {
        (*d, *o) = block(b, q);
    }
}

fn decode_q8_0(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_blocks(src, 34, (q, d, o), |b, q| {
        for (q, &v) in q.iter_mut().zip(&b[2..]) {
            *q = v as i8;
        }
        (f16_at(b, 0), 0.0)
    });
}

/// Element `j` and `j + 16` share a byte: low nibble, then high nibble, each less `offset`.
fn nibbles(packed: &[u8], q: &mut [i8], offset: i8) {
    let (lo, hi) = q.split_at_mut(BLOCK / 2);
    for ((lo, hi), &v) in lo.iter_mut().zip(hi).zip(packed) {
        *lo = (v & 0x0F) as i8 - offset;
        *hi = (v >> 4) as i8 - offset;
    }
}

/// The fifth bits of elements `j` (bit `j` of `qh`) on top of the nibbles.
fn fifth_bits(qh: &[u8], q: &mut [i8]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, q) in q.iter_mut().enumerate() {
        *q += (((qh >> j) & 1) << 4) as i8;
    }
}

fn decode_q4_0(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_blocks(src, 18, (q, d, o), |b, q| {
        nibbles(&b[2..], q, 8);
        (f16_at(b, 0), 0.0)
    });
}

fn decode_q4_1(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_blocks(src, 20, (q, d, o), |b, q| {
        nibbles(&b[4..], q, 0);
        (f16_at(b, 0), f16_at(b, 2))
    });
}

fn decode_q5_0(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_blocks(src, 22, (q, d, o), |b, q| {
        nibbles(&b[6..], q, 0);
        fifth_bits(&b[2..6], q);
        q.iter_mut().for_each(|q| *q -= 16);
        (f16_at(b, 0), 0.0)
    });
}

fn decode_q5_1(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_blocks(src, 24, (q, d, o), |b, q| {
        nibbles(&b[8..], q, 0);
        fifth_bits(&b[4..8], q);
        (f16_at(b, 0), f16_at(b, 2))
    });
}

/// Q4_K: d, dmin, 12 bytes of 6-bit scales and mins, then 128 bytes of nibbles: sub-block
/// `g` of 32 takes the low (even `g`) or high (odd `g`) nibbles of bytes `32 * (g / 2)..`,
/// with scale `d * sc` and offset `-dmin * m`.
fn decode_q4_k(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    let per = QK_K / BLOCK;
    for (((b, q), d), o) in src
        .chunks_exact(144)
        .zip(q.chunks_exact_mut(QK_K))
        .zip(d.chunks_exact_mut(per))
        .zip(o.chunks_exact_mut(per))
    {
        let (sd, smin) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for (g, q) in q.chunks_exact_mut(BLOCK).enumerate() {
            let (sc, m) = scale_min_k4(g, scales);
            d[g] = sd * f32::from(sc);
            o[g] = -(smin * f32::from(m));
            let shift = 4 * (g % 2);
            for (q, &v) in q.iter_mut().zip(&qs[32 * (g / 2)..][..32]) {
                *q = ((v >> shift) & 0x0F) as i8;
            }
        }
    }
}

/// Values quantized per block of `BLOCK`: `value ≈ q * d` of its block; `sum` is each
/// block's `d` times the sum of its quants.
pub struct Quantized {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub sum: Vec<f32>,
}

/// `x` (a whole number of blocks) quantized as ggml's `quantize_row_q8_0` does: each block's
/// largest magnitude maps to 127, the others round to nearest, ties away from zero.
pub fn quantize(x: &[f32]) -> Quantized {
    let mut q = vec![0; x.len()];
    let mut d = vec![0.0; x.len() / BLOCK];
    let mut sum = vec![0.0; x.len() / BLOCK];
    for (((x, q), d), sum) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
        .zip(sum.iter_mut())
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in q.iter_mut().zip(x) {
            *q = (v * inv).round() as i8;
        }
        *sum = *d * q.iter().map(|&q| f32::from(q)).sum::<f32>();
    }
    Quantized { q, d, sum }
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
    let mut wo = vec![0.0; blocks];
    let mut sums = vec![0; blocks];
    for (r, row) in data.chunks_exact(row_bytes).enumerate() {
        decode(row, &mut wq, &mut wd, &mut wo);
        let b = bias.map_or(0.0, |b| b[r]);
        for t in 0..n {
            block_sums(&wq, &xq.q[t * cols..(t + 1) * cols], &mut sums);
            let xd = &xq.d[t * blocks..(t + 1) * blocks];
            let xs = &xq.sum[t * blocks..(t + 1) * blocks];
            let dot: f32 = sums
                .iter()
                .zip(&wd)
                .zip(xd)
                .zip(wo.iter().zip(xs))
                .map(|(((&s, &dw), &dx), (&o, &xs))| s as f32 * (dw * dx) + o * xs)
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

    const FAST: [GgmlType; 6] = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
    ];

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

    /// Each format's row length: one K-quant super-block holds 8 blocks of 32.
    fn cols(ty: GgmlType, blocks: usize) -> usize {
        blocks * ty.block_size().max(BLOCK)
    }

    /// Decodes row 0 of `m`: quants, scales and offsets.
    fn decoded(m: &QTensor) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
        let b = m.cols / BLOCK;
        let (mut q, mut d, mut o) = (vec![0; m.cols], vec![0.0; b], vec![0.0; b]);
        let bytes = m.data.len() / m.rows;
        row_decoder(m.ty).unwrap()(&m.data[..bytes], &mut q, &mut d, &mut o);
        (q, d, o)
    }

    /// The quants times their block's scale plus its offset are exactly what ggml's
    /// dequantizer gives.
    #[test]
    fn row_decoding_matches_the_dequantizer() {
        for ty in FAST {
            let m = matrix(ty, 1, cols(ty, 3), 3);
            let (q, d, o) = decoded(&m);
            let got: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, &q)| d[i / BLOCK] * f32::from(q) + o[i / BLOCK])
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
    /// taken from the decoded weights, plus f32 rounding (1e-5 of `sum (|q d| + |o|) |x|`,
    /// the sizes of the terms summed).
    #[test]
    fn fast_products_match_the_reference_within_input_rounding() {
        for ty in FAST {
            for (rows, blocks) in [(1, 1), (7, 3), (13, 5), (33, 2), (5, 9)] {
                let cols = cols(ty, blocks);
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
                            let (q, d, o) = decoded(&m.rows(r, 1));
                            let (mut bound, mut size) = (0.0, 0.0);
                            for (b, (w, x)) in
                                w.chunks_exact(BLOCK).zip(x.chunks_exact(BLOCK)).enumerate()
                            {
                                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                                bound += w.iter().map(|w| w.abs()).sum::<f32>() * amax / 254.0;
                                let q = &q[b * BLOCK..(b + 1) * BLOCK];
                                size += q
                                    .iter()
                                    .zip(x)
                                    .map(|(&q, x)| {
                                        ((f32::from(q) * d[b]).abs() + o[b].abs()) * x.abs()
                                    })
                                    .sum::<f32>();
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
