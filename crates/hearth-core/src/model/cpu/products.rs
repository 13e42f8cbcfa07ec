//! The CPU's fast matrix products, as ggml's CPU backend takes them: the inputs quantized once
//! per product to 8 bits per block of the weights' super-block size (ggml's `quantize_row_q8_0`
//! for the 32-value formats, `quantize_row_q8_K`'s 256 for the K-quants, scales kept in f32),
//! each weight row decoded once to 8-bit quants with integer scales and offsets per sub-block of
//! 16 or 32 and float ones per super-block, and integer dot products per sub-block
//! ([`block_sums`]) summed against those integer scales, so that floats are met once per
//! super-block. Every block format has such a decoding; F32, F16 and BF16 take the reference
//! product. Where a format has a fused kernel ([`Fused`]) only the row's scales are decoded,
//! and its quants are unpacked in registers and dotted with the inputs' straight away: the same
//! integer sums, so the same outputs.

use half::f16;

use super::simd::{block_sums, BLOCK};
use crate::quant::{scale_min_k4, scale_q3_k, GgmlType, QK_K};

/// A row decoded: element `i` of sub-block `g` (`sub` values) of super-block `s` is
/// `d[s] * scale[g] * q[i] + off[s] * min[g]`.
pub struct Decoded {
    pub q: Vec<i8>,
    pub scale: Vec<i32>,
    pub min: Vec<i32>,
    pub d: Vec<f32>,
    pub off: Vec<f32>,
}

impl Decoded {
    /// Room for a row of `cols` values decoded as `decoding` says.
    pub fn new(cols: usize, decoding: Decoding) -> Self {
        let (subs, blocks) = (cols / decoding.sub, cols / decoding.block);
        Decoded {
            q: vec![0; cols],
            scale: vec![0; subs],
            min: vec![0; subs],
            d: vec![0.0; blocks],
            off: vec![0.0; blocks],
        }
    }
}

/// Decodes one row (a whole number of super-blocks) into a [`Decoded`] of its length.
pub type RowDecoder = fn(&[u8], &mut Decoded);

/// `isum[s] = Σ scale[g] · dot(sub-block g of the row, of x)` over the sub-blocks `g` of
/// super-block `s`, for one row's bytes, one input's quants `x` with their sums per sub-block,
/// and the row's integer scales.
pub type RowDot = fn(&[u8], (&[i8], &[i32]), &[i32], &mut [i32]);

/// A row's dot products taken from its bytes: `scales` decodes all of a [`Decoded`] but its
/// quants, and `dot` takes the integer sums with each input.
#[derive(Clone, Copy)]
pub struct Fused {
    pub scales: RowDecoder,
    pub dot: RowDot,
}

/// A format's fast decoding: the row decoder, the length of the sub-blocks that share an
/// integer scale and offset (16 or [`BLOCK`]), and of the super-blocks that share float ones
/// ([`BLOCK`] or [`QK_K`]), which is also the inputs' block; and its fused kernel, if any.
#[derive(Clone, Copy)]
pub struct Decoding {
    pub decode: RowDecoder,
    pub sub: usize,
    pub block: usize,
    pub fused: Option<Fused>,
}

/// The row decoding of format `ty`, where it has a fast product.
pub fn decoding(ty: GgmlType) -> Option<Decoding> {
    let (decode, sub, block): (RowDecoder, usize, usize) = match ty {
        GgmlType::Q8_0 => (decode_q8_0, BLOCK, BLOCK),
        GgmlType::Q4_0 => (decode_q4_0, BLOCK, BLOCK),
        GgmlType::Q4_1 => (decode_q4_1, BLOCK, BLOCK),
        GgmlType::Q5_0 => (decode_q5_0, BLOCK, BLOCK),
        GgmlType::Q5_1 => (decode_q5_1, BLOCK, BLOCK),
        GgmlType::Q2_K => (decode_q2_k, 16, QK_K),
        GgmlType::Q3_K => (decode_q3_k, 16, QK_K),
        GgmlType::Q4_K => (decode_q4_k, BLOCK, QK_K),
        GgmlType::Q5_K => (decode_q5_k, BLOCK, QK_K),
        GgmlType::Q6_K => (decode_q6_k, 16, QK_K),
        _ => return None,
    };
    Some(Decoding {
        decode,
        sub,
        block,
        fused: fused(ty),
    })
}

