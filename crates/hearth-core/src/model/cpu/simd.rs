//! The integer dot product under the CPU's fast products: 8-bit weights times 8-bit
//! activations, summed per sub-block of 16 or 32 elements into exact 32-bit integers. A plain
//! loop everywhere, AVX2 on x86_64 where the processor has it (checked at run time), NEON on
//! aarch64 (always there), and WebAssembly's simd128 where the module is built with it
//! (`-C target-feature=+simd128`). Every version returns the same integers. Under simd128 and
//! NEON also the K-quants' fused row products (`simd128::q4_k_dots`, `neon::q4_k_dots` and the
//! like), which unpack the weights' bits in registers; simd128's take their byte products with
//! relaxed SIMD's dot product where the module is also built with `+relaxed-simd`.

/// Elements per block of the quantized inputs, and the longest sub-block.
pub const BLOCK: usize = 32;

/// `sums[s]` = the dot product of sub-block `s` of `w` and of `x` (`sub` values each, 16 or 32),
/// for the `sums.len()` sub-blocks, a whole number of `BLOCK`s. `x` must hold no -128
/// (quantized activations lie in -127..=127).
pub fn block_sums(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
    assert!(sub == 16 || sub == BLOCK);
    let n = sums.len() * sub;
    assert!(n % BLOCK == 0 && w.len() >= n && x.len() >= n);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, checked just above; the lengths were checked.
        unsafe { avx2::block_sums(w, x, sub, sums) };
        return;
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        neon::block_sums(w, x, sub, sums);
        return;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128::block_sums(w, x, sub, sums);
        return;
    }
    #[allow(unreachable_code)]
    block_sums_scalar(w, x, sub, sums);
}

