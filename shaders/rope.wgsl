// Optional per-head RMS norm (Qwen3's Q/K norm) followed by rotary embedding, in place on the
// heads of the step.count positions from step.pos (a decode step's one, or a prompt chunk's
// bound to its first step); one workgroup per head and token. The cos/sin table is computed on
// the CPU in f64 at load, the same values the reference uses, so rope scaling (linear, Llama 3
// frequency divisors) costs nothing here and no precision is lost to GPU sin/cos at large
// angles.
// Token t's heads start at slot * R.pos_stride + (step.row + t) * R.row_stride, where slot is
// its position step.pos + t (or that % R.pos_ring in a sliding window's ring): K is roped where
// it lies in the KV cache, Q in its row of the prompt chunk.
// Needs common.wgsl.

struct Rope {
    head_dim: u32,
    rope_dim: u32,
    neox: u32,       // pairs (i, i + rope_dim/2); else adjacent pairs (2i, 2i+1)
    has_norm: u32,
    eps: f32,
    pos_stride: u32,
    row_stride: u32,
    pos_ring: u32,
}

@group(1) @binding(0) var<uniform> R: Rope;
@group(1) @binding(1) var<storage, read_write> data: array<f32>;
@group(1) @binding(2) var<storage, read> norm: array<f32>;
@group(1) @binding(3) var<storage, read> table: array<vec2<f32>>;

var<workgroup> sums: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let t = wg.y;
    if (t >= step.count) {
        return;
    }
    let pos = step.pos + t;
    let slot = select(pos, pos % R.pos_ring, R.pos_ring != 0u);
    let base = slot * R.pos_stride + (step.row + t) * R.row_stride + wg.x * R.head_dim;
    var s = 0.0;
    for (var i = li; i < R.head_dim; i += 64u) {
        let v = data[base + i];
        s += v * v;
    }
    sums[li] = s;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
        if (li < k) {
            sums[li] += sums[li + k];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(sums[0] / f32(R.head_dim) + R.eps);

    let half = R.rope_dim / 2u;
    for (var i = li; i < half; i += 64u) {
        var a = 2u * i;
        var b = 2u * i + 1u;
        if (R.neox != 0u) {
            a = i;
            b = i + half;
        }
        var x0 = data[base + a];
        var x1 = data[base + b];
        if (R.has_norm != 0u) {
            x0 = x0 * scale * norm[a];
            x1 = x1 * scale * norm[b];
        }
        let cs = table[pos * half + i];
        data[base + a] = x0 * cs.x - x1 * cs.y;
        data[base + b] = x0 * cs.y + x1 * cs.x;
    }
    if (R.has_norm != 0u) {
        for (var i = R.rope_dim + li; i < R.head_dim; i += 64u) {
            data[base + i] = data[base + i] * scale * norm[i];
        }
    }
}
