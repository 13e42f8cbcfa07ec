//! Each kernel against the CPU reference's operations, as one table of operation x block format
//! x shape (in the manner of llama.cpp's `test-backend-ops`), over shapes that are not
//! multiples of the block, unit or workgroup sizes: f32 results within 1e-4 of the reference's
//! largest magnitude. The selection kernels (argmax, top list), whose results are exact, and the
//! split-buffer path, which needs a device of its own, have tests of their own.

#[path = "../common/mod.rs"]
mod common;
mod layers;
mod products;
mod select;

use hearth_core::model::{DeltaNet, RopeStyle};
use hearth_core::quant::GgmlType;
use hearth_gpu::kernels::{self, Kernels, Step, Steps};
use hearth_gpu::{Gpu, GpuOptions};

const TOLERANCE: f32 = 1e-4;

/// What a check found wrong, with its case's label.
type Checked = Result<(), String>;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `got` within [`TOLERANCE`] of `want`'s largest magnitude.
fn close(label: &str, got: &[f32], want: &[f32]) -> Checked {
    if got.len() != want.len() {
        return Err(format!(
            "{label}: {} values, want {}",
            got.len(),
            want.len()
        ));
    }
    let scale = hearth_fixtures::max_abs(want).max(1e-6);
    let worst = hearth_fixtures::max_abs_diff(got, want);
    if worst <= TOLERANCE * scale {
        Ok(())
    } else {
        Err(format!(
            "{label}: max |diff| {worst:e} over max |value| {scale:e}"
        ))
    }
}

struct Bench {
    gpu: Gpu,
    k: Kernels,
    steps: Steps,
}

impl Bench {
    fn new(options: &GpuOptions) -> Option<Self> {
        let gpu = common::gpu(options)?;
        let k = Kernels::new(&gpu);
        let steps = Steps::new(&gpu, &k, 1);
        Some(Bench { gpu, k, steps })
    }

    fn run(&self, step: Step, launches: &[kernels::Dispatch]) {
        self.steps.write(&self.gpu, &[step]);
        kernels::submit(&self.gpu, &self.steps, launches);
    }

    fn read(&self, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
        pollster::block_on(self.gpu.read_f32(b, n)).unwrap()
    }
}

/// A decode step at `pos`; a chunk of `count` tokens from `pos` when `count` > 1.
fn step(pos: u32, count: u32) -> Step {
    Step {
        pos,
        token: 0,
        row: 0,
        count,
    }
}

/// One operation of the table, with the shape it runs over.
#[derive(Clone, Debug)]
enum Op {
    /// A decode step's product, `cols` wide: stored with a bias, added, SiLU-gated, and written
    /// at a KV cache position; in each of the thread [`layouts`].
    Matvec {
        cols: usize,
    },
    /// A prompt chunk's product, `cols` wide, over 13 tokens: into rows and into a KV cache; in
    /// each of the thread [`layouts`].
    Matmul {
        cols: usize,
    },
    /// Embedding rows.
    Embed,
    RmsNorm,
    /// Rope of either style over part of each head, with or without a per-head norm first;
    /// with no style (a layer without rope) the norm alone.
    Rope {
        style: Option<RopeStyle>,
        head_norm: bool,
    },
    /// Grouped-query attention over a cache: decode steps across tiles, and a chunk; with a
    /// window, over a ring.
    Attention {
        head_dim: usize,
        head_dim_v: usize,
        window: Option<usize>,
    },
    /// Convolution, delta rule and gated norm over runs of tokens (a run of one is a decode
    /// step, longer ones prompt chunks) from a state that is not zero.
    DeltaNet {
        d: DeltaNet,
        runs: &'static [usize],
    },
}

/// A row of the table: an operation over weights (or values, for operations without weights)
/// of a block format.
struct Case {
    op: Op,
    ty: GgmlType,
}

impl Case {
    fn label(&self) -> String {
        format!("{:?} over {}", self.op, self.ty)
    }