/// The fused kernels: WebAssembly's simd128 ones and aarch64's NEON ones, where writing the
/// quants out and reading them back costs more than the products.
#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn fused(ty: GgmlType) -> Option<Fused> {
    #[cfg(target_arch = "aarch64")]
    use super::simd::neon as kernels;
    #[cfg(target_arch = "wasm32")]
    use super::simd::simd128 as kernels;
    let (scales, dot): (RowDecoder, RowDot) = match ty {
        GgmlType::Q4_K => (scales_q4_k, kernels::q4_k_dots),
        GgmlType::Q5_K => (scales_q5_k, kernels::q5_k_dots),
        GgmlType::Q6_K => (scales_q6_k, kernels::q6_k_dots),
        _ => return None,
    };
    Some(Fused { scales, dot })
}

#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
)))]
fn fused(_: GgmlType) -> Option<Fused> {
    None
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 32-element formats: `bytes` a block, decoded by `block` into quants, returning the
/// block's scale and offset (each sub-block's integer scale and min are 1).
fn decode_blocks(
    src: &[u8],
    bytes: usize,
    row: &mut Decoded,
    block: impl Fn(&[u8], &mut [i8]) -> (f32, f32),
) {
    row.scale.fill(1);
    row.min.fill(1);
    for (((b, q), d), o) in src
        .chunks_exact(bytes)
        .zip(row.q.chunks_exact_mut(BLOCK))
        .zip(row.d.iter_mut())
        .zip(row.off.iter_mut())
    {
        (*d, *o) = block(b, q);
    }
}

fn decode_q8_0(src: &[u8], row: &mut Decoded) {
    decode_blocks(src, 34, row, |b, q| {
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

fn decode_q4_0(src: &[u8], row: &mut Decoded) {
    decode_blocks(src, 18, row, |b, q| {
        nibbles(&b[2..], q, 8);
        (f16_at(b, 0), 0.0)
    });
}

fn decode_q4_1(src: &[u8], row: &mut Decoded) {
    decode_blocks(src, 20, row, |b, q| {
        nibbles(&b[4..], q, 0);
        (f16_at(b, 0), f16_at(b, 2))
    });
}

fn decode_q5_0(src: &[u8], row: &mut Decoded) {
    decode_blocks(src, 22, row, |b, q| {
        nibbles(&b[6..], q, 0);
        fifth_bits(&b[2..6], q);
        q.iter_mut().for_each(|q| *q -= 16);
        (f16_at(b, 0), 0.0)
    });
}

fn decode_q5_1(src: &[u8], row: &mut Decoded) {
    decode_blocks(src, 24, row, |b, q| {
        nibbles(&b[8..], q, 0);
        fifth_bits(&b[4..8], q);
        (f16_at(b, 0), f16_at(b, 2))
    });
}

/// The K-quant super-blocks of `bytes` bytes, `QK_K / sub` sub-blocks each: `block` decodes
/// one into its quants and its sub-blocks' integer scales and mins, and returns its own scale
/// and offset. (Block decoders are functions of their own: slices in a struct or a closure's
/// arguments are not known not to alias, which keeps their loops from vectorizing.)
fn decode_super_blocks(
    src: &[u8],
    (bytes, sub): (usize, usize),
    row: &mut Decoded,
    block: impl Fn(&[u8], &mut [i8], &mut [i32], &mut [i32]) -> (f32, f32),
) {
    let per = QK_K / sub;
    for ((((b, q), (scale, min)), d), off) in src
        .chunks_exact(bytes)
        .zip(row.q.chunks_exact_mut(QK_K))
        .zip(
            row.scale
                .chunks_exact_mut(per)
                .zip(row.min.chunks_exact_mut(per)),
        )
        .zip(row.d.iter_mut())
        .zip(row.off.iter_mut())
    {
        (*d, *off) = block(b, q, scale, min);
    }
}

fn decode_q2_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (84, 16), row, q2_k_block);
}

/// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Sub-block `g` of 16
/// takes 2-bit field `(g % 8) / 2` of bytes `32 * (g / 8) + 16 * (g % 2)..` of qs.
fn q2_k_block(b: &[u8], q: &mut [i8], scale: &mut [i32], min: &mut [i32]) -> (f32, f32) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    for (g, q) in q.chunks_exact_mut(16).enumerate() {
        scale[g] = i32::from(scales[g] & 0x0F);
        min[g] = i32::from(scales[g] >> 4);
        let shift = 2 * ((g % 8) / 2);
        for (q, &v) in q.iter_mut().zip(&qs[32 * (g / 8) + 16 * (g % 2)..][..16]) {
            *q = ((v >> shift) & 3) as i8;
        }
    }
    (f16_at(b, 80), -f16_at(b, 82))
}

fn decode_q3_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (110, 16), row, q3_k_block);
}

