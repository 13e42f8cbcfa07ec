//! f32 to ggml blocks: ports of ggml's reference quantizers (`quantize_row_*_ref`), which take
//! no importance matrix. The float operations keep ggml's order, so output matches it byte for
//! byte (and matches gguf-py, which implements the legacy types the same way).

use super::float::{f16_at, put_f16};
use super::kquants::{scale_min_k4, scale_q3_k};
use super::{GgmlType, QuantError, QK_K};

/// Scales below this mark a group as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Encodes `src` as whole blocks of `ty`.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let block_fn = ty
        .codec()
        .and_then(|c| c.quantize)
        .ok_or(QuantError::UnsupportedQuant(ty))?;
    let (block, size) = ty.block_geometry();
    if src.len() % block != 0 {
        return Err(QuantError::PartialBlock {
            ty,
            elements: src.len(),
            block,
        });
    }
    let mut out = vec![0; src.len() / block * size];
    for (x, y) in src.chunks_exact(block).zip(out.chunks_exact_mut(size)) {
        block_fn(x, y);
    }
    Ok(out)
}

pub(super) fn f32_block(x: &[f32], y: &mut [u8]) {
    y.copy_from_slice(&x[0].to_le_bytes());
}

pub(super) fn f16_block(x: &[f32], y: &mut [u8]) {
    put_f16(y, 0, x[0]);
}

pub(super) fn bf16_block(x: &[f32], y: &mut [u8]) {
    y.copy_from_slice(&f32_to_bf16(x[0]).to_le_bytes());
}

/// ggml's rounding to bf16: NaNs are kept (made quiet), everything else rounds to nearest even.
fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return (u >> 16) as u16 | 64;
    }
    ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) as u16
}

/// The first element of largest magnitude, with its sign (0 for an all-zero block).
fn signed_abs_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Packs 32 five-bit values as the Q5 formats store them: low nibbles of `q[j]` and `q[j + 16]`
/// share byte `j` of `qs`, fifth bits go to bit `j` of the little-endian `qh`.
fn pack_q5(q: [u8; 32], qh: &mut [u8], qs: &mut [u8]) {
    let mut bits = 0u32;
    for j in 0..16 {
        qs[j] = q[j] & 0x0F | (q[j + 16] & 0x0F) << 4;
        bits |= u32::from(q[j] >> 4) << j | u32::from(q[j + 16] >> 4) << (j + 16);
    }
    qh.copy_from_slice(&bits.to_le_bytes());
}

pub(super) fn q4_0(x: &[f32], y: &mut [u8]) {
    let d = signed_abs_max(x) / -8.0;
    let id = inverse(d);
    put_f16(y, 0, d);
    for j in 0..16 {
        // Truncation towards zero after adding 8.5 rounds to nearest, as ggml's cast does.
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        y[2 + j] = q0 | q1 << 4;
    }
}

pub(super) fn q4_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    put_f16(y, 0, d);
    put_f16(y, 2, min);
    for j in 0..16 {
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        y[4 + j] = q0 | q1 << 4;
    }
}

pub(super) fn q5_0(x: &[f32], y: &mut [u8]) {
    let d = signed_abs_max(x) / -16.0;
    let id = inverse(d);
    put_f16(y, 0, d);
    let q = std::array::from_fn(|j| ((x[j] * id + 16.5) as i8).min(31) as u8);
    let (qh, qs) = y[2..].split_at_mut(4);
    pack_q5(q, qh, qs);
}

pub(super) fn q5_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    put_f16(y, 0, d);
    put_f16(y, 2, min);
    let q = std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as u8).min(31));
    let (qh, qs) = y[4..].split_at_mut(4);
    pack_q5(q, qh, qs);
}

