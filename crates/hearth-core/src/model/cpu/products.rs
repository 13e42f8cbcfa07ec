//! The CPU's fast matrix products, as ggml's CPU backend takes them: the inputs quantized once
//! per product to 8 bits per 32-value block (ggml's `quantize_row_q8_0`, with the scale kept
//! in f32), each weight row decoded once to 8-bit quants with a scale and an offset per
//! sub-block of 16 or 32, and integer dot products per sub-block ([`block_sums`]) scaled by the
//! sub-block's and its input block's scales, plus each offset times its input sub-block's sum.
//! Every block format has such a decoding; F32, F16 and BF16 take the reference product.

use half::f16;

use super::simd::{block_sums, BLOCK};
use crate::quant::{scale_min_k4, scale_q3_k, GgmlType, QK_K};

/// Decodes one row into its quants, and per sub-block a scale and an offset:
/// value = quant * scale + offset.
pub type RowDecoder = fn(&[u8], &mut [i8], &mut [f32], &mut [f32]);

/// A format's fast decoding: the row decoder and the length of the sub-blocks that share a
/// scale and an offset (16 or [`BLOCK`]).
#[derive(Clone, Copy)]
pub struct Decoding {
    pub decode: RowDecoder,
    pub sub: usize,
}

/// The row decoding of format `ty`, where it has a fast product.
pub fn decoding(ty: GgmlType) -> Option<Decoding> {
    let (decode, sub): (RowDecoder, usize) = match ty {
        GgmlType::Q8_0 => (decode_q8_0, BLOCK),
        GgmlType::Q4_0 => (decode_q4_0, BLOCK),
        GgmlType::Q4_1 => (decode_q4_1, BLOCK),
        GgmlType::Q5_0 => (decode_q5_0, BLOCK),
        GgmlType::Q5_1 => (decode_q5_1, BLOCK),
        GgmlType::Q2_K => (decode_q2_k, 16),
        GgmlType::Q3_K => (decode_q3_k, 16),
        GgmlType::Q4_K => (decode_q4_k, BLOCK),
        GgmlType::Q5_K => (decode_q5_k, BLOCK),
        GgmlType::Q6_K => (decode_q6_k, 16),
        _ => return None,
    };
    Some(Decoding { decode, sub })
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

/// The K-quant super-blocks of `bytes` bytes, `QK_K / sub` sub-blocks each, decoded by `block`
/// into quants, scales and offsets.
fn decode_super_blocks(
    src: &[u8],
    (bytes, sub): (usize, usize),
    (q, d, o): (&mut [i8], &mut [f32], &mut [f32]),
    block: impl Fn(&[u8], &mut [i8], &mut [f32], &mut [f32]),
) {
    let per = QK_K / sub;
    for (((b, q), d), o) in src
        .chunks_exact(bytes)
        .zip(q.chunks_exact_mut(QK_K))
        .zip(d.chunks_exact_mut(per))
        .zip(o.chunks_exact_mut(per))
    {
        block(b, q, d, o);
    }
}

/// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Sub-block `g` of 16
/// takes 2-bit field `(g % 8) / 2` of bytes `32 * (g / 8) + 16 * (g % 2)..` of qs.
fn decode_q2_k(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_super_blocks(src, (84, 16), (q, d, o), |b, q, d, o| {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let (sd, smin) = (f16_at(b, 80), f16_at(b, 82));
        for (g, q) in q.chunks_exact_mut(16).enumerate() {
            d[g] = sd * f32::from(scales[g] & 0x0F);
            o[g] = -(smin * f32::from(scales[g] >> 4));
            let shift = 2 * ((g % 8) / 2);
            for (q, &v) in q.iter_mut().zip(&qs[32 * (g / 8) + 16 * (g % 2)..][..16]) {
                *q = ((v >> shift) & 3) as i8;
            }
        }
    });
}

/// Q3_K: hmask[32], qs[64], scales[12], d. Sub-block `g` of 16 takes its low two bits as in
/// Q2_K and its third bit from bit `g / 2` of hmask bytes `16 * (g % 2)..`; a clear bit
/// subtracts 4.
fn decode_q3_k(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_super_blocks(src, (110, 16), (q, d, o), |b, q, d, o| {
        let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
        let sd = f16_at(b, 108);
        for (g, q) in q.chunks_exact_mut(16).enumerate() {
            d[g] = sd * f32::from(scale_q3_k(g, scales));
            o[g] = 0.0;
            let (shift, bit) = (2 * ((g % 8) / 2), 1u8 << (g / 2));
            let lows = &qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            for ((q, &v), &h) in q.iter_mut().zip(lows).zip(&hmask[16 * (g % 2)..][..16]) {
                *q = ((v >> shift) & 3) as i8 - if h & bit != 0 { 0 } else { 4 };
            }
        }
    });
}

/// Q4_K and Q5_K: d, dmin, 12 bytes of 6-bit scales and mins, (Q5_K: 32 bytes of fifth bits,
/// bit `g` for sub-block `g`,) then 128 bytes of nibbles: sub-block `g` of 32 takes the low
/// (even `g`) or high (odd `g`) nibbles of bytes `32 * (g / 2)..`, with scale `d * sc` and
/// offset `-dmin * m`.
fn decode_q45_k(b: &[u8], qh: Option<&[u8]>, q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    let (sd, smin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[b.len() - 128..];
    for g in 0..QK_K / BLOCK {
        let (sc, m) = scale_min_k4(g, scales);
        d[g] = sd * f32::from(sc);
        o[g] = -(smin * f32::from(m));
    }
    // Sub-blocks in pairs over the same 32 bytes, with constant shifts so that it vectorizes.
    for (j, (q, qs)) in q.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (lo, hi) = q.split_at_mut(32);
        for ((lo, hi), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
            *lo = (v & 0x0F) as i8;
            *hi = (v >> 4) as i8;
        }
        if let Some(qh) = qh {
            for ((lo, hi), &h) in lo.iter_mut().zip(hi.iter_mut()).zip(qh) {
                let h = h >> (2 * j);
                *lo |= ((h & 1) << 4) as i8;
                *hi |= ((h >> 1 & 1) << 4) as i8;
            }
        }
    }
}

fn decode_q4_k(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_super_blocks(src, (144, BLOCK), (q, d, o), |b, q, d, o| {
        decode_q45_k(b, None, q, d, o)
    });
}

fn decode_q5_k(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_super_blocks(src, (176, BLOCK), (q, d, o), |b, q, d, o| {
        decode_q45_k(b, Some(&b[16..48]), q, d, o)
    });
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d. Each half of 128 elements uses 64 bytes of ql and
/// 32 of qh; its quarter `k` takes nibble `k / 2` of ql bytes `32 * (k % 2)..` and bits
/// `2k..2k+2` of qh, less 32; sub-block `g` of 16 has scale `d * scales[g]`.
fn decode_q6_k(src: &[u8], q: &mut [i8], d: &mut [f32], o: &mut [f32]) {
    decode_super_blocks(src, (210, 16), (q, d, o), |b, q, d, o| {
        let sd = f16_at(b, 208);
        for (g, (d, o)) in d.iter_mut().zip(o.iter_mut()).enumerate() {
            *d = sd * f32::from(b[192 + g] as i8);
            *o = 0.0;
        }
        // ggml's loop: constant shifts, so that it vectorizes.
        for (h, q) in q.chunks_exact_mut(128).enumerate() {
            let ql: &[u8; 64] = b[64 * h..][..64].try_into().expect("64 bytes");
            let qh: &[u8; 32] = b[128 + 32 * h..][..32].try_into().expect("32 bytes");
            let q: &mut [i8; 128] = q.try_into().expect("128 quants");
            for l in 0..32 {
                let (a, c, hb) = (ql[l], ql[l + 32], qh[l]);
                q[l] = ((a & 0x0F) | (hb & 3) << 4) as i8 - 32;
                q[l + 32] = ((c & 0x0F) | (hb >> 2 & 3) << 4) as i8 - 32;
                q[l + 64] = ((a >> 4) | (hb >> 4 & 3) << 4) as i8 - 32;
                q[l + 96] = ((c >> 4) | (hb >> 6) << 4) as i8 - 32;
            }
        }
    });
}

/// Values quantized per block of `BLOCK`: `value ≈ q * d` of its block. Per sub-block of `sub`
/// values, `d` is its block's (repeated, so that the products zip it with the weights' scales)
/// and `sum` is that `d` times the sum of its quants.
pub struct Quantized {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub sum: Vec<f32>,
}

/// `x` (a whole number of blocks) quantized as ggml's `quantize_row_q8_0` does: each block's
/// largest magnitude maps to 127, the others round to nearest, ties away from zero; the scales
/// and sums given per sub-block of `sub` (16 or `BLOCK`).
pub fn quantize(x: &[f32], sub: usize) -> Quantized {
    let mut q = vec![0; x.len()];
    let mut d = vec![0.0; x.len() / sub];
    let mut sum = vec![0.0; x.len() / sub];
    for (((x, q), d), sum) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.chunks_exact_mut(BLOCK / sub))
        .zip(sum.chunks_exact_mut(BLOCK / sub))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        d.fill(amax / 127.0);
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in q.iter_mut().zip(x) {
            *q = (v * inv).round() as i8;
        }
        for (sum, q) in sum.iter_mut().zip(q.chunks_exact(sub)) {
            *sum = d[0] * q.iter().map(|&q| f32::from(q)).sum::<f32>();
        }
    }
    Quantized { q, d, sum }
}

