//! The integer dot product under the CPU's fast products: 8-bit weights times 8-bit
//! activations, summed per sub-block of 16 or 32 elements into exact 32-bit integers. A plain
//! loop everywhere, AVX2 on x86_64 where the processor has it (checked at run time), and
//! WebAssembly's simd128 where the module is built with it (`-C target-feature=+simd128`). Every
//! version returns the same integers.

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

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    use super::BLOCK;

    /// [`super::block_sums`] with 128-bit registers, a block of 32 per step: byte products
    /// widened to i16 (at most 128 * 128), added pairwise into i32 lanes, one register per
    /// 16-element half; the lanes are then summed with shuffles, both halves at once.
    pub fn block_sums(w: &[i8], x: &[i8], sub: usize, sums: &mut [i32]) {
        let blocks = sums.len() * sub / BLOCK;
        for b in 0..blocks {
            let half = |h: usize| {
                let at = b * BLOCK + h * 16;
                let (wv, xv) = (load(&w[at..at + 16]), load(&x[at..at + 16]));
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

    fn load(b: &[i8]) -> v128 {
        let b: &[i8; 16] = b.try_into().expect("16 bytes");
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
