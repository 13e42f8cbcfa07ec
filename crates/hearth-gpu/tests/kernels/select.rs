//! The selection kernels, whose results are exact: argmax (the first of equals, within a mask)
//! and the top list (a full sort's first pairs, within a mask).

use hearth_gpu::kernels;
use hearth_gpu::GpuOptions;

use super::{step, values, Bench};

#[test]
fn argmax_prefers_the_first_of_equals() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let mut v = values(70001, 9);
    v[40000] = 5.0;
    v[50000] = 5.0;
    v[3] = f32::NAN;
    let vb = kernels::storage_f32(&b.gpu, &v);
    let result = kernels::scratch(&b.gpu, 4);
    let mask = kernels::token_mask(&b.gpu, v.len());
    let argmax = |masked| {
        b.run(
            step(0, 1),
            &[b.k.argmax_launch(&b.gpu, v.len(), &vb, &result, (&mask, masked))],
        );
        b.read(&result, 1)[0].to_bits()
    };
    assert_eq!(argmax(false), 40000);
    // Within a mask: the best of the tokens it allows, as masking every value on the CPU.
    let allowed = |i: usize| i % 3 == 1 && i != 40000 && i != 50000;
    let words = mask_words(v.len(), allowed);
    b.gpu
        .queue
        .write_buffer(&mask, 0, bytemuck::cast_slice(&words));
    let want = (0..v.len())
        .filter(|&i| allowed(i))
        .min_by(|&a, &c| v[c].total_cmp(&v[a]).then(a.cmp(&c)))
        .unwrap();
    assert_eq!(argmax(true), want as u32);
}

/// Which tokens a mask allows.
type Allowed = fn(usize) -> bool;

/// A mask's words: bit `i % 32` of word `i / 32` set where `allowed(i)`.
fn mask_words(n: usize, allowed: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut words = vec![0u32; n.div_ceil(32)];
    for i in (0..n).filter(|&i| allowed(i)) {
        words[i / 32] |= 1 << (i % 32);
    }
    words
}

#[test]
fn top_pairs_equal_a_full_sort() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    // One chunk, fewer values than pairs kept, and several sort stages with ties and -inf.
    for n in [40, 1000, 3001, 151_936] {
        let mut v: Vec<f32> = values(n, n as u64)
            .iter()
            // + 0.0: no -0.0, which the GPU ranks equal to 0.0 and total_cmp below it.
            .map(|x| (x * 8.0).round() + 0.0)
            .collect();
        for i in (0..n).step_by(7) {
            v[i] = f32::NEG_INFINITY;
        }
        v[n / 2] = 100.0;
        let vb = kernels::storage_f32(&b.gpu, &v);
        let mask = kernels::token_mask(&b.gpu, n);
        let top = b.k.top_launches(&b.gpu, n, &vb, &mask);
        // No mask; a mask of every fifth token; one of fewer tokens than pairs kept, whose
        // list ends in masked tokens at -inf.
        let masks: [Option<Allowed>; 3] = [None, Some(|i| i % 5 == 2), Some(|i| i % 997 == 3)];
        for allowed in masks {
            if let Some(allowed) = allowed {
                let words = mask_words(n, allowed);
                b.gpu
                    .queue
                    .write_buffer(&mask, 0, bytemuck::cast_slice(&words));
            }
            let stages: Vec<_> = top.stages(allowed.is_some()).cloned().collect();
            b.run(step(0, 1), &stages);
            let got: Vec<(u32, f32)> = b
                .read(&top.result, 2 * kernels::TOP_K)
                .chunks(2)
                .map(|p| (p[1].to_bits(), p[0]))
                .take_while(|&(id, _)| (id as usize) < n)
                .collect();
            let mut want: Vec<(u32, f32)> = v
                .iter()
                .enumerate()
                .map(|(i, &x)| match allowed {
                    Some(allowed) if !allowed(i) => (i as u32, f32::NEG_INFINITY),
                    _ => (i as u32, x),
                })
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(kernels::TOP_K.min(n));
            assert_eq!(got, want, "n = {n}, masked: {}", allowed.is_some());
        }
    }
}
