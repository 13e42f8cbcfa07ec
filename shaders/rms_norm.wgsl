// out = x * w / rms(x) over each row of N.n values, one workgroup per row: the chunk's
// `step.count` rows, or (with N.step_row) row `step.row` of x into row 0 of out, for the head
// after a prompt chunk. With N.centred, LayerNorm: x less its mean, scaled by w, plus the bias
// held after w (w[N.n + i]). With N.add, out += rather than = (a post-norm into the residual).
// Needs common.wgsl.

struct Norm {
    n: u32,
    eps: f32,
    step_row: u32,
    add: u32,
    centred: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> N: Norm;
@group(1) @binding(1) var<storage, read> x: array<f32>;
@group(1) @binding(2) var<storage, read> weight: array<f32>;
@group(1) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> sums: array<f32, 256>;

// The sum of every thread's `s`, given to all of them.
fn row_sum(li: u32, s: f32) -> f32 {
    sums[li] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if (li < k) {
            sums[li] += sums[li + k];
        }
        workgroupBarrier();
    }
    let total = sums[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    if (wg.x >= step.count) {
        return;
    }
    let base = wg.x * N.n;
    let src = select(base, step.row * N.n, N.step_row != 0u);
    var mean = 0.0;
    if (N.centred != 0u) {
        var s = 0.0;
        for (var i = li; i < N.n; i += 256u) {
            s += x[src + i];
        }
        mean = row_sum(li, s) / f32(N.n);
    }
    var s = 0.0;
    for (var i = li; i < N.n; i += 256u) {
        let v = x[src + i] - mean;
        s += v * v;
    }
    let scale = 1.0 / sqrt(row_sum(li, s) / f32(N.n) + N.eps);
    for (var i = li; i < N.n; i += 256u) {
        var v = (x[src + i] - mean) * scale * weight[i];
        if (N.centred != 0u) {
            v += weight[N.n + i];
        }
        out[base + i] = select(v, out[base + i] + v, N.add != 0u);
    }
}
