// The gated delta rule and the gated RMS norm of a delta-net layer over the step.count rows of
// a prompt chunk (or one decode row): one workgroup per value head, one thread per column j of
// the head's DK x DV state, which the thread keeps in registers from the first token of the
// chunk to the last, so a chunk is one launch however long it is. Per token t:
//   q, k = L2-normalised key head (h % n_k) of the convolved row, q scaled by q_scale
//   S    = S * exp(a * softplus(alpha + dt));  S[:, j] += k * (v[j] - S[:, j].k) * sigmoid(beta)
//   o[j] = S[:, j].q;  out = rms_norm(o) * norm * silu(z)
// The loader defines DK and DV (DV <= 256, the workgroup size). Needs common.wgsl.

struct Delta {
    n_k: u32,
    n_v: u32,
    conv_dim: u32,
    key_dim: u32,
    value_dim: u32,
    eps: f32,
    q_scale: f32,
    _pad: u32,
}

@group(1) @binding(0) var<uniform> D: Delta;
// The convolved [q | k | v] rows.
@group(1) @binding(1) var<storage, read> qkv: array<f32>;
@group(1) @binding(2) var<storage, read> z: array<f32>;
@group(1) @binding(3) var<storage, read> beta: array<f32>;
@group(1) @binding(4) var<storage, read> alpha: array<f32>;
// [dt (n_v) | a (n_v) | norm (DV)]
@group(1) @binding(5) var<storage, read> params: array<f32>;
@group(1) @binding(6) var<storage, read_write> state: array<f32>;
@group(1) @binding(7) var<storage, read_write> out: array<f32>;

const L2_EPS: f32 = 1e-6;

var<workgroup> qs: array<f32, DK>;
var<workgroup> ks: array<f32, DK>;
var<workgroup> os: array<f32, DV>;

fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return log(1.0 + exp(x));
}

@compute @workgroup_size(DV)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let hk = h % D.n_k;
    let base = h * DK * DV;
    var col: array<f32, DK>;
    for (var i = 0u; i < DK; i++) {
        col[i] = state[base + i * DV + j];
    }
    let dt = params[h];
    let a = params[D.n_v + h];
    let w = params[2u * D.n_v + j];
    for (var t = 0u; t < step.count; t++) {
        let row = t * D.conv_dim;
        for (var i = j; i < DK; i += DV) {
            qs[i] = qkv[row + hk * DK + i];
            ks[i] = qkv[row + D.key_dim + hk * DK + i];
        }
        workgroupBarrier();
        var qq = 0.0;
        var kk = 0.0;
        for (var i = 0u; i < DK; i++) {
            qq += qs[i] * qs[i];
            kk += ks[i] * ks[i];
        }
        let qn = D.q_scale / sqrt(qq + L2_EPS);
        let kn = 1.0 / sqrt(kk + L2_EPS);
        let decay = exp(a * softplus(alpha[t * D.n_v + h] + dt));
        let b = 1.0 / (1.0 + exp(-beta[t * D.n_v + h]));
        let v = qkv[row + 2u * D.key_dim + h * DV + j];
        var recalled = 0.0;
        for (var i = 0u; i < DK; i++) {
            col[i] *= decay;
            recalled += col[i] * ks[i];
        }
        let delta = (v - recalled * kn) * b;
        var o = 0.0;
        for (var i = 0u; i < DK; i++) {
            col[i] += ks[i] * kn * delta;
            o += col[i] * qs[i];
        }
        o *= qn;
        os[j] = o;
        workgroupBarrier();
        var ss = 0.0;
        for (var i = 0u; i < DV; i++) {
            ss += os[i] * os[i];
        }
        let zi = z[t * D.value_dim + h * DV + j];
        let r = 1.0 / sqrt(ss / f32(DV) + D.eps);
        out[t * D.value_dim + h * DV + j] = o * r * w * zi / (1.0 + exp(-zi));
        // The next token overwrites qs, ks and os.
        workgroupBarrier();
    }
    for (var i = 0u; i < DK; i++) {
        state[base + i * DV + j] = col[i];
    }
}
