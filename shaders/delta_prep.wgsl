// The chunked (WY) form of the gated delta rule over a prompt chunk, part one: everything that
// does not depend on the state, in parallel over value heads (workgroup x) and sub-chunks of
// SUB rows (workgroup y). Within a sub-chunk that starts from state S, with G_i the cumulative
// log decay from its first row, b_i = sigmoid(beta_i) and q, k L2-normalised, the rows'
// deltas d_i = b_i (v_i - S_{i-1}^T k_i) solve
//   (I + L) d = b v - b exp(G) k S,   L[i][m] = b_i exp(G_i - G_m) k_i.k_m for m < i,
// so d = U - W S with U = (I + L)^-1 b v and W = (I + L)^-1 b exp(G) k, found by forward
// substitution, a thread per column. Also the decayed scores P[i][m] = exp(G_i - G_m) q_i.k_m
// (m <= i), G, and the rows' normalising scales: delta_chunk.wgsl reads them all.
// Needs delta.wgsl.

const THREADS: u32 = 64u;

var<workgroup> qn: array<f32, SUB>;
var<workgroup> kn: array<f32, SUB>;
var<workgroup> bs: array<f32, SUB>;
var<workgroup> gs: array<f32, SUB>;
var<workgroup> lower: array<f32, SUB * SUB>;

@compute @workgroup_size(THREADS)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let first = wg.y * SUB;
    if (first >= step.count) {
        return;
    }
    let n = min(SUB, step.count - first);
    let hk = h % D.n_k;
    for (var i = lid; i < n; i += THREADS) {
        let t = first + i;
        var qq = 0.0;
        var kk = 0.0;
        for (var c = 0u; c < DK; c++) {
            let q = q_at(t, hk, c);
            let k = k_at(t, hk, c);
            qq += q * q;
            kk += k * k;
        }
        qn[i] = D.q_scale / sqrt(qq + L2_EPS);
        kn[i] = 1.0 / sqrt(kk + L2_EPS);
        bs[i] = beta_gate(t, h);
        gs[i] = log_decay(t, h);
    }
    workgroupBarrier();
    if (lid == 0u) {
        for (var i = 1u; i < n; i++) {
            gs[i] += gs[i - 1u];
        }
    }
    workgroupBarrier();
    for (var e = lid; e < n * n; e += THREADS) {
        let i = e / n;
        let m = e % n;
        var p = 0.0;
        var l = 0.0;
        if (m <= i) {
            var qk = 0.0;
            var kk = 0.0;
            for (var c = 0u; c < DK; c++) {
                let k = k_at(first + m, hk, c);
                qk += q_at(first + i, hk, c) * k;
                kk += k_at(first + i, hk, c) * k;
            }
            let decay = exp(gs[i] - gs[m]);
            p = qn[i] * kn[m] * qk * decay;
            if (m < i) {
                l = bs[i] * kn[i] * kn[m] * kk * decay;
            }
        }
        lower[i * SUB + m] = l;
        wy[rec(first + i, h) + REC_P + m] = p;
    }
    workgroupBarrier();
    for (var c = lid; c < DK + DV; c += THREADS) {
        var y: array<f32, SUB>;
        for (var i = 0u; i < n; i++) {
            let t = first + i;
            var x: f32;
            if (c < DK) {
                x = bs[i] * exp(gs[i]) * kn[i] * k_at(t, hk, c);
            } else {
                x = bs[i] * v_at(t, h, c - DK);
            }
            for (var m = 0u; m < i; m++) {
                x -= lower[i * SUB + m] * y[m];
            }
            y[i] = x;
            wy[rec(t, h) + c] = x;
        }
    }
    for (var i = lid; i < n; i += THREADS) {
        let r = rec(first + i, h) + REC_G;
        wy[r] = gs[i];
        wy[r + 1u] = qn[i];
        wy[r + 2u] = kn[i];
    }
}