    fn check(&self, b: &Bench) -> Checked {
        let label = self.label();
        match &self.op {
            Op::Matvec { cols } => layouts(&b.gpu).iter().try_for_each(|(gpu, layout)| {
                products::matvec(b, gpu, self.ty, *cols, &format!("{label} {layout}"))
            }),
            Op::Matmul { cols } => layouts(&b.gpu).iter().try_for_each(|(gpu, layout)| {
                products::matmul(b, gpu, self.ty, *cols, &format!("{label} {layout}"))
            }),
            Op::Embed => products::embed(b, self.ty, &label),
            Op::RmsNorm => layers::rms_norm(b, &label),
            Op::Rope { style, head_norm } => layers::rope(b, *style, *head_norm, &label),
            Op::Attention {
                head_dim,
                head_dim_v,
                window,
            } => layers::attention(b, *head_dim, *head_dim_v, *window, &label),
            Op::DeltaNet { d, runs } => layers::delta_net(b, d, runs, &label),
        }
    }
}

/// The device with the matrix kernels' thread layouts of a GPU (up to 16 threads per row, one
/// row per thread), one thread per row taking 4 rows (with the test adapter's subgroups, a
/// subgroup shares each input load, as on a CPU device, which takes one row), and one with 2
/// threads per row and 3 rows per thread (in matvec and matmul alike), whatever the test
/// adapter is, each with its name; the first two also without the super-block path (the
/// 32-value units that the other formats take).
fn layouts(gpu: &Gpu) -> Vec<(Gpu, String)> {
    [
        (16, 1, true),
        (1, 4, true),
        (2, 3, true),
        (16, 1, false),
        (1, 4, false),
    ]
    .into_iter()
    .map(|(lanes, rows, super_blocks)| {
        let mut g = gpu.clone();
        g.paths.row_lanes = lanes;
        g.paths.rows_per_thread = rows;
        g.paths.prompt_rows_per_thread = rows;
        g.paths.super_blocks = super_blocks;
        let by = if super_blocks { "" } else { ", by units" };
        (
            g,
            format!("(up to {lanes} lanes, {rows} rows per thread{by})"),
        )
    })
    .collect()
}

/// Row widths that give the matrix kernels each of their lane counts (1, 4 and 16 threads per
/// row on the unit path; 1, 2, 4 and 8 on the super-block path, with more super-blocks than
/// threads) where the type's blocks allow it.
fn widths_for(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![45, 161, 613],
        32 => vec![32, 32 * 5, 32 * 19],
        _ => vec![256, 256 * 3, 256 * 5, 256 * 9],
    }
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ty in GgmlType::DECODED {
        for cols in widths_for(ty) {
            cases.push(Case {
                op: Op::Matvec { cols },
                ty,
            });
            cases.push(Case {
                op: Op::Matmul { cols },
                ty,
            });
        }
        cases.push(Case { op: Op::Embed, ty });
    }
    let f32 = |op| Case {
        op,
        ty: GgmlType::F32,
    };
    cases.push(f32(Op::RmsNorm));
    for style in [RopeStyle::Norm, RopeStyle::Neox] {
        for head_norm in [false, true] {
            cases.push(f32(Op::Rope {
                style: Some(style),
                head_norm,
            }));
        }
    }
    cases.push(f32(Op::Rope {
        style: None,
        head_norm: true,
    }));
    // Value heads of every width class the kernel compiles for: 12, 256 (Qwen3.5) and 300
    // (past 4 per thread); keys read by vec4s, and by scalars where 18 wide.
    for (head_dim, head_dim_v) in [(20, 12), (256, 256), (24, 300), (18, 12)] {
        cases.push(f32(Op::Attention {
            head_dim,
            head_dim_v,
            window: None,
        }));
    }
    // Sliding windows shorter than a tile and longer than one.
    for window in [20, 70] {
        cases.push(f32(Op::Attention {
            head_dim: 20,
            head_dim_v: 12,
            window: Some(window),
        }));
    }
    // Key and value heads of different widths and counts; sub-chunks of 16 rows, then of 8
    // (key heads of 256). 37 tokens are two whole sub-chunks of 16 and part of a third; the
    // last chunk continues from the state a decode step left.
    for (n_k, n_v, dk, dv) in [(2, 6, 24, 20), (2, 4, 128, 128), (1, 2, 256, 64)] {
        let d = DeltaNet {
            n_k_heads: n_k,
            n_v_heads: n_v,
            head_k_dim: dk,
            head_v_dim: dv,
            conv_kernel: 4,
        };
        cases.push(f32(Op::DeltaNet {
            d,
            runs: &[37, 1, 3],
        }));
    }
    cases
}

#[test]
fn every_op_against_the_reference() {
    let Some(b) = Bench::new(&GpuOptions::default()) else {
        return;
    };
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| case.check(&b).err())
        .collect();
    eprintln!("{} cases, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
