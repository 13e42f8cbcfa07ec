//! The K-quant super-blocks of 256 elements: sub-blocks of 16 or 32 elements, each with a small
//! integer scale (and for Q2_K, Q4_K and Q5_K an integer min) that multiplies the f16 super-block
//! scale `d` (and `dmin`). Products are formed in ggml's order so results are bit-identical.

use super::float::f16_at;

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K and Q5_K:
/// bytes 0..4 hold scales 0..4, bytes 4..8 mins 0..4, each with two high bits of sub-blocks
/// 4..8 on top; bytes 8..12 hold the low nibbles of sub-blocks 4..8 (scale low, min high).
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            q[j + 4] & 0x0F | (q[j - 4] >> 6) << 4,
            q[j + 4] >> 4 | (q[j] >> 6) << 4,
        )
    }
}

/// The signed 6-bit scale of sub-block `j` (0..16) from Q3_K's 12 packed bytes: low nibbles in
/// bytes 0..8 (sub-blocks 0..8 low, 8..16 high), two high bits each in bytes 8..12.
pub(crate) fn scale_q3_k(j: usize, s: &[u8]) -> i8 {
    let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | high << 4) as i8 - 32
}

/// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Sub-block `g` of 16
/// takes 2-bit field `(g % 8) / 2` of bytes `32 * (g / 8) + 16 * (g % 2)..` of qs.
pub(super) fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(84).zip(dst.chunks_exact_mut(256)) {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let (d, min) = (f16_at(b, 80), f16_at(b, 82));
        for (g, (y, &sc)) in y.chunks_exact_mut(16).zip(scales).enumerate() {
            let q = &qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let shift = 2 * ((g % 8) / 2);
            let dl = d * f32::from(sc & 0x0F);
            let ml = min * f32::from(sc >> 4);
            for (y, &q) in y.iter_mut().zip(q) {
                *y = dl * f32::from((q >> shift) & 3) - ml;
            }
        }
    }
}

/// Q3_K: hmask[32], qs[64], scales[12], d. Sub-block `g` of 16 takes its low two bits as in Q2_K
/// and its third bit from bit `g / 2` of hmask bytes `16 * (g % 2)..`; a clear bit subtracts 4.
pub(super) fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(110).zip(dst.chunks_exact_mut(256)) {
        let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
        let d = f16_at(b, 108);
        for (g, y) in y.chunks_exact_mut(16).enumerate() {
            let q = &qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let hm = &hmask[16 * (g % 2)..][..16];
            let (shift, bit) = (2 * ((g % 8) / 2), 1u8 << (g / 2));
            let dl = d * f32::from(scale_q3_k(g, scales));
            for ((y, &q), &h) in y.iter_mut().zip(q).zip(hm) {
                let q = ((q >> shift) & 3) as i8 - if h & bit != 0 { 0 } else { 4 };
                *y = dl * f32::from(q);
            }
        }
    }
}

/// Q4_K: d, dmin, scales[12], qs[128]. Sub-block `g` of 32 is the low (even `g`) or high nibbles
/// of bytes `32 * (g / 2)..` of qs.
pub(super) fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(256)) {
        let (d, min) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for (g, y) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(g, scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let shift = 4 * (g % 2);
            for (y, &q) in y.iter_mut().zip(&qs[32 * (g / 2)..][..32]) {
                *y = d1 * f32::from((q >> shift) & 0x0F) - m1;
            }
        }
    }
}

/// Q5_K: d, dmin, scales[12], qh[32], qs[128]. As Q4_K, plus a fifth bit for sub-block `g` in
/// bit `g` of qh.
pub(super) fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(176).zip(dst.chunks_exact_mut(256)) {
        let (d, min) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for (g, y) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(g, scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let shift = 4 * (g % 2);
            for ((y, &q), &h) in y.iter_mut().zip(&qs[32 * (g / 2)..][..32]).zip(qh) {
                let q = (q >> shift) & 0x0F | ((h >> g) & 1) << 4;
                *y = d1 * f32::from(q) - m1;
            }
        }
    }
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d. Each half of 128 elements uses 64 bytes of ql and
/// 32 of qh; its quarter `k` takes nibble `k / 2` of ql bytes `32 * (k % 2)..` and bits `2k..2k+2`
/// of qh, with a scale per 16 elements.
pub(super) fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 208);
        for (h, y) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b[64 * h..][..64];
            let qh = &b[128 + 32 * h..][..32];
            let sc = &b[192 + 8 * h..][..8];
            for (k, y) in y.chunks_exact_mut(32).enumerate() {
                let ql = &ql[32 * (k % 2)..][..32];
                for (l, y) in y.iter_mut().enumerate() {
                    let low = (ql[l] >> (4 * (k / 2))) & 0x0F;
                    let q = (low | ((qh[l] >> (2 * k)) & 3) << 4) as i8 - 32;
                    *y = d * f32::from(sc[l / 16 + 2 * k] as i8) * f32::from(q);
                }
            }
        }
    }
}