/// Q3_K: hmask[32], qs[64], scales[12], d. Sub-block `g` of 16 takes its low two bits as in
/// Q2_K and its third bit from bit `g / 2` of hmask bytes `16 * (g % 2)..`; a clear bit
/// subtracts 4.
fn q3_k_block(b: &[u8], q: &mut [i8], scale: &mut [i32], min: &mut [i32]) -> (f32, f32) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    min.fill(0);
    for (g, q) in q.chunks_exact_mut(16).enumerate() {
        scale[g] = i32::from(scale_q3_k(g, scales));
        let (shift, bit) = (2 * ((g % 8) / 2), 1u8 << (g / 2));
        let lows = &qs[32 * (g / 8) + 16 * (g % 2)..][..16];
        for ((q, &v), &h) in q.iter_mut().zip(lows).zip(&hmask[16 * (g % 2)..][..16]) {
            *q = ((v >> shift) & 3) as i8 - if h & bit != 0 { 0 } else { 4 };
        }
    }
    (f16_at(b, 108), 0.0)
}

fn decode_q4_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (144, BLOCK), row, |b, q, scale, min| {
        q45_k_block(b, None, q);
        q45_k_scales(b, scale, min)
    });
}

fn decode_q5_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (176, BLOCK), row, |b, q, scale, min| {
        q45_k_block(b, Some(&b[16..48]), q);
        q45_k_scales(b, scale, min)
    });
}

#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn scales_q4_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (144, BLOCK), row, |b, _, scale, min| {
        q45_k_scales(b, scale, min)
    });
}

#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn scales_q5_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (176, BLOCK), row, |b, _, scale, min| {
        q45_k_scales(b, scale, min)
    });
}

/// Q4_K and Q5_K: d, dmin, then 12 bytes of 6-bit scales and mins; sub-block `g` has scale
/// `d * sc` and offset `-dmin * m`.
fn q45_k_scales(b: &[u8], scale: &mut [i32], min: &mut [i32]) -> (f32, f32) {
    let scales = &b[4..16];
    for g in 0..QK_K / BLOCK {
        let (sc, m) = scale_min_k4(g, scales);
        scale[g] = i32::from(sc);
        min[g] = i32::from(m);
    }
    (f16_at(b, 0), -f16_at(b, 2))
}

/// Q4_K and Q5_K's quants: after the scales (and Q5_K's 32 bytes of fifth bits, bit `g` for
/// sub-block `g`), 128 bytes of nibbles: sub-block `g` of 32 takes the low (even `g`) or high
/// (odd `g`) nibbles of bytes `32 * (g / 2)..`.
fn q45_k_block(b: &[u8], qh: Option<&[u8]>, q: &mut [i8]) {
    let qs = &b[b.len() - 128..];
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

fn decode_q6_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (210, 16), row, |b, q, scale, min| {
        q6_k_block(b, q);
        q6_k_scales(b, scale, min)
    });
}

#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn scales_q6_k(src: &[u8], row: &mut Decoded) {
    decode_super_blocks(src, (210, 16), row, |b, _, scale, min| {
        q6_k_scales(b, scale, min)
    });
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d; sub-block `g` of 16 has scale `d * scales[g]`.
fn q6_k_scales(b: &[u8], scale: &mut [i32], min: &mut [i32]) -> (f32, f32) {
    min.fill(0);
    for (scale, &v) in scale.iter_mut().zip(&b[192..208]) {
        *scale = i32::from(v as i8);
    }
    (f16_at(b, 208), 0.0)
}

/// Q6_K's quants: each half of 128 elements uses 64 bytes of ql and 32 of qh; its quarter `k`
/// takes nibble `k / 2` of ql bytes `32 * (k % 2)..` and bits `2k..2k+2` of qh, less 32.
fn q6_k_block(b: &[u8], q: &mut [i8]) {
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
}

/// Values quantized per block of `block` values: `value ≈ q * d` of its block; `sum` is the sum
/// of the quants of each sub-block of `sub`.
pub struct Quantized {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub sum: Vec<i32>,
}

