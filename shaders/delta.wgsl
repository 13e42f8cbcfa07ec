// What the delta-net kernels share (delta_net.wgsl token by token, delta_prep.wgsl and
// delta_chunk.wgsl in chunks): one uniform block, one set of bindings, and the per-token gates.
// The loader defines DK and DV (a key and a value head's widths) and SUB (the rows of a
// sub-chunk of the chunked form). Needs common.wgsl.

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
// The chunked form's records, one per (row, value head): W (DK) | U (DV) | P (SUB) | G | q
// scale | k scale (see delta_prep.wgsl).
@group(1) @binding(8) var<storage, read_write> wy: array<f32>;

const L2_EPS: f32 = 1e-6;
const REC: u32 = DK + DV + SUB + 3u;
const REC_P: u32 = DK + DV;
const REC_G: u32 = DK + DV + SUB;

fn rec(t: u32, h: u32) -> u32 {
    return (t * D.n_v + h) * REC;
}

fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return log(1.0 + exp(x));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Column j of value head h's DK x DV state, which the delta-rule kernels keep in registers.
fn load_column(h: u32, j: u32) -> array<f32, DK> {
    var col: array<f32, DK>;
    for (var c = 0u; c < DK; c++) {
        col[c] = state[(h * DK + c) * DV + j];
    }
    return col;
}

fn store_column(h: u32, j: u32, col: array<f32, DK>) {
    for (var c = 0u; c < DK; c++) {
        state[(h * DK + c) * DV + j] = col[c];
    }
}

// Row t's key head hk (query and key) and value head h, as the convolution left them.
fn q_at(t: u32, hk: u32, i: u32) -> f32 {
    return qkv[t * D.conv_dim + hk * DK + i];
}

fn k_at(t: u32, hk: u32, i: u32) -> f32 {
    return qkv[t * D.conv_dim + D.key_dim + hk * DK + i];
}

fn v_at(t: u32, h: u32, j: u32) -> f32 {
    return qkv[t * D.conv_dim + 2u * D.key_dim + h * DV + j];
}

// The log of value head h's decay at row t: a * softplus(alpha + dt), a < 0.
fn log_decay(t: u32, h: u32) -> f32 {
    return params[D.n_v + h] * softplus(alpha[t * D.n_v + h] + params[h]);
}

fn beta_gate(t: u32, h: u32) -> f32 {
    return sigmoid(beta[t * D.n_v + h]);
}

// Column j of head h's output at row t, given o's inverse RMS r: r o norm[j] silu(z).
fn gated(o: f32, r: f32, t: u32, h: u32, j: u32) -> f32 {
    let zi = z[t * D.value_dim + h * DV + j];
    return o * r * params[2u * D.n_v + j] * zi * sigmoid(zi);
}
