// Index of the largest logit (the lowest index among equals; NaNs never win), so greedy
// decoding reads back four bytes instead of the vocabulary. With an output format's mask (a
// bit per token), only the tokens it allows compete.

struct ArgmaxParams {
    n: u32,
    masked: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> L: ArgmaxParams;
@group(1) @binding(1) var<storage, read> logits: array<f32>;
@group(1) @binding(2) var<storage, read_write> result: array<u32>;
@group(1) @binding(3) var<storage, read> mask: array<u32>;

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = li; i < L.n; i += 256u) {
        if (L.masked != 0u && ((mask[i / 32u] >> (i % 32u)) & 1u) == 0u) {
            continue;
        }
        let v = logits[i];
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
    best_v[li] = bv;
    best_i[li] = bi;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if (li < k) {
            let ov = best_v[li + k];
            let oi = best_i[li + k];
            if (ov > best_v[li] || (ov == best_v[li] && oi < best_i[li])) {
                best_v[li] = ov;
                best_i[li] = oi;
            }
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        result[0] = select(best_i[0], 0u, best_i[0] == 0xffffffffu);
    }
}