/// `x` (a whole number of blocks) quantized as ggml's `quantize_row_q8_0` (blocks of 32) and
/// `quantize_row_q8_K` (256) do: each block's largest magnitude maps to 127, the others round
/// to nearest, ties away from zero; the quants summed per sub-block of `sub`.
pub fn quantize(x: &[f32], block: usize, sub: usize) -> Quantized {
    let mut q = vec![0; x.len()];
    let mut d = vec![0.0; x.len() / block];
    for ((x, q), d) in x
        .chunks_exact(block)
        .zip(q.chunks_exact_mut(block))
        .zip(d.iter_mut())
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in q.iter_mut().zip(x) {
            *q = (v * inv).round() as i8;
        }
    }
    let sum = q
        .chunks_exact(sub)
        .map(|q| q.iter().map(|&q| i32::from(q)).sum())
        .collect();
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
    let xq = quantize(x, decoding.block, decoding.sub);
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
    let cols = xq.q.len() / n;
    let (subs, blocks) = (cols / decoding.sub, cols / decoding.block);
    let mut row = Decoded::new(cols, decoding);
    let mut sums = vec![0; subs];
    let mut terms = vec![0.0; blocks];
    for (data, dots) in data
        .chunks_exact(data.len() / rows)
        .zip(by_row.chunks_exact_mut(n))
    {
        match decoding.fused {
            Some(fused) => (fused.scales)(data, &mut row),
            None => (decoding.decode)(data, &mut row),
        }
        for (t, dot) in dots.iter_mut().enumerate() {
            let x = (
                &xq.q[t * cols..][..cols],
                &xq.sum[t * subs..][..subs],
                &xq.d[t * blocks..][..blocks],
            );
            let into = (&mut sums[..], &mut terms[..]);
            match decoding.block / decoding.sub {
                1 => block_terms::<1>(decoding, (data, &row), x, into),
                8 => block_terms::<8>(decoding, (data, &row), x, into),
                _ => block_terms::<16>(decoding, (data, &row), x, into),
            }
            *dot = total(&terms);
        }
    }
}

/// Each super-block's share of a row's dot product with one input (its quants, their sums per
/// sub-block and its scales per super-block), from the integer sums of its `PER` sub-blocks:
/// `dx * (d * Σ scale·sums + off * Σ min·xsum)`, the inner sums taken in integers (they fit:
/// under 256 · 32 · 127 · 128 < 2^28), by the fused kernel where there is one. `PER` is a
/// constant so that the inner sums unroll.
fn block_terms<const PER: usize>(
    decoding: Decoding,
    (data, row): (&[u8], &Decoded),
    (x, xsum, xd): (&[i8], &[i32], &[f32]),
    (sums, terms): (&mut [i32], &mut [f32]),
) {
    let mins = row.min.chunks_exact(PER).zip(xsum.chunks_exact(PER));
    let floats = row.d.iter().zip(&row.off).zip(xd);
    let by_block = mins.zip(floats);
    let term = |isum: i32, ((min, xsum), ((&d, &off), &dx)): ((&[i32], &[i32]), _)| {
        let imin: i32 = min.iter().zip(xsum).map(|(a, b)| a * b).sum();
        dx * (d * isum as f32 + off * imin as f32)
    };
    match decoding.fused {
        Some(fused) => {
            let isums = &mut sums[..terms.len()];
            (fused.dot)(data, (x, xsum), &row.scale, isums);
            for ((t, &isum), b) in terms.iter_mut().zip(&*isums).zip(by_block) {
                *t = term(isum, b);
            }
        }
        None => {
            block_sums(&row.q, x, decoding.sub, sums);
            let scaled = sums.chunks_exact(PER).zip(row.scale.chunks_exact(PER));
            for ((t, (sums, scale)), b) in terms.iter_mut().zip(scaled).zip(by_block) {
                *t = term(sums.iter().zip(scale).map(|(a, b)| a * b).sum(), b);
            }
        }
    }
}

