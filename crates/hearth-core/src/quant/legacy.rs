//! The 32-element block formats: an f16 scale `d` (and for the `_1` types an f16 offset `m`),
//! then packed quants. Element `j` and `j + 16` share a byte: low nibble, then high nibble.

use super::float::f16_at;

pub(super) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (j, &q) in b[2..].iter().enumerate() {
            y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
            y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for (j, &q) in b[4..].iter().enumerate() {
            y[j] = f32::from(q & 0x0F) * d + m;
            y[j + 16] = f32::from(q >> 4) * d + m;
        }
    }
}

/// The fifth bits of element `j` and `j + 16`, from the 32-bit mask `qh`.
fn high_bits(qh: u32, j: usize) -> (u8, u8) {
    (
        ((qh >> j) & 1) as u8 * 16,
        ((qh >> (j + 16)) & 1) as u8 * 16,
    )
}

pub(super) fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (j, &q) in b[6..].iter().enumerate() {
            let (h0, h1) = high_bits(qh, j);
            y[j] = (i32::from(q & 0x0F | h0) - 16) as f32 * d;
            y[j + 16] = (i32::from(q >> 4 | h1) - 16) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(32)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for (j, &q) in b[8..].iter().enumerate() {
            let (h0, h1) = high_bits(qh, j);
            y[j] = f32::from(q & 0x0F | h0) * d + m;
            y[j + 16] = f32::from(q >> 4 | h1) * d + m;
        }
    }
}

pub(super) fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (y, &q) in y.iter_mut().zip(&b[2..]) {
            *y = f32::from(q as i8) * d;
        }
    }
}