pub(super) fn q8_0(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    put_f16(y, 0, d);
    for (q, &v) in y[2..].iter_mut().zip(x) {
        // `round` rounds halves away from zero, like C's roundf.
        *q = (v * id).round() as i8 as u8;
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, via the float adder (exact for
/// |v| < 2^22; larger inputs wrap exactly as ggml's do).
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007F_FFFF) - 0x0040_0000
}

/// ggml's `make_qx_quants` with `rmse_type` 1 and no importance weights: symmetric quants
/// `L - nmax` in `-nmax..nmax`, trying 19 scales around `nmax / max` and keeping the one that
/// minimises the error weighted by `x²`. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let max = signed_abs_max(x);
    if max.abs() < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let store = |iscale: f32, l_out: &mut [u8]| {
        for (o, &v) in l_out.iter_mut().zip(x) {
            *o = (nmax + quant(iscale, v)) as u8;
        }
    };

    let iscale = -(nmax as f32) / max;
    store(iscale, l_out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale, l_out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric quants in `-nmax..nmax` (stored `+ nmax`),
/// refined one element at a time while the `x²`-weighted fit improves. Returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let max = signed_abs_max(x);
    if max.abs() < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l = [0i32; 16];
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        *li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        let w = v * v;
        sumlx += w * v * *li as f32;
        suml2 += w * *li as f32 * *li as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let mut slx = sumlx - w * v * *li as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * *li as f32 * *li as f32;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &li) in l_out.iter_mut().zip(&l) {
        *o = (li + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Parameters of ggml's `make_qkx2_quants` search over scales `(nmax + rmin + rdelta * i) /
/// range` for `i` in `0..=nstep`.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Minimise the weighted absolute error rather than the squared one.
    use_mad: bool,
}

/// ggml's `make_qkx2_quants`: asymmetric quants `L` in `0..=nmax` with `x ≈ scale * L - min`,
/// fitted by weighted least squares for each candidate scale. Returns `(scale, min)`.
fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], l_out: &mut [u8]) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let error = |scale: f32, min: f32, l: &[u8]| {
        let mut err = 0.0f32;
        for ((&l, &v), &w) in l.iter().zip(x).zip(weights) {
            let diff = scale * f32::from(l) + min - v;
            err += w * if p.use_mad { diff.abs() } else { diff * diff };
        }
        err
    };
    let quantize = |iscale: f32, min: f32, l: &mut [u8]| {
        for (o, &v) in l.iter_mut().zip(x) {
            *o = nearest_int(iscale * (v - min)).clamp(0, p.nmax) as u8;
        }
    };

    let iscale = p.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    quantize(iscale, min, l_out);
    let mut best_error = error(scale, min, l_out);
    let mut laux = [0u8; 32];
    let laux = &mut laux[..x.len()];
    for is in 0..=p.nstep {
        let iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min);
        quantize(iscale, min, laux);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((&l, &v), &w) in laux.iter().zip(x).zip(weights) {
            let l = f32::from(l);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error = error(this_scale, this_min, laux);
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Fits each 16-value sub-block with `fit`, which stores its quants and returns its scale (Q3_K
/// and Q6_K). Returns the scales and the signed largest of them.
fn fit_16(
    x: &[f32],
    l: &mut [u8; QK_K],
    fit: impl Fn(&[f32], &mut [u8]) -> f32,
) -> ([f32; 16], f32) {
    let mut scales = [0f32; 16];
    for (s, (xs, ls)) in scales
        .iter_mut()
        .zip(x.chunks_exact(16).zip(l.chunks_exact_mut(16)))
    {
        *s = fit(xs, ls);
    }
    (scales, signed_abs_max(&scales))
}

/// ggml's second pass over the K-quants: requantizes each sub-block of `n` values against the
/// scale `d` and min `dm` it was stored with (`stored(j)` for sub-block `j`), as
/// `nearest_int((x + dm) / d)` clamped to `lo..=hi` and stored less `lo`. The symmetric formats
/// give `dm` -0.0, which leaves every `x` as it is. A sub-block whose `d` is zero keeps its
/// quants.
fn requantize(
    x: &[f32],
    l: &mut [u8],
    n: usize,
    (lo, hi): (i32, i32),
    stored: impl Fn(usize) -> (f32, f32),
) {
    for (j, (xs, ls)) in x.chunks_exact(n).zip(l.chunks_exact_mut(n)).enumerate() {
        let (d, dm) = stored(j);
        if d == 0.0 {
            continue;
        }
        for (o, &v) in ls.iter_mut().zip(xs) {
            *o = (nearest_int((v + dm) / d).clamp(lo, hi) - lo) as u8;
        }
    }
}

/// Packs 2-bit values as Q2_K and Q3_K store them: each 128-element half fills 32 bytes, value
/// `l + 32k` of the half in bits `2k..2k+2` of byte `l`.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for (h, qs) in qs.chunks_exact_mut(32).enumerate() {
        let l = &l[128 * h..];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = l[j] | l[j + 32] << 2 | l[j + 64] << 4 | l[j + 96] << 6;
        }
    }
}

fn max_of(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, &s| if s > m { s } else { m })
}

pub(super) fn q2_k(x: &[f32], y: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let params = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let weights: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(&params, xs, &weights, ls);
    }
    let (max_scale, max_min) = (max_of(&scales), max_of(&mins));

    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (b, &s) in sc.iter_mut().zip(&scales) {
            *b = nearest_int(iscale * s) as u8;
        }
        put_f16(dd, 0, max_scale / Q4SCALE);
    } else {
        sc.fill(0);
        put_f16(dd, 0, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (b, &m) in sc.iter_mut().zip(&mins) {
            *b |= (nearest_int(iscale * m) << 4) as u8;
        }
        put_f16(dd, 2, max_min / Q4SCALE);
    } else {
        put_f16(dd, 2, 0.0);
    }

    let (d_all, dmin_all) = (f16_at(dd, 0), f16_at(dd, 2));
    requantize(x, &mut l, 16, (0, 3), |j| {
        let s = sc[j];
        (d_all * f32::from(s & 0x0F), dmin_all * f32::from(s >> 4))
    });
    pack_2bit(&l, qs);
}

