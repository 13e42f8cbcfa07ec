use super::*;
use crate::quant::dequantize;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use GgmlType::*;

/// The types written in blocks of more than one value.
fn block_types() -> impl Iterator<Item = GgmlType> {
    GgmlType::DECODED
        .into_iter()
        .filter(|t| t.block_size() > 1 && t.codec().is_some_and(|c| c.quantize.is_some()))
}

/// The K-quants, whose scales are searched for.
fn k_types() -> impl Iterator<Item = GgmlType> {
    block_types().filter(|t| t.block_size() == QK_K)
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize(ty, x).unwrap();
    let mut y = vec![0.0; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    y
}

fn rms(x: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = x.fold((0.0f64, 0usize), |(s, n), v| {
        (s + f64::from(v) * f64::from(v), n + 1)
    });
    (sum / n as f64).sqrt() as f32
}

/// RMS of the error relative to the RMS of the reference.
fn rel_rms(reference: &[f32], got: &[f32]) -> f32 {
    let err = rms(reference.iter().zip(got).map(|(a, b)| a - b));
    err / rms(reference.iter().copied())
}

/// Standard Gaussian samples (Box-Muller).
fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// Gaussian samples with a random scale per 256 elements, from 1e-3 to 10.
fn gaussian_rows(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = gaussian(&mut rng, n);
    for block in x.chunks_mut(QK_K) {
        let scale = 10f32.powf(rng.random_range(-3.0..1.0));
        block.iter_mut().for_each(|v| *v *= scale);
    }
    x
}

/// Upper bounds on the relative RMS error for Gaussian data, about 25% above what the
/// reference quantizers reach.
fn error_bound(ty: GgmlType) -> f32 {
    match ty {
        Q2_K => 0.38,
        Q3_K => 0.19,
        Q4_0 => 0.106,
        Q4_1 => 0.10,
        Q4_K => 0.09,
        Q5_0 => 0.054,
        Q5_1 => 0.046,
        Q5_K => 0.045,
        Q6_K => 0.0225,
        Q8_0 => 0.0067,
        _ => unreachable!(),
    }
}

#[test]
fn round_trip_error_is_bounded() {
    for seed in 1..4 {
        let x = gaussian_rows(seed, 64 * QK_K);
        for ty in block_types() {
            let err = rel_rms(&x, &round_trip(ty, &x));
            assert!(
                err < error_bound(ty),
                "{ty}, seed {seed}: relative RMS error {err}"
            );
        }
    }
}

/// Quantizing values that were just decoded finds the same grid again: exactly for the
/// 32-element types; the K-quants' scale searches may settle on a neighbouring scale.
#[test]
fn round_trip_of_decoded_values_is_stable() {
    let x = gaussian_rows(7, 64 * QK_K);
    for ty in block_types() {
        let once = round_trip(ty, &x);
        let twice = round_trip(ty, &once);
        if ty.block_size() == QK_K {
            let drift = rel_rms(&once, &twice);
            assert!(drift < error_bound(ty) / 2.0, "{ty}: drift {drift}");
        } else {
            assert!(
                once == twice,
                "{ty}: decoded values change when requantized"
            );
        }
    }
}

#[test]
fn zeros_stay_zero() {
    let x = vec![0.0; 2 * QK_K];
    for ty in block_types() {
        assert!(round_trip(ty, &x).iter().all(|&v| v == 0.0), "{ty}");
    }
    for ty in k_types() {
        assert!(
            quantize(ty, &x).unwrap().iter().all(|&b| b == 0),
            "{ty}: non-zero bytes"
        );
    }
}

/// Constants come back to within f16 precision of the scales. (Much smaller magnitudes make
/// the K-quants' super-block scale an f16 subnormal and lose more.)
#[test]
fn constants_are_kept() {
    for c in [0.7f32, -2.5, 0.3, -40.0] {
        let x = vec![c; QK_K];
        for ty in block_types() {
            for v in round_trip(ty, &x) {
                assert!((v - c).abs() <= 1e-3 * c.abs(), "{ty}: {c} became {v}");
            }
        }
    }
}

/// Super-blocks are independent: ones whose scales differ by five decades each keep their
/// relative accuracy.
#[test]
fn blocks_of_very_different_scales() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut x = gaussian(&mut rng, 6 * QK_K);
    for (i, block) in x.chunks_exact_mut(QK_K).enumerate() {
        let scale = 10f32.powi(i as i32 - 2);
        block.iter_mut().for_each(|v| *v *= scale);
    }
    for ty in block_types() {
        let y = round_trip(ty, &x);
        for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact(QK_K)).enumerate() {
            let err = rel_rms(xb, yb);
            assert!(
                err < error_bound(ty),
                "{ty} block {i}: relative RMS error {err}"
            );
        }
    }
}

/// An outlier a hundred times the typical magnitude sets its block's scale, so it comes
/// back closely; the rest of the block stays finite and within the coarsest (2-bit) step.
#[test]
fn outliers() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut x = gaussian(&mut rng, 4 * QK_K);
    let at = |i: usize| 64 * i + 7;
    for (i, block) in x.chunks_exact_mut(QK_K).enumerate() {
        block[at(i)] = if i % 2 == 0 { 100.0 } else { -100.0 };
    }
    for ty in block_types() {
        let y = round_trip(ty, &x);
        for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact(QK_K)).enumerate() {
            let (want, got) = (xb[at(i)], yb[at(i)]);
            assert!(
                (got - want).abs() < 0.02 * 100.0,
                "{ty} block {i}: {want} became {got}"
            );
            let worst = xb
                .iter()
                .zip(yb)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst.is_finite() && worst < 100.0 / 3.0,
                "{ty} block {i}: error {worst}"
            );
        }
    }
}

#[test]
fn partial_blocks_and_unsupported_types_are_rejected() {
    for (ty, n) in [(Q4_K, 255), (Q6_K, 257), (Q2_K, 100), (Q8_0, 33), (Q4_0, 1)] {
        let block = ty.block_size();
        let want = Err(QuantError::PartialBlock {
            ty,
            elements: n,
            block,
        });
        assert_eq!(quantize(ty, &vec![1.0; n]), want);
    }
    assert_eq!(
        quantize(Q8_K, &[0.0; QK_K]),
        Err(QuantError::UnsupportedQuant(Q8_K))
    );
    assert_eq!(quantize(Q4_K, &[]), Ok(Vec::new()));
}

#[test]
fn nearest_int_rounds_half_to_even() {
    let cases = [
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (-0.5, 0),
        (-1.5, -2),
        (2.49, 2),
        (-7.51, -8),
    ];
    for (v, want) in cases {
        assert_eq!(nearest_int(v), want, "{v}");
    }
}

#[test]
fn bf16_rounds_to_nearest_even_and_keeps_nan() {
    assert_eq!(f32_to_bf16(1.0), 0x3F80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie, even stays
    assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie, odd rounds up
    assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0); // signalling NaN, quietened
}
