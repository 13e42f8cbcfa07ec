//! Kernel benchmarks: the matrix kernels of every block format, as a decode step runs them (the
//! matvec kernel, one token) and as a prompt chunk does (the matmul kernel, PROMPT tokens at
//! once), as weight bytes per second (for the prompt: the bytes a token-by-token run would read)
//! and that as a fraction of a plain copy kernel's bytes/s on the same device.
//!
//! `cargo bench -p hearth-gpu --bench kernels [-- ROWS COLS] [TYPE ...]` (default 4096 x 4096,
//! every type); add `--plain` for the plainest kernels. Each figure is the best of a few timed
//! submissions: on a shared machine the others are mostly the neighbours' noise.

use std::time::Instant;

use hearth_core::quant::{quantize, GgmlType};
use hearth_gpu::bench::CopyKernel;
use hearth_gpu::kernels::{self, Kernels, Output, Step, Steps};
use hearth_gpu::weights::GpuMatrix;
use hearth_gpu::{Gpu, GpuOptions};

/// Tokens of the prompt-sized runs: one submission's worth, as the model runs a prompt.
const PROMPT: usize = 64;
/// Decode steps per timed submission.
const DECODE_RUNS: usize = 32;
/// Timed submissions per figure, the fastest taken.
const TIMINGS: usize = 5;

fn values(n: usize) -> Vec<f32> {
    let mut s = 0x9e3779b97f4a7c15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Seconds for `runs` runs of `launches` (bound to the first step) in one submission, the
/// fastest of [`TIMINGS`].
fn time(gpu: &Gpu, steps: &Steps, launches: &[kernels::Dispatch], runs: usize) -> f64 {
    let record = || {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            steps.set(&mut pass, 0);
            for _ in 0..runs {
                for d in launches {
                    d.record(&mut pass);
                }
            }
        }
        encoder.finish()
    };
    // The first run pays for lazy compilation and is not timed.
    gpu.queue.submit([record()]);
    pollster::block_on(gpu.finish()).expect("the device failed");
    (0..TIMINGS)
        .map(|_| {
            let t = Instant::now();
            gpu.queue.submit([record()]);
            pollster::block_on(gpu.finish()).expect("the device failed");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let plain = args.iter().any(|a| a == "--plain");
    let dims: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let named: Vec<GgmlType> = GgmlType::DECODED
        .into_iter()
        .filter(|ty| args.iter().any(|a| a.eq_ignore_ascii_case(ty.name())))
        .collect();
    let types = if named.is_empty() {
        GgmlType::DECODED.to_vec()
    } else {
        named
    };
    let (rows, cols) = match dims[..] {
        [r, c] => (r, c),
        _ => (4096, 4096),
    };
    let gpu = match pollster::block_on(Gpu::new(&GpuOptions {
        plain,
        max_binding: None,
        ..Default::default()
    })) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no GPU to measure: {e}");
            return;
        }
    };
    println!("adapter: {}", gpu.describe());
    let kernels = Kernels::new(&gpu);
    // One step: the chunk of PROMPT tokens the matmul kernel reads (matvec reads row 0).
    let steps = Steps::new(&gpu, &kernels, 1);
    steps.write(
        &gpu,
        &[Step {
            pos: 0,
            token: 0,
            row: 0,
            count: PROMPT as u32,
        }],
    );

    let copy = CopyKernel::new(&gpu, 256 << 20);
    copy.submit(&gpu, 1);
    pollster::block_on(gpu.finish()).expect("the device failed");
    let t = Instant::now();
    copy.submit(&gpu, 8);
    pollster::block_on(gpu.finish()).expect("the device failed");
    let copy_bps = (copy.bytes_moved() * 8) as f64 / t.elapsed().as_secs_f64();
    println!("copy kernel: {:.2} GB/s (read + write)", copy_bps / 1e9);
    println!(
        "{rows} x {cols}; decode: matvec; prompt: matmul over {PROMPT} tokens; ratio = weight bytes per second / copy kernel's"
    );
    println!(
        "{:<6} {:>10} {:>12} {:>7} {:>14} {:>7}",
        "type", "MB", "decode GB/s", "ratio", "prompt GB/s", "ratio"
    );

    let x = kernels::storage_f32(&gpu, &values(PROMPT * cols));
    let y = kernels::scratch(&gpu, PROMPT * rows);
    let source = values(rows * cols);
    for ty in types {
        if cols % ty.block_size() != 0 {
            continue;
        }
        let data = quantize(ty, &source).expect("whole blocks");
        let m = GpuMatrix::upload(&gpu, ty.name(), ty, rows, cols, &data).expect("uploads");
        let matvec = kernels
            .product_launches(&gpu, &m, 1, &x, &y, None, Output::Store, (0, 0))
            .expect("launches");
        let matmul = kernels
            .product_launches(&gpu, &m, PROMPT, &x, &y, None, Output::Store, (0, 0))
            .expect("launches");
        let bytes = m.bytes() as f64;
        let decode = bytes * DECODE_RUNS as f64 / time(&gpu, &steps, &matvec, DECODE_RUNS);
        let prompt = bytes * PROMPT as f64 / time(&gpu, &steps, &matmul, 1);
        println!(
            "{:<6} {:>10.1} {:>12.2} {:>7.3} {:>14.2} {:>7.3}",
            ty.name(),
            bytes / 1e6,
            decode / 1e9,
            decode / copy_bps,
            prompt / 1e9,
            prompt / copy_bps
        );
    }
}