/// The sum of `v` in eight running totals, so that the additions do not wait on one another.
fn total(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, c) in acc.iter_mut().zip(c) {
            *a += c;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Test support, shared with the browser's tests (where the simd128 kernels run).
#[doc(hidden)]
pub mod testing {
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::model::weights::QTensor;
    use crate::quant::quantize as encode;

    /// Every block format Hearth reads.
    pub(crate) const FAST: [GgmlType; 10] = [
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

    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // 24 random bits to a float in -1..1.
        (0..n)
            .map(|_| (rng.next_u32() >> 8) as f32 / (1 << 23) as f32 - 1.0)
            .collect()
    }

    pub(crate) fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QTensor {
        QTensor {
            ty,
            rows,
            cols,
            data: encode(ty, &values(rows * cols, seed)).unwrap(),
        }
    }

    /// Each format's row length: one K-quant super-block holds 8 blocks of 32.
    pub(crate) fn cols(ty: GgmlType, blocks: usize) -> usize {
        blocks * ty.block_size().max(BLOCK)
    }

    /// Row 0 of `m` decoded: per element its quant term `d * scale * q` and its offset term
    /// `off * min`, each formed as ggml's dequantizers form them.
    pub(crate) fn decoded(m: &QTensor) -> Vec<(f32, f32)> {
        let decoding = decoding(m.ty).unwrap();
        let mut row = Decoded::new(m.cols, decoding);
        (decoding.decode)(&m.data[..m.data.len() / m.rows], &mut row);
        let (sub, block) = (decoding.sub, decoding.block);
        row.q
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let (g, s) = (i / sub, i / block);
                (
                    row.d[s] * row.scale[g] as f32 * f32::from(q),
                    row.off[s] * row.min[g] as f32,
                )
            })
            .collect()
    }

    /// The fast product against the reference over odd shapes and token counts, for every
    /// block format. Each input value is off by at most half its block's step
    /// (`amax / 254`, blocks of the format's super-block size), so output `r` may differ by
    /// `sum over blocks of sum |w| * amax / 254`, taken from the decoded weights, plus f32
    /// rounding (1e-5 of `sum (|quant term| + |offset term|) |x|`, the sizes of the terms
    /// summed). Where a format has a fused kernel, it equals the decoded path bit for bit.
    pub fn fast_products_match_the_reference_within_input_rounding() {
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
                    // A fused kernel takes the decoded path's integer sums: the same outputs.
                    let decoded_path = Decoding {
                        fused: None,
                        ..decoding(ty).unwrap()
                    };
                    let mut plain = vec![0.0; n * rows];
                    matmul(
                        decoded_path,
                        &m.data,
                        (rows, cols),
                        &x,
                        Some(&bias),
                        &mut plain,
                    );
                    assert_eq!(got, plain, "{ty} {rows}x{cols}, {n} inputs");
                    for t in 0..n {
                        let x = &x[t * cols..(t + 1) * cols];
                        for r in 0..rows {
                            let w = &w[r * cols..(r + 1) * cols];
                            let row = decoded(&m.rows(r, 1));
                            let (mut bound, mut size) = (0.0, 0.0);
                            let block = decoding(ty).unwrap().block;
                            for ((w, x), row) in w
                                .chunks_exact(block)
                                .zip(x.chunks_exact(block))
                                .zip(row.chunks_exact(block))
                            {
                                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                                bound += w.iter().map(|w| w.abs()).sum::<f32>() * amax / 254.0;
                                size += row
                                    .iter()
                                    .zip(x)
                                    .map(|(&(q, o), x)| (q.abs() + o.abs()) * x.abs())
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

#[cfg(test)]
mod tests {
    use super::testing::{cols, decoded, matrix, values, FAST};
    use super::*;
    use crate::quant::dequantize;

    /// The quant terms plus the offset terms are exactly what ggml's dequantizer gives.
    #[test]
    fn row_decoding_matches_the_dequantizer() {
        for ty in FAST {
            let m = matrix(ty, 1, cols(ty, 3), 3);
            let got: Vec<f32> = decoded(&m).iter().map(|&(q, o)| q + o).collect();
            let mut want = vec![0.0; m.cols];
            dequantize(ty, &m.data, &mut want).unwrap();
            assert_eq!(got, want, "{ty}");
        }
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            assert!(decoding(ty).is_none(), "{ty}");
        }
    }

    /// Quantized inputs lie within half a step of the values, a block's largest magnitude is
    /// 127 steps, and the sums are taken per sub-block: for blocks of 32 and of 256.
    #[test]
    fn inputs_quantize_to_within_half_a_step() {
        for (block, sub) in [(BLOCK, BLOCK), (BLOCK, 16), (QK_K, BLOCK), (QK_K, 16)] {
            let mut x = values(3 * block, 9);
            x[block..2 * block].fill(0.0);
            let xq = quantize(&x, block, sub);
            for (b, x) in x.chunks_exact(block).enumerate() {
                let d = xq.d[b];
                let q = &xq.q[b * block..(b + 1) * block];
                for (&v, &q) in x.iter().zip(q) {
                    assert!((v - f32::from(q) * d).abs() <= d / 2.0 * (1.0 + 1e-6));
                }
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert_eq!(
                    q.iter().map(|q| q.unsigned_abs()).max().unwrap(),
                    if amax > 0.0 { 127 } else { 0 }
                );
            }
            for (q, &sum) in xq.q.chunks_exact(sub).zip(&xq.sum) {
                assert_eq!(sum, q.iter().map(|&q| i32::from(q)).sum::<i32>());
            }
            assert_eq!(xq.sum.len(), x.len() / sub);
        }
    }

    /// Natively: the decoded path, and on aarch64 the NEON fused kernels against it (the
    /// browser's tests run the simd128 ones).
    #[test]
    fn fast_products_match_the_reference_within_input_rounding() {
        testing::fast_products_match_the_reference_within_input_rounding();
    }
}
