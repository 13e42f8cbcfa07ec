// Attention for one position over the KV cache (positions 0..=step.pos), its query and output
// in row step.row of their buffers (a prompt chunk runs it once per token), one workgroup per
// query head; grouped-query heads read their shared K/V head. Scores go to a
// scratch row per head (the context can exceed workgroup memory); threads split positions for
// the scores and value dimensions for the weighted sum, so V reads are coalesced.
// Needs common.wgsl.

struct Attn {
    n_head: u32,
    group: u32,      // query heads per key/value head
    head_dim: u32,
    head_dim_v: u32,
    k_dim: u32,      // floats per position in the K cache
    v_dim: u32,
    max_ctx: u32,
    scale: f32,
}

@group(1) @binding(0) var<uniform> A: Attn;
@group(1) @binding(1) var<storage, read> q: array<f32>;
@group(1) @binding(2) var<storage, read> kc: array<f32>;
@group(1) @binding(3) var<storage, read> vc: array<f32>;
@group(1) @binding(4) var<storage, read_write> scores: array<f32>;
@group(1) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 64>;

fn reduce_max(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] = max(red[li], red[li + k]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let n = step.pos + 1u;
    let qb = (step.row * A.n_head + h) * A.head_dim;
    let kb = (h / A.group) * A.head_dim;
    let vb = (h / A.group) * A.head_dim_v;
    let sb = h * A.max_ctx;

    var m = -3.4e38;
    for (var p = li; p < n; p += 64u) {
        var s = 0.0;
        for (var d = 0u; d < A.head_dim; d++) {
            s += q[qb + d] * kc[p * A.k_dim + kb + d];
        }
        s *= A.scale;
        scores[sb + p] = s;
        m = max(m, s);
    }
    m = reduce_max(li, m);
    var sum = 0.0;
    for (var p = li; p < n; p += 64u) {
        let e = exp(scores[sb + p] - m);
        scores[sb + p] = e;
        sum += e;
    }
    sum = reduce_sum(li, sum);
    storageBarrier();
    for (var d = li; d < A.head_dim_v; d += 64u) {
        var acc = 0.0;
        for (var p = 0u; p < n; p++) {
            acc += scores[sb + p] * vc[p * A.v_dim + vb + d];
        }
        out[(step.row * A.n_head + h) * A.head_dim_v + d] = acc / sum;
    }
}