/// `out[t][r] = dot(row r, x[t]) (+ bias[r])` for the `x.len() / cols` inputs, with `rows`
/// rows of `cols` values in `data`, decoded as `decoding` says. The inputs are quantized once,
/// and each row is decoded once for all of them. Natively the rows are split across threads.
pub fn matmul(
    decoding: Decoding,
    data: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let n = x.len() / cols;
    if n == 0 {
        return;
    }
    let xq = quantize(x, decoding.sub);
    let row_bytes = data.len() / rows;
    let dots = |first: usize, by_row: &mut [f32]| {
        let rows = by_row.len() / n;
        let data = &data[first * row_bytes..][..rows * row_bytes];
        row_dots(decoding, (data, rows), (&xq, n), by_row);
        if let Some(bias) = bias {
            for (dots, b) in by_row.chunks_exact_mut(n).zip(&bias[first..]) {
                dots.iter_mut().for_each(|d| *d += b);
            }
        }
    };
    if n == 1 {
        for_row_chunks(out, 1, dots);
        return;
    }
    // Row-major while computed, so that each thread writes one slice; then per input.
    let mut by_row = vec![0.0; rows * n];
    for_row_chunks(&mut by_row, n, dots);
    for (r, dots) in by_row.chunks_exact(n).enumerate() {
        for (t, &d) in dots.iter().enumerate() {
            out[t * rows + r] = d;
        }
    }
}