/// [`block_sums`] in plain Rust.
pub fn block_sums_scalar(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
    for ((s, w), x) in sums
        .iter_mut()
        .zip(w.chunks_exact(sub))
        .zip(x.chunks_exact(sub))
    {
        *s = w
            .iter()
            .zip(x)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// [`super::block_sums`] with 256-bit registers, one block of 32 per step: `|w| * sign(x, w)`
    /// as unsigned-by-signed byte products (at most 128 * 127 each, so their pairwise sums fit
    /// in i16 without saturating), widened to i32; each 128-bit half holds one 16-element
    /// sub-block's sums.
    ///
    /// # Safety
    /// The processor must have AVX2; `w` and `x` must hold `sums.len() * sub` values, a whole
    /// number of blocks of 32.
    #[target_feature(enable = "avx2")]
    pub unsafe fn block_sums(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
        let ones = _mm256_set1_epi16(1);
        let blocks = sums.len() * sub / BLOCK;
        for b in 0..blocks {
            // SAFETY: the caller checked that both slices hold block `b` whole; unaligned loads.
            let (wv, xv) = unsafe {
                (
                    _mm256_loadu_si256(w.as_ptr().add(b * BLOCK).cast()),
                    _mm256_loadu_si256(x.as_ptr().add(b * BLOCK).cast()),
                )
            };
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            let quads = _mm256_madd_epi16(pairs, ones);
            let (lo, hi) = (
                _mm256_castsi256_si128(quads),
                _mm256_extracti128_si256(quads, 1),
            );
            if sub == BLOCK {
                sums[b] = total(_mm_add_epi32(lo, hi));
            } else {
                sums[2 * b] = total(lo);
                sums[2 * b + 1] = total(hi);
            }
        }
    }

    /// The sum of the four i32 lanes.
    #[target_feature(enable = "avx2")]
    fn total(v: __m128i) -> i32 {
        let two = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
        _mm_cvtsi128_si32(_mm_add_epi32(two, _mm_shuffle_epi32(two, 1)))
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub mod neon {
    use std::arch::aarch64::*;

    use super::BLOCK;
    use crate::quant::QK_K;

    /// [`super::block_sums`] with NEON, a block of 32 per step: [`pairs`] of byte products,
    /// summed across the register's lanes into i32, one register per 16-element half.
    pub fn block_sums(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
        // SAFETY: the build enables NEON (this module's cfg).
        unsafe { block_sums_neon(w, x, sub, sums) }
    }

    #[target_feature(enable = "neon")]
    fn block_sums_neon(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
        let blocks = sums.len() * sub / BLOCK;
        for b in 0..blocks {
            let at = b * BLOCK;
            let lo = vaddlvq_s16(pairs(load(w, at), load(x, at)));
            let hi = vaddlvq_s16(pairs(load(w, at + 16), load(x, at + 16)));
            if sub == BLOCK {
                sums[b] = lo + hi;
            } else {
                sums[2 * b] = lo;
                sums[2 * b + 1] = hi;
            }
        }
    }

    /// [`crate::model::cpu::products::RowDot`] for Q6_K rows, as `simd128::q6_k_dots` takes
    /// them (with NEON's byte shifts): each sub-block of 16 rebuilt from its nibbles and two high
    /// bits in one register (0..=63), its [`pairs`] of byte products multiplied by its scale and
    /// added into i32 lanes; the quants' -32 comes off once per super-block as
    /// `32 · Σ scale · (sum of the sub-block's inputs)`.
    pub fn q6_k_dots(row: &[u8], x: (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        // SAFETY: the build enables NEON (this module's cfg).
        unsafe { q6_k(row, x, scale, isums) }
    }

    /// [`crate::model::cpu::products::RowDot`] for Q4_K rows (144 bytes a super-block).
    pub fn q4_k_dots(row: &[u8], (x, _): (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        // SAFETY: the build enables NEON (this module's cfg).
        unsafe { q45_k::<144>(row, x, scale, isums) }
    }

    /// [`crate::model::cpu::products::RowDot`] for Q5_K rows (176 bytes a super-block).
    pub fn q5_k_dots(row: &[u8], (x, _): (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        // SAFETY: the build enables NEON (this module's cfg).
        unsafe { q45_k::<176>(row, x, scale, isums) }
    }

    #[target_feature(enable = "neon")]
    fn q6_k(row: &[u8], (x, xsum): (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        let (low, high) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30));
        let blocks = row.chunks_exact(210).zip(x.chunks_exact(QK_K));
        let by_block = scale.chunks_exact(16).zip(xsum.chunks_exact(16));
        for ((b, x), ((scale, xsum), isum)) in blocks.zip(by_block.zip(isums)) {
            let (b, x): (&[u8; 210], &[i8; QK_K]) = (as_array(b), as_array(x));
            let mut acc = vdupq_n_s32(0);
            // Each half of 128 elements: its eight sub-blocks as products.rs's q6_k_block
            // builds them. (Loads written out, not through `array::map`, whose closures are not
            // always inlined into the kernel.)
            for h in 0..2 {
                let (at, bits) = (64 * h, 128 + 32 * h);
                let l = [
                    load_bytes(b, at),
                    load_bytes(b, at + 16),
                    load_bytes(b, at + 32),
                    load_bytes(b, at + 48),
                ];
                let (h0, h1) = (load_bytes(b, bits), load_bytes(b, bits + 16));
                let subs = [
                    (l[0], vshlq_n_u8::<4>(h0)),
                    (l[1], vshlq_n_u8::<4>(h1)),
                    (l[2], vshlq_n_u8::<2>(h0)),
                    (l[3], vshlq_n_u8::<2>(h1)),
                    (vshrq_n_u8::<4>(l[0]), h0),
                    (vshrq_n_u8::<4>(l[1]), h1),
                    (vshrq_n_u8::<4>(l[2]), vshrq_n_u8::<2>(h0)),
                    (vshrq_n_u8::<4>(l[3]), vshrq_n_u8::<2>(h1)),
                ];
                for (g, (nibbles, bits)) in subs.into_iter().enumerate() {
                    let q = vorrq_u8(vandq_u8(nibbles, low), vandq_u8(bits, high));
                    let p = pairs(vreinterpretq_s8_u8(q), load(x, 128 * h + 16 * g));
                    acc = scaled(acc, p, scale[8 * h + g]);
                }
            }
            let offset: i32 = scale.iter().zip(xsum).map(|(s, x)| s * x).sum();
            *isum = vaddvq_s32(acc) - 32 * offset;
        }
    }

    /// Q4_K and Q5_K (`BYTES` a super-block: d, dmin, 12 bytes of scales, Q5_K's 32 bytes of
    /// fifth bits, 128 of nibbles), as `simd128::q45_k_dots` takes them: sub-blocks of 32 in
    /// pairs over the same 32 bytes, low nibbles then high; two [`pairs`] (four byte products,
    /// at most 31 · 127, to an i16 lane), multiplied by the scale and added into i32 lanes.
    #[target_feature(enable = "neon")]
    fn q45_k<const BYTES: usize>(row: &[u8], x: &[i8], scale: &[i32], isums: &mut [i32]) {
        let (low, fifth) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x10));
        let blocks = row.chunks_exact(BYTES).zip(x.chunks_exact(QK_K));
        for ((b, x), (scale, isum)) in blocks.zip(scale.chunks_exact(8).zip(isums)) {
            let (b, x): (&[u8; BYTES], &[i8; QK_K]) = (as_array(b), as_array(x));
            let mut acc = vdupq_n_s32(0);
            // Q5_K's fifth bits: bit `2j` of byte `l` for element `l` of sub-block `2j`, bit
            // `2j + 1` for sub-block `2j + 1`; shifted down two bits for each pair.
            let mut qh = [load_bytes(b, 16), load_bytes(b, 32)];
            for j in 0..4 {
                let at = BYTES - 128 + 32 * j;
                let q = [load_bytes(b, at), load_bytes(b, at + 16)];
                let mut lo = [vandq_u8(q[0], low), vandq_u8(q[1], low)];
                let mut hi = [vshrq_n_u8::<4>(q[0]), vshrq_n_u8::<4>(q[1])];
                if BYTES == 176 {
                    for k in 0..2 {
                        lo[k] = vorrq_u8(lo[k], vandq_u8(vshlq_n_u8::<4>(qh[k]), fifth));
                        hi[k] = vorrq_u8(hi[k], vandq_u8(vshlq_n_u8::<3>(qh[k]), fifth));
                        qh[k] = vshrq_n_u8::<2>(qh[k]);
                    }
                }
                for (half, q) in [lo, hi].into_iter().enumerate() {
                    let at = 64 * j + 32 * half;
                    let sums = vaddq_s16(
                        pairs(vreinterpretq_s8_u8(q[0]), load(x, at)),
                        pairs(vreinterpretq_s8_u8(q[1]), load(x, at + 16)),
                    );
                    acc = scaled(acc, sums, scale[2 * j + half]);
                }
            }
            *isum = vaddvq_s32(acc);
        }
    }

    /// `acc` plus the i16 lanes of `v` times `scale` (a K-quant sub-block's, within i16),
    /// widened to i32.
    #[target_feature(enable = "neon")]
    fn scaled(acc: int32x4_t, v: int16x8_t, scale: i32) -> int32x4_t {
        let s = scale as i16;
        vmlal_high_n_s16(vmlal_n_s16(acc, vget_low_s16(v), s), v, s)
    }

    /// The products of `a`'s and `b`'s bytes widened to i16, each added to the product eight
    /// lanes on (`smull`, `smlal2`): two products of at most 128 * 127 fit in i16. (The 8-bit
    /// dot product, `sdot`, is not stable in Rust.)
    #[target_feature(enable = "neon")]
    fn pairs(a: int8x16_t, b: int8x16_t) -> int16x8_t {
        vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b)
    }

    /// The 16 values at `v[at..]`.
    #[target_feature(enable = "neon")]
    fn load(v: &[i8], at: usize) -> int8x16_t {
        let v: &[i8; 16] = v[at..at + 16].try_into().expect("16 values");
        // SAFETY: `v` is 16 readable values; NEON's loads take any alignment.
        unsafe { vld1q_s8(v.as_ptr()) }
    }

    /// The 16 bytes at `b[at..]`.
    #[target_feature(enable = "neon")]
    fn load_bytes(b: &[u8], at: usize) -> uint8x16_t {
        let b: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
        // SAFETY: `b` is 16 readable bytes; NEON's loads take any alignment.
        unsafe { vld1q_u8(b.as_ptr()) }
    }

    /// A chunk of known length as an array, so that loads at constant offsets need no checks.
    fn as_array<T, const N: usize>(b: &[T]) -> &[T; N] {
        b.try_into().expect("a whole chunk")
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod simd128 {
    use core::arch::wasm32::*;

    use super::BLOCK;
    use crate::quant::QK_K;

    /// [`super::block_sums`] with 128-bit registers, a block of 32 per step: byte products
    /// widened to i16 (at most 128 * 128), added pairwise into i32 lanes, one register per
    /// 16-element half; the lanes are then summed with shuffles, both halves at once.
    pub fn block_sums(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
        let (w, x): (&[u8], &[u8]) = (bytemuck::cast_slice(w), bytemuck::cast_slice(x));
        let blocks = sums.len() * sub / BLOCK;
        for b in 0..blocks {
            let half = |h: usize| {
                let at = b * BLOCK + h * 16;
                let (wv, xv) = (load(w, at), load(x, at));
                i32x4_add(
                    i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(wv, xv)),
                    i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(wv, xv)),
                )
            };
            let (lo, hi) = (half(0), half(1));
            // [lo0 + lo2, lo1 + lo3, hi0 + hi2, hi1 + hi3], then lanes 0 and 2 take their
            // neighbours: the two halves' sums.
            let pairs = i32x4_add(
                i32x4_shuffle::<0, 1, 4, 5>(lo, hi),
                i32x4_shuffle::<2, 3, 6, 7>(lo, hi),
            );
            let both = i32x4_add(pairs, i32x4_shuffle::<1, 0, 3, 2>(pairs, pairs));
            let (l, h) = (i32x4_extract_lane::<0>(both), i32x4_extract_lane::<2>(both));
            if sub == BLOCK {
                sums[b] = l + h;
            } else {
                sums[2 * b] = l;
                sums[2 * b + 1] = h;
            }
        }
    }

    /// [`crate::model::cpu::products::RowDot`] for Q6_K rows (210 bytes a super-block: ql[128],
    /// qh[64], scales[16], d): each sub-block of 16 rebuilt from its nibbles and two high bits
    /// in one register (0..=63), its byte products taken by [`pairs`] and multiplied by its
    /// scale as i16 pairs summed into i32 lanes; the quants' -32 comes off once per super-block
    /// as `32 · Σ scale · (sum of the sub-block's inputs)`.
    pub fn q6_k_dots(row: &[u8], (x, xsum): (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        let x: &[u8] = bytemuck::cast_slice(x);
        let (low, high) = (u8x16_splat(0x0F), u8x16_splat(0x30));
        let blocks = row.chunks_exact(210).zip(x.chunks_exact(QK_K));
        let by_block = scale.chunks_exact(16).zip(xsum.chunks_exact(16));
        for ((b, x), ((scale, xsum), isum)) in blocks.zip(by_block.zip(isums)) {
            let (b, x): (&[u8; 210], &[u8; QK_K]) = (as_array(b), as_array(x));
            let mut acc = i32x4_splat(0);
            // Each half of 128 elements: its eight sub-blocks as products.rs's q6_k_block
            // builds them. The shifts are 16-bit ones (bytes' own have no x86 instruction) and
            // the masks drop the bits that cross between bytes.
            for h in 0..2 {
                let l = [0, 16, 32, 48].map(|at| load(b, 64 * h + at));
                let [h0, h1] = [0, 16].map(|at| load(b, 128 + 32 * h + at));
                let subs = [
                    (l[0], i16x8_shl(h0, 4)),
                    (l[1], i16x8_shl(h1, 4)),
                    (l[2], i16x8_shl(h0, 2)),
                    (l[3], i16x8_shl(h1, 2)),
                    (u16x8_shr(l[0], 4), h0),
                    (u16x8_shr(l[1], 4), h1),
                    (u16x8_shr(l[2], 4), u16x8_shr(h0, 2)),
                    (u16x8_shr(l[3], 4), u16x8_shr(h1, 2)),
                ];
                for (g, (nibbles, bits)) in subs.into_iter().enumerate() {
                    let q = v128_or(v128_and(nibbles, low), v128_and(bits, high));
                    let s = i16x8_splat(scale[8 * h + g] as i16);
                    acc = i32x4_add(acc, i32x4_dot_i16x8(pairs(q, load(x, 128 * h + 16 * g)), s));
                }
            }
            let offset: i32 = scale.iter().zip(xsum).map(|(s, x)| s * x).sum();
            *isum = total(acc) - 32 * offset;
        }
    }

    /// [`crate::model::cpu::products::RowDot`] for Q4_K rows (144 bytes a super-block).
    pub fn q4_k_dots(row: &[u8], (x, _): (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        q45_k_dots::<144>(row, x, scale, isums);
    }

    /// [`crate::model::cpu::products::RowDot`] for Q5_K rows (176 bytes a super-block).
    pub fn q5_k_dots(row: &[u8], (x, _): (&[i8], &[i32]), scale: &[i32], isums: &mut [i32]) {
        q45_k_dots::<176>(row, x, scale, isums);
    }

    /// Q4_K and Q5_K (`BYTES` a super-block: d, dmin, 12 bytes of scales, Q5_K's 32 bytes of
    /// fifth bits, 128 of nibbles): sub-blocks of 32 in pairs over the same 32 bytes, low
    /// nibbles then high, as products.rs's q45_k_block builds them; two [`pairs`] (four byte
    /// products, at most 31 · 127, to an i16 lane), multiplied by the scale as i16 pairs summed
    /// into i32 lanes.
    fn q45_k_dots<const BYTES: usize>(row: &[u8], x: &[i8], scale: &[i32], isums: &mut [i32]) {
        let x: &[u8] = bytemuck::cast_slice(x);
        let (low, fifth) = (u8x16_splat(0x0F), u8x16_splat(0x10));
        let blocks = row.chunks_exact(BYTES).zip(x.chunks_exact(QK_K));
        for ((b, x), (scale, isum)) in blocks.zip(scale.chunks_exact(8).zip(isums)) {
            let (b, x): (&[u8; BYTES], &[u8; QK_K]) = (as_array(b), as_array(x));
            let mut acc = i32x4_splat(0);
            // Q5_K's fifth bits: bit `2j` of byte `l` for element `l` of sub-block `2j`, bit
            // `2j + 1` for sub-block `2j + 1`.
            let qh = [0, 16].map(|at| load(b, 16 + at));
            for j in 0..4 {
                let q = [0, 16].map(|at| load(b, BYTES - 128 + 32 * j + at));
                let mut lo = q.map(|q| v128_and(q, low));
                let mut hi = q.map(|q| v128_and(u16x8_shr(q, 4), low));
                if BYTES == 176 {
                    for k in 0..2 {
                        lo[k] = v128_or(lo[k], v128_and(to_bit_4(qh[k], 2 * j), fifth));
                        hi[k] = v128_or(hi[k], v128_and(to_bit_4(qh[k], 2 * j + 1), fifth));
                    }
                }
                for (half, q) in [lo, hi].into_iter().enumerate() {
                    let at = 64 * j + 32 * half;
                    let sums = i16x8_add(pairs(q[0], load(x, at)), pairs(q[1], load(x, at + 16)));
                    let s = i16x8_splat(scale[2 * j + half] as i16);
                    acc = i32x4_add(acc, i32x4_dot_i16x8(sums, s));
                }
            }
            *isum = total(acc);
        }
    }

    /// The products of `q`'s bytes (0..=63) and `x`'s (-127..=127) summed in twos into i16
    /// lanes (each sum under 2^14), which pairs of bytes go together depending on the build.
    /// With relaxed SIMD, its dot product (x86's `pmaddubsw`): `q` is the operand that must lie
    /// in 0..=127 for every engine to give the same sums.
    #[cfg(target_feature = "relaxed-simd")]
    fn pairs(q: v128, x: v128) -> v128 {
        i16x8_relaxed_dot_i8x16_i7x16(x, q)
    }

    /// Without relaxed SIMD: widened products of the low and of the high eight bytes, added.
    #[cfg(not(target_feature = "relaxed-simd"))]
    fn pairs(q: v128, x: v128) -> v128 {
        i16x8_add(i16x8_extmul_low_i8x16(q, x), i16x8_extmul_high_i8x16(q, x))
    }

    /// Bit `k` of each byte of `v` moved to bit 4, other bits anywhere.
    fn to_bit_4(v: v128, k: usize) -> v128 {
        match k {
            0..4 => i16x8_shl(v, 4 - k as u32),
            _ => u16x8_shr(v, k as u32 - 4),
        }
    }

    /// The sum of the four i32 lanes.
    fn total(v: v128) -> i32 {
        let v = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
        let v = i32x4_add(v, i32x4_shuffle::<1, 0, 3, 2>(v, v));
        i32x4_extract_lane::<0>(v)
    }

    /// A chunk of known length as an array, so that loads at constant offsets need no checks.
    fn as_array<const N: usize>(b: &[u8]) -> &[u8; N] {
        b.try_into().expect("a whole chunk")
    }

    /// The 16 bytes at `b[at..]`.
    fn load(b: &[u8], at: usize) -> v128 {
        let b: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
        // SAFETY: `b` is 16 readable bytes; v128_load takes any alignment.
        unsafe { v128_load(b.as_ptr().cast()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Extreme and random blocks, -128 among the weights: for sub-blocks of 16 and 32, the
    /// dispatched sums equal the plain loop's, and both equal sums taken in i64.
    #[test]
    fn every_version_gives_the_exact_sums() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let blocks = 37;
        let mut w: Vec<i8> = (0..blocks * BLOCK).map(|_| rng.random()).collect();
        let mut x: Vec<i8> = (0..blocks * BLOCK)
            .map(|_| rng.random_range(-127..=127))
            .collect();
        w[..BLOCK].fill(-128);
        x[..BLOCK].fill(-127);
        w[BLOCK..2 * BLOCK].fill(127);
        x[BLOCK..2 * BLOCK].fill(127);
        for sub in [16, BLOCK] {
            let want: Vec<i32> = w
                .chunks_exact(sub)
                .zip(x.chunks_exact(sub))
                .map(|(w, x)| {
                    w.iter()
                        .zip(x)
                        .map(|(&a, &b)| i64::from(a) * i64::from(b))
                        .sum::<i64>() as i32
                })
                .collect();
            assert_eq!(want[0], 128 * 127 * sub as i32);
            let mut plain = vec![0; want.len()];
            block_sums_scalar(&w, &x, sub, &mut plain);
            assert_eq!(plain, want);
            let mut fast = vec![0; want.len()];
            block_sums(&w, &x, sub, &mut fast);
            assert_eq!(fast, want);
        }
    }
}
