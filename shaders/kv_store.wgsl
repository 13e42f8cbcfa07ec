// The f16 KV cache path: the K (already roped) and V rows of a chunk's tokens, computed in f32,
// rounded into the cache at the tokens' slots (position p at p % S.ring). One thread per value of a row; workgroup y
// is the token. Needs common.wgsl; the loader puts `enable f16;` first.

struct Store {
    k_dim: u32,
    v_dim: u32,
    ring: u32, // slots in the cache
    _pad: u32,
}

@group(1) @binding(0) var<uniform> S: Store;
@group(1) @binding(1) var<storage, read> k_rows: array<f32>;
@group(1) @binding(2) var<storage, read> v_rows: array<f32>;
@group(1) @binding(3) var<storage, read_write> kc: array<f16>;
@group(1) @binding(4) var<storage, read_write> vc: array<f16>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let i = gid.x;
    if (t >= step.count) {
        return;
    }
    let p = (step.pos + t) % S.ring;
    if (i < S.k_dim) {
        kc[p * S.k_dim + i] = f16(k_rows[t * S.k_dim + i]);
    }
    if (i < S.v_dim) {
        vc[p * S.v_dim + i] = f16(v_rows[t * S.v_dim + i]);
    }
}