/// Calls `f(first row, its values)` on chunks of `out`, `per_row` values a row: on every
/// thread of rayon's pool natively, in order on one thread in WebAssembly.
fn for_row_chunks(out: &mut [f32], per_row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        // Enough rows a chunk that a task outweighs its scheduling; enough chunks to balance.
        let rows = out.len() / per_row;
        let chunk = rows.div_ceil(4 * rayon::current_num_threads()).max(16);
        out.par_chunks_mut(chunk * per_row)
            .enumerate()
            .for_each(|(i, c)| f(i * chunk, c));
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = per_row;
        f(0, out);
    }
}

/// `by_row[r][t] = dot(row r, input t)` for the `rows` rows in `data` and the `n` quantized
/// inputs `xq`.
fn row_dots(
    decoding: Decoding,
    (data, rows): (&[u8], usize),
    (xq, n): (&Quantized, usize),
    by_row: &mut [f32],
) {
    let Decoding { decode, sub } = decoding;
    let cols = xq.q.len() / n;
    let subs = cols / sub;
    let mut wq = vec![0; cols];
    let mut wd = vec![0.0; subs];
    let mut wo = vec![0.0; subs];
    let mut sums = vec![0; subs];
    for (row, dots) in data
        .chunks_exact(data.len() / rows)
        .zip(by_row.chunks_exact_mut(n))
    {
        decode(row, &mut wq, &mut wd, &mut wo);
        for (t, dot) in dots.iter_mut().enumerate() {
            block_sums(&wq, &xq.q[t * cols..(t + 1) * cols], sub, &mut sums);
            let xd = &xq.d[t * subs..(t + 1) * subs];
            let xs = &xq.sum[t * subs..(t + 1) * subs];
            *dot = sums
                .iter()
                .zip(&wd)
                .zip(xd)
                .zip(wo.iter().zip(xs))
                .map(|(((&s, &dw), &dx), (&o, &xs))| s as f32 * (dw * dx) + o * xs)
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::model::weights::QTensor;
    use crate::quant::{dequantize, quantize as encode};

    /// Every block format Hearth reads.
    const FAST: [GgmlType; 10] = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
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

    /// Row 0 of `m` decoded: per element its quant, and its sub-block's scale and offset.
    fn decoded(m: &QTensor) -> Vec<(i8, f32, f32)> {
        let Decoding { decode, sub } = decoding(m.ty).unwrap();
        let s = m.cols / sub;
        let (mut q, mut d, mut o) = (vec![0; m.cols], vec![0.0; s], vec![0.0; s]);
        decode(&m.data[..m.data.len() / m.rows], &mut q, &mut d, &mut o);
        q.iter()
            .enumerate()
            .map(|(i, &q)| (q, d[i / sub], o[i / sub]))
            .collect()
    }

    /// The quants times their sub-block's scale plus its offset are exactly what ggml's
    /// dequantizer gives.
    #[test]
    fn row_decoding_matches_the_dequantizer() {
        for ty in FAST {
            let m = matrix(ty, 1, cols(ty, 3), 3);
            let got: Vec<f32> = decoded(&m)
                .iter()
                .map(|&(q, d, o)| d * f32::from(q) + o)
                .collect();
            let mut want = vec![0.0; m.cols];
            dequantize(ty, &m.data, &mut want).unwrap();
            assert_eq!(got, want, "{ty}");
        }
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            assert!(decoding(ty).is_none(), "{ty}");
        }
    }

    /// Quantized inputs lie within half a step of the values, a block's largest magnitude is
    /// 127 steps, and the sums are taken per sub-block.
    #[test]
    fn inputs_quantize_to_within_half_a_step() {
        let mut x = values(5 * BLOCK, 9);
        x[BLOCK..2 * BLOCK].fill(0.0);
        let xq = quantize(&x, 16);
        for (b, x) in x.chunks_exact(BLOCK).enumerate() {
            let d = xq.d[2 * b];
            assert_eq!(xq.d[2 * b + 1], d);
            let q = &xq.q[b * BLOCK..(b + 1) * BLOCK];
            for (&v, &q) in x.iter().zip(q) {
                assert!((v - f32::from(q) * d).abs() <= d / 2.0 * (1.0 + 1e-6));
            }
            for (h, q) in q.chunks_exact(16).enumerate() {
                let sum: i32 = q.iter().map(|&q| i32::from(q)).sum();
                assert_eq!(xq.sum[2 * b + h], d * sum as f32);
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
                            let row = decoded(&m.rows(r, 1));
                            let (mut bound, mut size) = (0.0, 0.0);
                            for ((w, x), row) in w
                                .chunks_exact(BLOCK)
                                .zip(x.chunks_exact(BLOCK))
                                .zip(row.chunks_exact(BLOCK))
                            {
                                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                                bound += w.iter().map(|w| w.abs()).sum::<f32>() * amax / 254.0;
                                size += row
                                    .iter()
                                    .zip(x)
                                    .map(|(&(q, d, o), x)| {
                                        ((f32::from(q) * d).abs() + o.abs()) * x.abs()
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
