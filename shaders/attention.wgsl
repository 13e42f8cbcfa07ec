// Causal attention over the KV cache, flash-style: one workgroup per (query head, token of the
// chunk); token t of a chunk bound to its first step sits at position step.pos + t and sees
// positions 0..=step.pos + t, or under a sliding window of W the last W of them. Position p is
// in cache slot p % A.ring: a window's ring keeps W + a chunk's rows, so the keys a chunk's
// first row needs survive the chunk's own stores. Positions are taken a tile of TILE at a time with an online
// softmax (a running maximum and sum, the accumulator rescaled as the maximum grows), so no
// more than a tile of scores ever exists, in workgroup memory. Threads split a tile's positions
// for the scores and the value dimensions for the weighted sum, so V reads are coalesced.
// Grouped-query heads read their shared K/V head. The cache holds `KV` values, f32 or f16 (the
// loader defines the alias, and enables f16 for it); the loader also defines VPT, the value
// dimensions each thread accumulates, the bindings of q and kc, and `score(qb, kr)`, the dot
// product of the query at qb with the key at kr (by vec4s where head_dim is a multiple of 4).
// Needs common.wgsl.

struct Attn {
    n_head: u32,
    group: u32,      // query heads per key/value head
    head_dim: u32,
    head_dim_v: u32, // at most VPT * TILE
    k_dim: u32,      // floats per position in the K cache
    v_dim: u32,
    window: u32,     // 0: every position
    scale: f32,
    ring: u32,       // cache slots
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> A: Attn;
@group(1) @binding(3) var<storage, read> vc: array<KV>;
@group(1) @binding(4) var<storage, read_write> out: array<f32>;

const TILE: u32 = 64u;

var<workgroup> weights: array<f32, 64>;
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
    let t = wg.y;
    if (t >= step.count) {
        return;
    }
    let n = step.pos + t + 1u;
    var first = 0u;
    if (A.window != 0u && n > A.window) {
        first = n - A.window;
    }
    let qb = (t * A.n_head + h) * A.head_dim;
    let kb = (h / A.group) * A.head_dim;
    let vb = (h / A.group) * A.head_dim_v;

    var m = -3.4e38;
    var sum = 0.0;
    var acc: array<f32, VPT>;
    for (var start = first; start < n; start += TILE) {
        let p = start + li;
        var s = -3.4e38;
        if (p < n) {
            s = score(qb, (p % A.ring) * A.k_dim + kb) * A.scale;
        }
        let m_new = max(m, reduce_max(li, s));
        var e = 0.0;
        if (p < n) {
            e = exp(s - m_new);
        }
        weights[li] = e;
        // Rescales what was summed under the old maximum.
        let fix = exp(m - m_new);
        sum = sum * fix + reduce_sum(li, e);
        m = m_new;
        let count = min(TILE, n - start);
        for (var i = 0u; i < VPT; i++) {
            let d = li + i * TILE;
            if (d < A.head_dim_v) {
                var a = acc[i] * fix;
                for (var j = 0u; j < count; j++) {
                    a += weights[j] * f32(vc[((start + j) % A.ring) * A.v_dim + vb + d]);
                }
                acc[i] = a;
            }
        }
        // The next tile overwrites the weights.
        workgroupBarrier();
    }
    for (var i = 0u; i < VPT; i++) {
        let d = li + i * TILE;
        if (d < A.head_dim_v) {
            out[(t * A.n_head + h) * A.head_dim_v + d] = acc[i] / sum;
        }
    }
}