pub(super) fn q3_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (scales, max_scale) = fit_16(x, &mut l, |xs, ls| make_q3_quants(4, xs, ls));

    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(12);
    sc.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            let q = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                sc[j] = q & 0x0F;
            } else {
                sc[j - 8] |= (q & 0x0F) << 4;
            }
            sc[8 + j % 4] |= (q >> 4) << (2 * (j / 4));
        }
        put_f16(dd, 0, 1.0 / iscale);
    } else {
        put_f16(dd, 0, 0.0);
    }

    let d_all = f16_at(dd, 0);
    requantize(x, &mut l, 16, (-4, 3), |j| {
        (d_all * f32::from(scale_q3_k(j, sc)), -0.0)
    });

    // The third bit of element j goes to bit j / 32 of hmask[j % 32].
    hmask.fill(0);
    for (j, lj) in l.iter_mut().enumerate() {
        if *lj > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *lj -= 4;
        }
    }
    pack_2bit(&l, qs);
}

/// The shared first half of Q4_K and Q5_K: fits each sub-block of 32, stores d, dmin and the
/// packed 6-bit scales and mins in `head` (16 bytes), and leaves the quants in `l`.
fn quantize_k4_head(x: &[f32], params: &Qkx2, head: &mut [u8], l: &mut [u8; QK_K]) {
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(params, xs, &weights, ls);
    }
    let (max_scale, max_min) = (max_of(&scales), max_of(&mins));

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (dd, sc) = head.split_at_mut(4);
    for j in 0..8 {
        // ggml narrows to u8 before clamping; the wrap is kept for identical output.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = ls & 0x0F | (lm & 0x0F) << 4;
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(dd, 0, max_scale / 63.0);
    put_f16(dd, 2, max_min / 63.0);

    let (d_all, dmin_all) = (f16_at(dd, 0), f16_at(dd, 2));
    requantize(x, l, 32, (0, params.nmax), |j| {
        let (s, m) = scale_min_k4(j, sc);
        (d_all * f32::from(s), dmin_all * f32::from(m))
    });
}

pub(super) fn q4_k(x: &[f32], y: &mut [u8]) {
    let params = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let (head, qs) = y.split_at_mut(16);
    quantize_k4_head(x, &params, head, &mut l);
    for (q, l) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
        for (j, q) in q.iter_mut().enumerate() {
            *q = l[j] | l[j + 32] << 4;
        }
    }
}

pub(super) fn q5_k(x: &[f32], y: &mut [u8]) {
    let params = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let (head, rest) = y.split_at_mut(16);
    let (qh, qs) = rest.split_at_mut(32);
    quantize_k4_head(x, &params, head, &mut l);
    // Sub-block g's fifth bits go to bit g of qh; its low nibbles as in Q4_K.
    qh.fill(0);
    for (p, (q, l)) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)).enumerate() {
        for (j, q) in q.iter_mut().enumerate() {
            let (l1, l2) = (l[j], l[j + 32]);
            qh[j] |= (l1 >> 4) << (2 * p) | (l2 >> 4) << (2 * p + 1);
            *q = l1 & 0x0F | (l2 & 0x0F) << 4;
        }
    }
}

pub(super) fn q6_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (scales, max_scale) = fit_16(x, &mut l, |xs, ls| make_qx_quants(32, xs, ls));
    if max_scale.abs() < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }

    let (ql, rest) = y.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(16);
    let iscale = -128.0 / max_scale;
    put_f16(dd, 0, 1.0 / iscale);
    for (b, &s) in sc.iter_mut().zip(&scales) {
        *b = nearest_int(iscale * s).min(127) as i8 as u8;
    }

    let d_all = f16_at(dd, 0);
    requantize(x, &mut l, 16, (-32, 31), |j| {
        (d_all * f32::from(sc[j] as i8), -0.0)
    });

    // Each half of 128: value l + 32k has its low nibble in ql (k even: byte l, odd: byte
    // l + 32; k < 2: low nibble, else high) and its top two bits in bits 2k..2k+2 of qh[l].
    for ((ql, qh), l) in ql
        .chunks_exact_mut(64)
        .zip(qh.chunks_exact_mut(32))
        .zip(l.chunks_exact(128))
    {
        for j in 0..32 {
            let q: [u8; 4] = std::array::from_fn(|k| l[j + 32 * k]);
            ql[j] = q[0] & 0x0F | (q[2] & 0x0F) << 4;
            ql[j + 32] = q[1] & 0x0F | (q[3] & 0x0F) << 4;
            qh[j] = q[0] >> 4 | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6;
        }
    }
}

#[cfg(test)]
mod tests;
