// The TOP best (value, id) pairs of a list, best first: a higher value, then a lower id (as the
// CPU sampler orders them), so sampling reads back TOP pairs instead of the vocabulary. Each
// workgroup bitonic-sorts a chunk of CHUNK pairs in workgroup memory and writes its best TOP;
// the loader runs it again over those until one chunk is left. The first run reads the logits
// (ids are their indices), later ones the pairs: (bits of the value, id). With an output
// format's mask (a bit per token), the first run reads a token outside it as -inf.

struct TopParams {
    n: u32,
    from_logits: u32,
    // -inf: WGSL has no literal for it, and a constant expression may not produce one.
    neg_inf: f32,
    masked: u32,
}

@group(1) @binding(0) var<uniform> P: TopParams;
@group(1) @binding(1) var<storage, read> logits: array<f32>;
@group(1) @binding(2) var<storage, read> pairs_in: array<vec2<u32>>;
@group(1) @binding(3) var<storage, read_write> pairs_out: array<vec2<u32>>;
@group(1) @binding(4) var<storage, read> mask: array<u32>;

const CHUNK: u32 = 1024u;
const TOP: u32 = 64u;
const THREADS: u32 = 256u;

var<workgroup> vals: array<f32, 1024>;
var<workgroup> ids: array<u32, 1024>;

fn better(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    return av > bv || (av == bv && ai < bi);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let base = wg.x * CHUNK;
    for (var j = 0u; j < CHUNK / THREADS; j++) {
        let s = li + j * THREADS;
        let i = base + s;
        // Past the end: -inf with an id no token has, so it sorts after every real entry.
        var v = P.neg_inf;
        var id = 0xffffffffu;
        if (i < P.n) {
            if (P.from_logits != 0u) {
                v = logits[i];
                id = i;
                if (P.masked != 0u && ((mask[i / 32u] >> (i % 32u)) & 1u) == 0u) {
                    v = P.neg_inf;
                }
            } else {
                let p = pairs_in[i];
                v = bitcast<f32>(p.x);
                id = p.y;
            }
        }
        vals[s] = v;
        ids[s] = id;
    }
    workgroupBarrier();
    for (var size = 2u; size <= CHUNK; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var j = 0u; j < CHUNK / 2u / THREADS; j++) {
                let t = li + j * THREADS;
                let a = (t / stride) * 2u * stride + t % stride;
                let b = a + stride;
                // Blocks alternate best-first and best-last until the last merge, best-first.
                let best_first = (a & size) == 0u;
                let b_better = better(vals[b], ids[b], vals[a], ids[a]);
                if (b_better == best_first) {
                    let v = vals[a];
                    vals[a] = vals[b];
                    vals[b] = v;
                    let id = ids[a];
                    ids[a] = ids[b];
                    ids[b] = id;
                }
            }
            workgroupBarrier();
        }
    }
    if (li < TOP) {
        pairs_out[wg.x * TOP + li] = vec2<u32>(bitcast<u32>(vals[li]), ids[li]);
    }
}
