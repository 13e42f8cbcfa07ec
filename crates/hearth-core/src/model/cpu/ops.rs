//! The reference operations, in f32, written for clarity. The CPU forward pass is built from
//! them, and the GPU kernel tests check each kernel against them.

use crate::model::spec::{DeltaNet, Rope, RopeStyle, ShortConv};

/// `x * w / rms(x)`, in place, as Hugging Face's `RMSNorm` computes it.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v = *v * scale * w;
    }
}

/// [`rms_norm`] over each row of `n` values.
pub fn rms_norm_rows(x: &mut [f32], n: usize, w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(n) {
        rms_norm(row, w, eps);
    }
}

/// LayerNorm, in place: `(x - mean) * w / sqrt(var + eps) + b`, as PyTorch's `LayerNorm`
/// (biased variance).
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let scale = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * scale * w + b;
    }
}

/// GELU, tanh approximation (ggml's `ggml_gelu`, Hugging Face's `gelu_new`, PyTorch's
/// `gelu(approximate="tanh")`).
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, linear above 20 as PyTorch's `softplus` is.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Rotates the first `rope.dim` dimensions of one head by the angles `cos_sin` of its
/// position (see [`Rope::cos_sin`]).
pub fn rope(head: &mut [f32], rope: &Rope, cos_sin: &[[f32; 2]]) {
    let half = rope.dim / 2;
    for (i, &[cos, sin]) in cos_sin.iter().enumerate() {
        let (a, b) = match rope.style {
            RopeStyle::Norm => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

/// The epsilon of the delta net's L2 norms (flash-linear-attention's `l2norm`).
pub const L2_EPS: f32 = 1e-6;

/// `x / sqrt(sum(x^2) + eps)`, in place.
pub fn l2_normalize(x: &mut [f32]) {
    let scale = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() + L2_EPS).sqrt();
    for v in x {
        *v *= scale;
    }
}

/// One step of a causal depthwise convolution, in place on `x` (one value per channel).
/// `weight` holds `kernel` taps per channel, the last for the current input;
/// `state` the previous `kernel - 1` inputs, oldest first, `x.len()` values each, and is
/// shifted to take `x`.
pub fn conv_step(state: &mut [f32], x: &mut [f32], weight: &[f32], kernel: usize) {
    let channels = x.len();
    for (c, xc) in x.iter_mut().enumerate() {
        let w = &weight[c * kernel..(c + 1) * kernel];
        let mut sum = w[kernel - 1] * *xc;
        for j in 0..kernel - 1 {
            sum += w[j] * state[j * channels + c];
        }
        for j in 0..kernel - 2 {
            state[j * channels + c] = state[(j + 1) * channels + c];
        }
        state[(kernel - 2) * channels + c] = *xc;
        *xc = sum;
    }
}

/// One step of the gated delta rule on a value head's state `s` (`k.len() x v.len()`, row i
/// for key dimension i): decay the state by `decay`, correct what it recalls for `k` towards
/// `v` with strength `beta`, and read it with `q` into `out`.
pub fn delta_step(s: &mut [f32], [q, k, v]: [&[f32]; 3], decay: f32, beta: f32, out: &mut [f32]) {
    let dv = v.len();
    for x in s.iter_mut() {
        *x *= decay;
    }
    for (j, o) in out.iter_mut().enumerate() {
        let recalled: f32 = k.iter().enumerate().map(|(i, ki)| s[i * dv + j] * ki).sum();
        let delta = (v[j] - recalled) * beta;
        let mut read = 0.0;
        for (i, ki) in k.iter().enumerate() {
            s[i * dv + j] += ki * delta;
            read += s[i * dv + j] * q[i];
        }
        *o = read;
    }
}

/// The gated RMS norm closing a delta-net head: `rms_norm(o) * w * silu(z)`, in place.
pub fn gated_norm(o: &mut [f32], z: &[f32], w: &[f32], eps: f32) {
    rms_norm(o, w, eps);
    for (v, z) in o.iter_mut().zip(z) {
        *v *= silu(*z);
    }
}

/// Causal softmax attention of one query head over `positions` cached keys and values, each
/// read at `key(p)` and `value(p)`; adds nothing, overwrites `out`.
pub fn attend<'a>(
    q: &[f32],
    positions: usize,
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    out: &mut [f32],
) {
    let mut scores: Vec<f32> = (0..positions).map(|p| dot(q, key(p)) * scale).collect();
    softmax(&mut scores);
    out.fill(0.0);
    for (p, &a) in scores.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(value(p)) {
            *o += a * v;
        }
    }
}

/// A delta-net layer's per-head tables: the convolution's taps (`kernel` per channel), `dt`
/// and `a` per value head, the gated norm's weight, and the norm's epsilon.
pub struct DeltaTables<'a> {
    pub conv: &'a [f32],
    pub dt: &'a [f32],
    pub a: &'a [f32],
    pub norm: &'a [f32],
    pub eps: f32,
}

/// The recurrent core of a delta-net layer for one token, between its input projections and
/// its output projection: the convolution and SiLU (in place on `qkv`), L2-normalised q and k, the
/// gated delta rule on every value head (value head h reads key head `h % n_k_heads`), and
/// the gated norm, into `out`. `state` is (convolution, delta rule).
pub fn delta_net_token(
    d: &DeltaNet,
    t: &DeltaTables,
    (conv, delta): (&mut [f32], &mut [f32]),
    qkv: &mut [f32],
    [z, beta, alpha]: [&[f32]; 3],
    out: &mut [f32],
) {
    let (kd, dk, dv) = (d.key_dim(), d.head_k_dim, d.head_v_dim);
    conv_step(conv, qkv, t.conv, d.conv_kernel);
    qkv.iter_mut().for_each(|v| *v = silu(*v));
    let (q, rest) = qkv.split_at_mut(kd);
    let (k, v) = rest.split_at_mut(kd);
    for head in q.chunks_exact_mut(dk).chain(k.chunks_exact_mut(dk)) {
        l2_normalize(head);
    }
    let q_scale = 1.0 / (dk as f32).sqrt();
    q.iter_mut().for_each(|v| *v *= q_scale);
    for hv in 0..d.n_v_heads {
        let hk = hv % d.n_k_heads;
        let g = t.a[hv] * softplus(alpha[hv] + t.dt[hv]);
        let o = &mut out[hv * dv..(hv + 1) * dv];
        delta_step(
            &mut delta[hv * dk * dv..(hv + 1) * dk * dv],
            [
                &q[hk * dk..(hk + 1) * dk],
                &k[hk * dk..(hk + 1) * dk],
                &v[hv * dv..(hv + 1) * dv],
            ],
            g.exp(),
            sigmoid(beta[hv]),
            o,
        );
        gated_norm(o, &z[hv * dv..(hv + 1) * dv], t.norm, t.eps);
    }
}

/// The gated short convolution of one token (LFM2), between its input and output
/// projections: `bcx` holds `[B | C | x]`; `B * x` goes through the convolution, whose output
/// times `C` is written to `out`.
pub fn short_conv_token(
    c: &ShortConv,
    weight: &[f32],
    state: &mut [f32],
    bcx: &[f32],
    out: &mut [f32],
) {
    let n = c.channels;
    let (b, rest) = bcx.split_at(n);
    let (gate, x) = rest.split_at(n);
    for ((o, b), x) in out.iter_mut().zip(b).zip(x) {
        *o = b * x;
    }
    conv_step(state, out, weight, c.conv_kernel);
    for (o, g) in out.iter_mut().zip(gate) {
        *o *= g;
    }
}
